"""The project's Gloo rendezvous: placement maths, the HTTP protocol, and real Horovod ranks."""
from __future__ import annotations

import http.client
import json
import os
import socket
import subprocess
import sys
import textwrap

import pytest

from sparkmpi_dl.gloo_rendezvous import GlooRendezvous, gloo_env, placements, scope_sizes


def test_placements_follow_real_hosts():
    got = [(p.local_rank, p.local_size, p.cross_rank, p.cross_size)
           for p in placements(["a", "a", "b", "c", "b"])]
    # a: ranks 0,1; b: ranks 2,4; c: rank 3. Cross group of local rank 0 = a,b,c; of 1 = a,b.
    assert got == [(0, 2, 0, 3), (1, 2, 0, 2), (0, 2, 1, 3), (0, 1, 2, 3), (1, 2, 1, 2)]
    assert scope_sizes(["a", "a", "b"]) == {"global": 3, "local_a": 2, "local_b": 1,
                                            "cross_0": 2, "cross_1": 1}


def test_env_names_every_variable_and_rejects_bad_rank():
    env = gloo_env(1, ["h1", "h2"], "10.0.0.1", 4242, iface="eth0")
    assert env["HOROVOD_CONTROLLER"] == env["HOROVOD_CPU_OPERATIONS"] == "gloo"
    assert (env["HOROVOD_RANK"], env["HOROVOD_SIZE"], env["HOROVOD_HOSTNAME"]) == ("1", "2", "h2")
    assert (env["HOROVOD_CROSS_RANK"], env["HOROVOD_CROSS_SIZE"]) == ("1", "2")
    assert env["HOROVOD_GLOO_RENDEZVOUS_ADDR"] == "10.0.0.1"
    assert env["HOROVOD_GLOO_RENDEZVOUS_PORT"] == "4242" and env["HOROVOD_GLOO_IFACE"] == "eth0"
    with pytest.raises(ValueError, match="rank 2 is outside the job of 2"):
        gloo_env(2, ["h1", "h2"], "10.0.0.1", 4242)


def test_refuses_to_bind_all_interfaces():
    with pytest.raises(ValueError, match="not all interfaces"):
        GlooRendezvous(bind="0.0.0.0")


def _request(addr, method, path, body=b""):
    conn = http.client.HTTPConnection(*addr, timeout=5)
    conn.request(method, path, body=body)
    resp = conn.getresponse()
    data = resp.read()
    conn.close()
    return resp.status, data


def test_http_protocol_and_refusals(caplog):
    with GlooRendezvous() as server:
        server.env_provider(0, ["a", "a"])
        addr = server.address
        assert _request(addr, "GET", "/global/0") == (404, b"")
        assert _request(addr, "PUT", "/global/0", b"\x00addr")[0] == 200
        assert _request(addr, "GET", "/global/0") == (200, b"\x00addr")
        # garbage is refused with a logged reason and the store carries on
        assert _request(addr, "GET", "/global")[0] == 400
        assert _request(addr, "GET", "/global/../../etc")[0] == 400
        assert _request(addr, "POST", "/global/0", b"x")[0] == 405
        with socket.create_connection(addr, timeout=5) as sock:  # refused before the body
            sock.sendall(b"PUT /global/big HTTP/1.1\r\nContent-Length: 9999999\r\n\r\n")
            assert sock.recv(100).startswith(b"HTTP/1.0 413")
        assert "refused" in caplog.text and "malformed path" in caplog.text
        assert _request(addr, "GET", "/global/0") == (200, b"\x00addr")
        # a scope is dropped once all its members said DELETE
        assert _request(addr, "DELETE", "/global/0")[0] == 200
        assert _request(addr, "GET", "/global/0")[0] == 200
        assert _request(addr, "DELETE", "/global/1")[0] == 200
        assert _request(addr, "GET", "/global/0")[0] == 404


def test_second_request_for_a_rank_starts_a_clean_attempt():
    with GlooRendezvous() as server:
        server.env_provider(0, ["a", "a"])
        server.env_provider(1, ["a", "a"])
        assert _request(server.address, "PUT", "/global/0", b"stale")[0] == 200
        server.env_provider(0, ["a", "a"])  # retried job
        assert _request(server.address, "GET", "/global/0")[0] == 404


RANK = textwrap.dedent("""
    import json, os
    import horovod.tensorflow as hvd
    import tensorflow as tf
    hvd.init()
    total = hvd.allreduce(tf.constant([float(hvd.rank() + 1)]), op=hvd.Sum)
    print(json.dumps({"rank": hvd.rank(), "size": hvd.size(), "local": [hvd.local_rank(),
          hvd.local_size()], "cross": [hvd.cross_rank(), hvd.cross_size()],
          "gloo": hvd.gloo_enabled(), "mpi": hvd.mpi_enabled(), "sum": float(total[0])}))
""")


def test_horovod_ranks_meet_through_it_without_mpi():
    # Two "hosts" on one machine: exercises the local and the cross scopes at once.
    hosts = ["nodeA", "nodeB"]
    base = {k: v for k, v in os.environ.items() if not k.startswith(("PMI", "HYDRA", "OMPI"))}
    with GlooRendezvous(iface="lo") as server:
        procs = [subprocess.Popen([sys.executable, "-c", RANK], stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, text=True,
                                  env={**base, **server.env_provider(r, hosts)})
                 for r in range(2)]
        outs = [p.communicate(timeout=120) for p in procs]
    for p, (out, err) in zip(procs, outs):
        assert p.returncode == 0, err[-2000:]
    results = sorted((json.loads(o.strip().splitlines()[-1]) for o, _ in outs),
                     key=lambda r: r["rank"])
    assert [r["sum"] for r in results] == [3.0, 3.0]
    assert all(r["gloo"] and not r["mpi"] and r["size"] == 2 for r in results)
    assert [r["local"] for r in results] == [[0, 1], [0, 1]]
    assert [r["cross"] for r in results] == [[0, 2], [1, 2]]
