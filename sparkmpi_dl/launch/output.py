"""Printing ranks' output on the driver's console, each line prefixed ``[rank N]``."""
from __future__ import annotations

import sys
import threading

_lock = threading.Lock()


def print_prefixed(rank: int, stream: str, line: str) -> None:
    target = sys.stderr if stream == "stderr" else sys.stdout
    with _lock:
        print(f"[rank {rank}] {line}", file=target, flush=True)
