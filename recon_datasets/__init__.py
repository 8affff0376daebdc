"""Reconstructed-image datasets: a Spark job simulates and reconstructs many scans and
writes them as a partitioned Parquet dataset; ``read``/``validate`` check it on the way in.

Import-light on purpose (no pyspark, pyarrow or recon engine at import): the names below
load their module on first use.
"""
from __future__ import annotations

import importlib

_EXPORTS = {
    "BuildConfig": "recon_datasets.config",
    "DatasetError": "recon_datasets.schema",
    "build": "recon_datasets.build",
    "read": "recon_datasets.reader",
    "validate": "recon_datasets.reader",
    "to_numpy": "recon_datasets.reader",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'recon_datasets' has no attribute {name!r}")
