"""The embedded broker: a real redis-server with AOF, recorded for later commands, stopped."""
from __future__ import annotations

import os

import pytest

from sparkmpi_dl.stream import broker as brokers


def _gone(pid: int) -> bool:
    return not brokers._alive(pid)


def test_broker_persists_with_aof_and_stops(tmp_path):
    server = brokers.start(tmp_path / "data")
    client = server.client()
    assert client.config_get("appendonly")["appendonly"] == "yes"
    client.xadd("s", {"k": "v1"})
    client.xadd("s", {"k": "v2"})
    server.stop()
    assert _gone(server.pid)
    # a new server on the same folder replays the append-only file: nothing was lost
    again = brokers.start(tmp_path / "data")
    try:
        assert [f[b"k"] for _, f in again.client().xrange("s")] == [b"v1", b"v2"]
    finally:
        again.stop()


def test_resolve_starts_records_and_finds_one_broker(tmp_path, monkeypatch):
    monkeypatch.setenv("SPARKMPI_BROKER_HOME", str(tmp_path / "home"))
    said = []
    first = brokers.resolve(None, say=said.append)
    try:
        assert said and first.url in said[0]
        assert (tmp_path / "home" / brokers.RECORD).is_file()
        second = brokers.resolve(None, say=said.append)  # the next command finds it
        assert (second.url, second.pid) == (first.url, first.pid) and len(said) == 1
    finally:
        stopped = brokers.stop_recorded()
    assert stopped is not None and stopped.pid == first.pid
    assert brokers.find_recorded() is None and not (tmp_path / "home" / brokers.RECORD).exists()


def test_a_stale_record_is_not_trusted(tmp_path, monkeypatch):
    """A record whose server is gone (or another process holds its port) is ignored."""
    monkeypatch.setenv("SPARKMPI_BROKER_HOME", str(tmp_path / "home"))
    server = brokers.start(tmp_path / "data")
    brokers.record(brokers.Broker(server.url, pid=os.getpid()))  # wrong pid for that port
    try:
        assert brokers.find_recorded() is None
    finally:
        server.stop()
    with pytest.raises(brokers.BrokerError, match="no broker given"):
        brokers.resolve(None, start_if_missing=False)


def test_bad_broker_urls_are_named():
    with pytest.raises(ValueError, match="redis://HOST:PORT"):
        brokers.parse_url("http://localhost:6379")
    with pytest.raises(brokers.BrokerError, match="cannot reach the broker at redis://127.0.0.1:1"):
        brokers.connect("redis://127.0.0.1:1", timeout_s=0.5, retries=0)
