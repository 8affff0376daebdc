"""The publisher: wire format, frame order by index over K streams, backpressure, CLI."""
from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import threading
import time

import numpy as np
import pytest

from sparkmpi_dl.stream.publish import BacklogTimeout, PublishOptions, publish, simulated_scan
from sparkmpi_dl.stream.records import entry_row, parse_start, stream_keys

SIM = {"n_frames": 64, "frame_size": 32, "probe_diameter": 10.0, "photons": 1e6, "seed": 3}


@pytest.fixture(scope="module")
def scan():
    return simulated_scan(SIM, scan_id="scan-a")


def test_scan_layout_and_round_trip(broker, scan):
    client = broker.client()
    stats = publish(client, scan, PublishOptions(streams=3, rate=None), out=io.StringIO())
    assert stats["frames"] == 64 and stats["waited_s"] == 0
    keys = stream_keys("sparkmpi", 3)
    assert client.hgetall("sparkmpi:config") == {b"streams": b"3", b"max_len": b"2048"}
    rows = {k: [entry_row(k, i, f) for i, f in client.xrange(k)] for k in keys}
    kinds = [r[2] for r in rows[keys[0]]]
    assert kinds[0] == "start" and kinds[-1] == "end" and kinds.count("frame") == 22
    start = rows[keys[0]][0]
    parsed = parse_start(start[3], start[7], start[8], start[10], start[9])
    assert (parsed.scan, parsed.n_frames, parsed.frame_shape, parsed.dtype) == ("scan-a", 64, (32, 32), "float32")
    assert parsed.probe.shape == (32, 32) and parsed.mask.dtype == bool
    assert json.loads(rows[keys[0]][-1][10]) == {"frames_published": 64}
    for k, key in enumerate(keys):  # frame i in stream i % K, in index order, bytes intact
        frames = [r for r in rows[key] if r[2] == "frame"]
        assert [r[4] for r in frames] == list(range(k, 64, 3))
        for r in frames:
            i = r[4]
            assert (r[5], r[6]) == tuple(scan.positions[i])
            np.testing.assert_array_equal(np.frombuffer(r[9], np.float32).reshape(32, 32),
                                          scan.frames(i, i + 1)[0])


def test_publisher_waits_at_the_bound_and_drops_nothing(broker, scan):
    """A consumer slower than the publisher: the backlog never exceeds the bound, every
    frame arrives once (the consumer trims what it read, as the Spark source does)."""
    client = broker.client()
    key = stream_keys("sparkmpi", 1)[0]
    got, max_len_seen = [], [0]
    finished = threading.Event()
    out = io.StringIO()

    def consume():
        last = "0-0"
        c = broker.client()
        # Slower than the publisher by construction, not by timing: take nothing until the
        # publisher has said it is held at the bound (a fast reader could otherwise keep up).
        while "waiting for the consumer" not in out.getvalue() and not finished.is_set():
            time.sleep(0.005)
        while True:
            max_len_seen[0] = max(max_len_seen[0], c.xlen(key))
            entries = c.xread({key: last}, count=16, block=100)
            for _, items in entries:
                for eid, fields in items:
                    got.append(fields.get(b"index"))
                    last = eid
                c.xtrim(key, minid=f"{last.decode().split('-')[0]}-{int(last.decode().split('-')[1]) + 1}")
            if finished.is_set() and not entries:
                return

    reader = threading.Thread(target=consume)
    reader.start()
    try:
        stats = publish(client, scan, PublishOptions(streams=1, rate=None, max_len=64), out=out)
    finally:
        finished.set()
        reader.join(30)
    frames = [int(i) for i in got if i is not None]
    assert sorted(frames) == list(range(64)) and len(got) == 66  # + start and end
    assert stats["waited_s"] > 0 and "waiting for the consumer" in out.getvalue()
    assert max_len_seen[0] <= 64 + 1  # the bound (+ the end record, which always goes)


def test_backlog_timeout_says_nothing_was_dropped(broker, scan):
    client = broker.client()
    with pytest.raises(BacklogTimeout, match="none dropped"):
        publish(client, scan, PublishOptions(streams=1, rate=None, max_len=64,
                                             backlog_timeout_s=0.3), out=io.StringIO())
    assert client.xlen(stream_keys("sparkmpi", 1)[0]) == 1  # the start record: no frame lost


def test_publish_cli_starts_and_records_a_broker(tmp_path):
    env = {**os.environ, "SPARKMPI_BROKER_HOME": str(tmp_path / "home")}
    cli = [sys.executable, "-m", "sparkmpi_dl.cli", "stream"]
    try:
        proc = subprocess.run(cli + ["publish", "--simulate", "--frames", "16", "--shape", "32",
                                     "--photons", "1e6", "--rate", "400", "--streams", "2"],
                              capture_output=True, text=True, timeout=120, env=env)
        assert proc.returncode == 0, proc.stderr
        assert "started broker redis://127.0.0.1:" in proc.stdout
        assert "published 16 frames of scan" in proc.stdout
        status = subprocess.run(cli + ["broker", "status"], capture_output=True, text=True,
                                timeout=60, env=env)
        assert status.returncode == 0 and json.loads(status.stdout)["url"] in proc.stdout
    finally:
        subprocess.run(cli + ["broker", "stop"], capture_output=True, timeout=60, env=env)
    bad = subprocess.run(cli + ["publish", "--simulate", "--rate", "-1"], capture_output=True,
                         text=True, timeout=60, env=env)
    assert bad.returncode == 2 and bad.stderr.strip() == "error: --rate must be > 0 frames/s, got -1.0"
