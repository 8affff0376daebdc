"""What the online reconstruction shows while it runs: phase PNGs and TensorBoard events.

TensorBoard events are written with TensorBoard's own record framing and protos (the same
files ``tf.summary`` writes) to a plain local file, so the driver never imports TensorFlow
(TensorBoard's EventFileWriter would, for ``tf.io.gfile``: seconds of start-up and hundreds
of MB for a few images and scalars).
"""
from __future__ import annotations

import io
import os
import time
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray


def phase_png_bytes(obj: NDArray[Any], illumination: NDArray[Any] | None) -> tuple[bytes, tuple[int, int]]:
    """PNG of the object phase (viridis, dark outside the lit area) and its (height, width)."""
    from PIL import Image

    from recon_env.plots import phase_rgb

    rgb = phase_rgb(obj, illumination)
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, format="PNG")
    height, width = rgb.shape[:2]
    return buf.getvalue(), (height, width)


def write_atomic(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


class TensorBoard:
    """Scalars and images for one run folder (``<out>/tb``)."""

    def __init__(self, logdir: Path) -> None:
        import socket

        from tensorboard.compat.proto.event_pb2 import Event
        from tensorboard.summary.writer.record_writer import RecordWriter

        logdir.mkdir(parents=True, exist_ok=True)
        name = f"events.out.tfevents.{time.time():.6f}.{socket.gethostname()}.{os.getpid()}"
        self._writer = RecordWriter(open(logdir / name, "wb"))
        self._writer.write(Event(wall_time=time.time(), file_version="brain.Event:2")
                           .SerializeToString())

    def write(self, step: int, scalars: dict[str, float], images: dict[str, tuple[bytes, tuple[int, int]]]) -> None:
        from tensorboard.compat.proto.event_pb2 import Event
        from tensorboard.compat.proto.summary_pb2 import Summary

        values = [Summary.Value(tag=tag, simple_value=float(v)) for tag, v in scalars.items()
                  if v is not None and np.isfinite(v)]
        for tag, (png, (h, w)) in images.items():
            values.append(Summary.Value(tag=tag, image=Summary.Image(
                height=int(h), width=int(w), colorspace=3, encoded_image_string=png)))
        self._writer.write(Event(wall_time=time.time(), step=int(step),
                                 summary=Summary(value=values)).SerializeToString())
        self._writer.flush()

    def close(self) -> None:
        self._writer.close()


def read_events(logdir: Path) -> dict[str, list[tuple[int, float | None]]]:
    """Summaries in the event files of ``logdir``: tag -> [(step, value)] (None for an
    image); reads the record framing directly, so checking a run needs no TensorFlow."""
    import struct

    from tensorboard.compat.proto.event_pb2 import Event

    out: dict[str, list[tuple[int, float | None]]] = {}
    for path in sorted(Path(logdir).glob("events.out.tfevents.*")):
        data = path.read_bytes()
        pos = 0
        while pos + 12 <= len(data):
            (length,) = struct.unpack("<Q", data[pos:pos + 8])
            event = Event.FromString(data[pos + 12:pos + 12 + length])
            pos += 12 + length + 4
            for value in event.summary.value:
                image = value.HasField("image")
                out.setdefault(value.tag, []).append((event.step, None if image else value.simple_value))
    return out
