"""The online reconstruction's state on disk, under the query's checkpoint folder.

A restarted driver finds everything here (``<out>/checkpoint/recon/``):

* ``state.json``: the **committed** state, replaced atomically by the driver once every
  rank of a batch has written its files: the last applied batch id, the rank count, the
  start record's metadata, counts (frames used, duplicates, rejected by reason), and
  pointers to the files below. Files a crashed batch left behind are not pointed to and
  are overwritten when Spark re-runs that batch.
* ``start.npz``: probe guess and detector mask from the start record.
* ``frames/rank<r>-b<batch>.npz``: frames rank ``r`` accepted in a batch (intensities,
  frame indices, positions). Written once: frames stay on the rank that first got them.
* ``b<batch>/shared.npz``: object, probe, illumination and per-iteration history
  (identical on every rank, written by one); ``b<batch>/used.npy``: the bitmap of frame
  indices used so far.

Spark may re-run a batch whose state was committed but whose commit Spark had not yet
recorded (a crash in between); :meth:`StreamState.applied` makes that a no-op.
"""
from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

FORMAT = "sparkmpi-dl stream-recon state/2"


def write_json(path: Path, data: Any) -> None:
    """Atomic JSON write (a reader sees the old or the new file, never half of one)."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(data, indent=2, default=_plain) + "\n")
    os.replace(tmp, path)


def _plain(value: Any) -> Any:
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (np.floating,)):
        return float(value)
    if isinstance(value, np.ndarray):
        return value.tolist()
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def save_npz(path: Path, **arrays: Any) -> None:
    """np.savez to a temporary name, then rename (a crash never leaves half a file)."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "wb") as f:
        np.savez(f, **arrays)
    os.replace(tmp, path)


def save_npy(path: Path, array: NDArray[Any]) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "wb") as f:
        np.save(f, array)
    os.replace(tmp, path)


@dataclass
class StreamState:
    """The committed state (``state.json``), as plain JSON-able fields."""

    ranks: int
    batch: int = -1                      # last applied micro-batch id
    scan: str | None = None
    start: dict[str, Any] | None = None  # start record metadata (ScanStart.meta() + shape...)
    end: dict[str, Any] | None = None    # end record metadata, once seen
    shared: str | None = None            # relative path of the latest shared.npz
    chunks: dict[str, list[str]] = field(default_factory=dict)  # rank -> frame files
    counts: dict[str, Any] = field(default_factory=lambda: {
        "received": 0, "frames_used": 0, "duplicates": 0, "rejected": 0,
        "rejected_reasons": {}, "other_scans": 0})
    batches_with_frames: int = 0
    read_to: dict[str, str] = field(default_factory=dict)      # stream -> last entry id read
    used: str | None = None              # relative path of the used-frames bitmap
    final: dict[str, Any] | None = None  # summary of the final step, once done
    schedule: list[dict[str, Any]] = field(default_factory=list)  # the agent's choices, per batch

    def applied(self, batch_id: int) -> bool:
        return batch_id <= self.batch

    def to_json(self) -> dict[str, Any]:
        return {"format": FORMAT, **self.__dict__}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> "StreamState":
        if data.get("format") != FORMAT:
            raise ValueError(f"not a {FORMAT} file (format {data.get('format')!r})")
        fields = {k: v for k, v in data.items() if k != "format"}
        return cls(**fields)


class StateDir:
    """Paths and committed-state I/O of one online reconstruction."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)

    @property
    def state_file(self) -> Path:
        return self.root / "state.json"

    @property
    def start_file(self) -> Path:
        return self.root / "start.npz"

    def batch_dir(self, batch_id: int) -> Path:
        return self.root / f"b{batch_id}"

    def frames_file(self, rank: int, batch_id: int) -> Path:
        return self.root / "frames" / f"rank{rank}-b{batch_id}.npz"

    def path(self, rel: str) -> Path:
        return self.root / rel

    def rel(self, path: Path) -> str:
        return str(path.relative_to(self.root))

    def load(self, ranks: int) -> StreamState:
        """The committed state, or a fresh one; ValueError if made with another rank count."""
        if not self.state_file.exists():
            return StreamState(ranks=ranks)
        try:
            state = StreamState.from_json(json.loads(self.state_file.read_text()))
        except (OSError, ValueError, TypeError) as err:
            raise ValueError(f"{self.state_file}: unreadable reconstruction state ({err})") from None
        if state.ranks != ranks:
            raise ValueError(f"{self.state_file}: this reconstruction runs on {state.ranks} ranks "
                             f"(frames stay on the rank that received them); restart it with "
                             f"--ranks {state.ranks}")
        return state

    def commit(self, state: StreamState) -> None:
        """Make ``state`` the committed one, then drop batch folders it no longer needs."""
        self.root.mkdir(parents=True, exist_ok=True)
        write_json(self.state_file, state.to_json())
        named = [Path(p).parts[0] for p in [state.shared or "", state.used or ""] if p]
        kept = [int(name[1:]) for name in named if name.startswith("b") and name[1:].isdigit()]
        if not kept:
            return
        # older than every folder the state names: no longer needed; newer ones may be in
        # the making (a rank iterates the committed batch after its reply)
        for child in self.root.iterdir():
            if child.is_dir() and child.name.startswith("b") and child.name[1:].isdigit() \
                    and int(child.name[1:]) < min(kept):
                shutil.rmtree(child, ignore_errors=True)

    def prepare(self, batch_id: int) -> None:
        """Folders a batch writes into (an earlier failed attempt's files are overwritten)."""
        (self.root / "frames").mkdir(parents=True, exist_ok=True)
        self.batch_dir(batch_id).mkdir(parents=True, exist_ok=True)
