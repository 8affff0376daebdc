"""The job service over real sockets: handshake, PMI-1/PMI-2 commands, failures, epochs."""
import json
import socket
import threading
import time

import pytest

from sparkmpi_dl.pmi import JobService, JoinRefused
from sparkmpi_dl.pmi.wire import MAX_MESSAGE_BYTES, format_v1, parse_v1

from .pmi_client import PmiClient


@pytest.fixture
def service():
    with JobService(2, start_timeout=30) as svc:
        yield svc


def _barrier(clients, cmd="barrier_in", v2=False):
    replies = [None] * len(clients)

    def enter(i, c):
        replies[i] = c.call2("kvs-fence") if v2 else c.call(cmd)

    threads = [threading.Thread(target=enter, args=(i, c)) for i, c in enumerate(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    return replies


def test_pmi1_sequence_as_mpich_sends_it(service):
    a, b = PmiClient.joined(service, 0), PmiClient.joined(service, 1)
    assert a.call("init", pmi_version=1, pmi_subversion=1).attrs == {
        "pmi_version": "1", "pmi_subversion": "1", "rc": "0"}
    maxes = a.call("get_maxes")
    assert maxes.cmd == "maxes" and int(maxes.require("vallen_max")) >= 1024
    assert a.call("get_appnum").require("appnum") == "0"
    assert a.call("get_universe_size").require("size") == "2"
    kvs = a.call("get_my_kvsname").require("kvsname")
    assert kvs.startswith(service.job_id)
    assert a.call("get", kvsname=kvs, key="PMI_process_mapping").require("value") == "(vector,(0,1,2))"
    assert a.call("put", kvsname=kvs, key="hostname[0]", value="hostA").require("rc") == "0"
    assert [r.cmd for r in _barrier([a, b])] == ["barrier_out", "barrier_out"]
    got = b.call("get", kvsname=kvs, key="hostname[0]")
    assert got.cmd == "get_result" and got.require("value") == "hostA"
    missing = b.call("get", kvsname=kvs, key="nope")
    assert missing.require("rc") != "0"
    assert a.call("finalize").cmd == "finalize_ack"


def test_process_mapping_groups_ranks_by_real_host(service):
    a = PmiClient.joined(service, 0, host="node1")
    b = PmiClient.joined(service, 1, host="node2")
    assert b.sock.fileno() >= 0
    assert a.call("get", key="PMI_process_mapping").require("value") == "(vector,(0,2,1))"


def test_pmi2_sequence_with_thread_ids(service):
    clients = [PmiClient.joined(service, r) for r in range(2)]
    for rank, c in enumerate(clients):
        assert c.call("init", pmi_version=2, pmi_subversion=0).require("pmi_version") == "2"
        full = c.call2("fullinit", pmirank=rank)
        assert full.cmd == "fullinit-response" and full.require("rank") == str(rank)
        assert full.require("size") == "2"
    a, b = clients
    put = a.call2("kvs-put", key="bc-0", value="addr0", thrid="0x1234")
    assert put.cmd == "kvs-put-response" and put.require("thrid") == "0x1234"
    assert [r.cmd for r in _barrier(clients, v2=True)] == ["kvs-fence-response"] * 2
    got = b.call2("kvs-get", jobid=a.call2("job-getid").require("jobid"), srcid=0, key="bc-0")
    assert got.require("found") == "TRUE" and got.require("value") == "addr0"
    assert b.call2("kvs-get", key="absent").require("found") == "FALSE"
    mapping = a.call2("info-getjobattr", key="PMI_process_mapping")
    assert mapping.require("value") == "(vector,(0,1,2))"
    assert a.call2("info-putnodeattr", key="shm", value="seg1").require("rc") == "0"
    assert b.call2("info-getnodeattr", key="shm", wait="TRUE").require("value") == "seg1"
    assert a.call2("finalize").cmd == "finalize-response"


def test_name_service_publish_lookup_unpublish(service):
    a, b = PmiClient.joined(service, 0), PmiClient.joined(service, 1)
    assert a.call("publish_name", service="ocean", port="tag#0$port#1").require("rc") == "0"
    assert a.call("publish_name", service="ocean", port="x").require("rc") != "0"
    assert b.call("lookup_name", service="ocean").require("port") == "tag#0$port#1"
    assert b.call("unpublish_name", service="ocean").require("rc") == "0"
    assert b.call("lookup_name", service="ocean").require("rc") != "0"
    assert b.call("unpublish_name", service="ocean").require("rc") != "0"


def test_unknown_command_and_garbage_get_error_replies_not_silence(service):
    a = PmiClient.joined(service, 0)
    reply = a.call("frobnicate", x=1)
    assert reply.require("rc") != "0" and "frobnicate" in reply.require("msg")
    a.send_raw(b"this is not pmi\n")
    assert "malformed" in a.read().require("msg")
    assert a.call("get_appnum").require("appnum") == "0"  # the session carries on


def test_spawn_is_answered_not_supported(service):
    a = PmiClient.joined(service, 0)
    a.send_raw(b"mcmd=spawn\nnprocs=2\nexecname=./a.out\nendcmd\n")
    reply = a.read()
    assert reply.cmd == "spawn_result" and "not supported" in reply.require("msg")


def test_wrong_secret_is_refused_while_others_carry_on(service):
    with pytest.raises(JoinRefused, match="wrong or missing job secret"):
        PmiClient.joined(service, 0, secret="0" * 64)
    assert any("secret" in r for r in service.refusals)
    a, b = PmiClient.joined(service, 0), PmiClient.joined(service, 1)
    assert [r.cmd for r in _barrier([a, b])] == ["barrier_out", "barrier_out"]


def test_duplicate_and_unknown_ranks_are_refused(service):
    PmiClient.joined(service, 0)
    with pytest.raises(JoinRefused, match="already joined"):
        PmiClient.joined(service, 0)
    with pytest.raises(JoinRefused, match="outside 0..1"):
        PmiClient.joined(service, 5)


def test_garbage_handshake_and_oversized_line_are_refused(service):
    with socket.create_connection(service.address, timeout=10) as raw:
        raw.sendall(b"GET / HTTP/1.1\n")
        assert b"sparkmpi-refused" in raw.recv(4096)
    a, b = PmiClient.joined(service, 0), PmiClient.joined(service, 1)
    a.send_raw(b"cmd=put key=k value=" + b"x" * (MAX_MESSAGE_BYTES * 3) + b"\n")
    assert "longer than" in a.read().require("msg")
    assert any("longer than" in r for r in service.refusals)
    assert a.call("get_appnum").require("rc") == "0"  # the rest of that line was skipped
    assert b.call("get_appnum").require("rc") == "0"  # and the other ranks carry on
    assert service.failure_of() is None


def test_plain_pmi_port_clients_need_the_opt_in(service):
    with socket.create_connection(service.address, timeout=10) as raw:
        raw.sendall(format_v1("initack", {"pmiid": 0}))
        assert "not enabled" in parse_v1(raw.recv(4096).decode()).require("reason")
    with JobService(1, allow_plain_pmi=True) as plain:
        c = PmiClient(socket.create_connection(plain.address, timeout=10))
        assert c.call("initack", pmiid=0).cmd == "initack"
        assert {c.read().cmd for _ in range(3)} == {"set"}
        assert c.call("init", pmi_version=1, pmi_subversion=1).require("rc") == "0"


def test_wildcard_bind_needs_explicit_permission():
    with pytest.raises(ValueError, match="all interfaces"):
        JobService(2, host="0.0.0.0")


def _ctl(service, rank, host, epoch=0):
    c = PmiClient.joined(service, rank, role="ctl", host=host, epoch=epoch)
    return c


def _event(client):
    return json.loads(client.file.readline())


def test_environment_is_sent_once_every_rank_joined():
    with JobService(3) as svc:
        ctls = [_ctl(svc, r, h) for r, h in enumerate(["n1", "n2", "n1"])]
        envs = [_event(c)["env"] for c in ctls]
    assert [e["PMI_RANK"] for e in envs] == ["0", "1", "2"]
    assert {e["PMI_SIZE"] for e in envs} == {"3"}
    assert [(e["SPARKMPI_LOCAL_RANK"], e["SPARKMPI_LOCAL_SIZE"]) for e in envs] == [
        ("0", "2"), ("0", "1"), ("1", "2")]
    assert envs[1]["PMIX_RANK"] == "1"


def test_abort_fails_the_job_and_orders_the_others_killed(service):
    ctl0, ctl1 = _ctl(service, 0, "h"), _ctl(service, 1, "h")
    _event(ctl0), _event(ctl1)
    pmi1 = PmiClient.joined(service, 1)
    pmi1.send_raw(format_v1("abort", {"exitcode": 4, "message": "diverged at frame 9"}))
    kill = _event(ctl0)
    assert kill["t"] == "kill" and "diverged at frame 9" in kill["reason"]
    failure = service.wait(5).failure
    assert failure.rank == 1 and failure.exit_code == 4


def test_rank_exit_code_and_stderr_reach_the_failure():
    with JobService(2) as svc:
        ctl0, ctl1 = _ctl(svc, 0, "h"), _ctl(svc, 1, "h")
        _event(ctl0), _event(ctl1)
        ctl1.send_raw(b'{"t": "out", "stream": "stderr", "line": "ValueError: bad frame"}\n')
        ctl1.send_raw(b'{"t": "exit", "code": 3}\n')
        assert _event(ctl0)["t"] == "kill"
        failure = svc.wait(5).failure
    assert failure.rank == 1 and failure.exit_code == 3
    assert "ValueError: bad frame" in failure.describe()


def test_lost_task_fails_the_epoch():
    with JobService(2) as svc:
        ctl0, ctl1 = _ctl(svc, 0, "h"), _ctl(svc, 1, "h")
        _event(ctl0), _event(ctl1)
        ctl1.close()
        assert _event(ctl0)["t"] == "kill"
        assert "lost contact" in svc.wait(5).failure.reason


def test_missing_rank_fails_after_start_timeout():
    with JobService(2, start_timeout=1) as svc:
        ctl0 = _ctl(svc, 0, "h")
        start = time.monotonic()
        assert _event(ctl0)["t"] == "kill"
        assert time.monotonic() - start < 5
        failure = svc.wait(5).failure
    assert "did not join within 1 s" in failure.reason and "missing ranks [1]" in failure.reason


def test_a_new_epoch_starts_with_a_clean_kvs_and_stale_epochs_are_refused(service):
    a = PmiClient.joined(service, 0, epoch=1)
    a.call("put", key="k", value="old")
    b = PmiClient.joined(service, 0, epoch=2)
    assert b.call("get", key="k").require("rc") != "0"
    with pytest.raises(JoinRefused, match="stale epoch"):
        PmiClient.joined(service, 1, epoch=1)


def test_port_is_closed_once_the_job_is_over():
    with JobService(2) as svc:
        ctl0, ctl1 = _ctl(svc, 0, "h"), _ctl(svc, 1, "h")
        _event(ctl0), _event(ctl1)
        ctl1.send_raw(b'{"t": "exit", "code": 5}\n')
        assert _event(ctl0)["t"] == "kill"
        address = svc.address
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(address, timeout=5)
    with pytest.raises((ConnectionError, OSError)):
        ctl0.read()  # the driver's end of every connection is closed too
