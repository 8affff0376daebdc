"""``sparkmpi-dl bench stream``: figures of the live pipeline (filled in below)."""
from __future__ import annotations

import argparse


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--json", action="store_true", help="print one JSON line")
    p.set_defaults(func=lambda args: 0)
