"""Reconstructed-image datasets: a Spark job simulates and reconstructs many scans and
writes them as a partitioned Parquet dataset; ``read``/``validate`` check it on the way in.

Import-light on purpose (no pyspark, pyarrow or recon engine at import): the names below
load their module on first use.
"""
from __future__ import annotations

import importlib

_EXPORTS = {
    "BuildConfig": "datasets.config",
    "DatasetError": "datasets.schema",
    "build": "datasets.build",
    "read": "datasets.reader",
    "validate": "datasets.reader",
    "to_numpy": "datasets.reader",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'datasets' has no attribute {name!r}")
