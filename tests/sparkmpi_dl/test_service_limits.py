"""Issue 9 items 6 and 7: what an unauthenticated peer can cost the job service, over raw sockets.

A flood of idle connections is bounded (the oldest waiting one is dropped, so a rank that
answers at once still joins); refusals are counted, kept in a bounded record and logged at a
limited rate; a hello with a non-ASCII MAC is refused like any wrong secret; the plain-PMI
refusal names an option that exists.
"""
import logging
import os
import socket

from sparkmpi_dl.pmi import JobService
from sparkmpi_dl.pmi.auth import Hello
from sparkmpi_dl.pmi.refusals import KEEP_REASONS, LOG_BURST, LOG_PERIOD_S, RefusalLog
from sparkmpi_dl.pmi.wire import format_v1, parse_v1

from .pmi_client import PmiClient


def _open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def _refusal_lines(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if "refused connection" in r.getMessage()]


# ---- item 7 ----------------------------------------------------------------------------------
def test_non_ascii_mac_is_refused_and_recorded():
    with JobService(2) as service:
        with socket.create_connection(service.address, timeout=10) as raw:
            raw.sendall(Hello(service.job_id, 0, 0, "pmi", "h").to_bytes())
            file = raw.makefile("rb")
            assert parse_v1(file.readline().decode()).cmd == "sparkmpi-challenge"
            raw.sendall("cmd=sparkmpi-auth mac=\u00e9t\u00e9\u2603\n".encode())
            reply = parse_v1(file.readline().decode())
        assert reply.cmd == "sparkmpi-refused"
        assert reply.require("reason") == "rank 0: wrong or missing job secret"
        assert list(service.refusals) == ["rank 0: wrong or missing job secret"]
        a, b = PmiClient.joined(service, 0), PmiClient.joined(service, 1)  # the job carries on
        assert a.call("get_appnum").require("rc") == b.call("get_appnum").require("rc") == "0"


def test_plain_pmi_refusal_names_an_option_that_exists():
    with JobService(1) as service, socket.create_connection(service.address, timeout=10) as raw:
        raw.sendall(format_v1("initack", {"pmiid": 0}))
        reason = parse_v1(raw.makefile("rb").readline().decode()).require("reason")
    assert "--allow-plain-pmi" not in reason
    assert "allow_plain_pmi=True" in reason and "not enabled" in reason


# ---- item 6 ----------------------------------------------------------------------------------
def test_a_flood_of_idle_connections_is_bounded_and_ranks_still_join():
    flood = 400
    with JobService(2) as service:
        cap = service.max_unauthenticated
        assert flood > 2 * cap
        before = _open_fds()
        idle = [socket.create_connection(service.address, timeout=30) for _ in range(flood)]
        # a rank that answers at once still joins; connections are accepted in order, so
        # once it is in, the service has taken in the whole flood
        a, b = PmiClient.joined(service, 0), PmiClient.joined(service, 1)
        held_by_service = _open_fds() - before - flood - 2
        assert held_by_service <= cap + 8, f"the service holds {held_by_service} connections"
        assert a.call("get_appnum").require("rc") == b.call("get_appnum").require("rc") == "0"
        # the oldest idle connections were closed at once, without waiting out the handshake timeout
        assert idle[0].recv(4096) == b""
        assert service.refusals.total >= flood - cap
        assert len(service.refusals) <= KEEP_REASONS
        assert "more than %d connections were waiting to authenticate" % cap in next(iter(service.refusals))
        for s in idle:
            s.close()


def test_refusals_are_counted_kept_bounded_and_logged_at_a_limited_rate(caplog):
    caplog.set_level(logging.WARNING, logger="sparkmpi_dl.pmi")
    attempts = 300
    with JobService(2) as service:
        for i in range(attempts):
            with socket.create_connection(service.address, timeout=30) as raw:
                raw.sendall(b"GET /%d HTTP/1.1\n" % i)
                assert b"sparkmpi-refused" in raw.recv(4096)
        total, kept = service.refusals.total, list(service.refusals)
        logged_while_running = len(_refusal_lines(caplog))
    assert total == attempts
    assert len(kept) == KEEP_REASONS and "GET /299" in kept[-1]
    # at most LOG_BURST lines per LOG_PERIOD_S (the flood above takes a few seconds)
    assert LOG_BURST <= logged_while_running < attempts / 2
    summaries = [r.getMessage() for r in caplog.records if "not logged" in r.getMessage()]
    assert summaries and f"({attempts} refused in all" in summaries[-1]


def test_refusal_log_windows_with_a_controlled_clock():
    now = [0.0]
    lines = []

    class Sink(logging.Logger):
        def warning(self, msg, *args, **kwargs):
            lines.append(msg % args)

    record = RefusalLog(Sink("t"), "job J", keep=3, burst=2, period_s=LOG_PERIOD_S, clock=lambda: now[0])
    for i in range(5):
        record.record(f"r{i}", ("127.0.0.1", 1000 + i))
    assert lines == ["job J: refused connection from ('127.0.0.1', 1000): r0",
                     "job J: refused connection from ('127.0.0.1', 1001): r1"]
    assert record.unlogged == 3 and record.total == 5 and list(record) == ["r2", "r3", "r4"]
    now[0] = LOG_PERIOD_S  # the next period: first the summary of the last one, then the line
    record.record("r5")
    assert lines[2:] == ["job J: 3 more refused connections not logged (5 refused in all; "
                         "the last 3 reasons are kept)", "job J: refused connection: r5"]
    record.flush()
    assert len(lines) == 4 and record.unlogged == 0
