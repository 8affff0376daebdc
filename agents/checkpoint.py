"""One-file checkpoints: every array and a JSON header in a single ``.npz``, replaced atomically.

A single file means a crash can never leave weights from one step beside a replay buffer from
another; ``os.replace`` means a reader sees either the old or the new checkpoint, whole.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np

FORMAT = "sparkmpi-dl-dqn-checkpoint/1"


def save_checkpoint(path: Path, meta: dict[str, Any], arrays: dict[str, dict[str, np.ndarray]]) -> None:
    """``arrays`` maps a group name (``learner``, ``replay``) to its named arrays."""
    path = Path(path)
    flat = {f"{group}/{name}": value for group, named in arrays.items()
            for name, value in named.items()}
    header = json.dumps({"format": FORMAT, **meta}).encode()
    flat["meta"] = np.frombuffer(header, np.uint8)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        np.savez(f, **flat)
    os.replace(tmp, path)


def load_checkpoint(path: Path) -> tuple[dict[str, Any], dict[str, dict[str, np.ndarray]]]:
    """Inverse of :func:`save_checkpoint`; raises ValueError for a file that is not one."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"checkpoint {path}: no such file")
    try:
        with np.load(path, allow_pickle=False) as data:
            flat = {k: data[k] for k in data.files}
    except (OSError, ValueError) as err:
        raise ValueError(f"checkpoint {path}: not a readable .npz ({err})") from err
    if "meta" not in flat:
        raise ValueError(f"checkpoint {path}: no 'meta' header, not a DQN checkpoint")
    meta = json.loads(flat.pop("meta").tobytes().decode())
    if meta.get("format") != FORMAT:
        raise ValueError(f"checkpoint {path}: format {meta.get('format')!r}, expected {FORMAT!r}")
    arrays: dict[str, dict[str, np.ndarray]] = {}
    for key, value in flat.items():
        group, _, name = key.partition("/")
        arrays.setdefault(group, {})[name] = value
    return meta, arrays
