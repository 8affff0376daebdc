"""What the launch environment says about this process: is it already an MPI rank?

A program that can either start its own ranks or run as one (``sparkmpi-dl train``, the
trainer script) asks here, so the variable lists live in one place.
"""
from __future__ import annotations

import os
from collections.abc import Mapping

# Set by mpiexec/Hydra, the project's launchers, Open MPI, and horovodrun's Gloo mode.
RANK_VARS = ("PMI_RANK", "PMI_FD", "OMPI_COMM_WORLD_RANK", "PMIX_RANK", "HOROVOD_RANK")
SIZE_VARS = ("PMI_SIZE", "OMPI_COMM_WORLD_SIZE", "HOROVOD_SIZE")


def launched_size(environ: Mapping[str, str] | None = None) -> int | None:
    """The job size if some launcher already made this process a rank, else None
    (-1: a rank of a size the environment does not say; Horovod will tell)."""
    env = os.environ if environ is None else environ
    if not any(var in env for var in RANK_VARS):
        return None
    for var in SIZE_VARS:
        if var in env:
            return int(env[var])
    return -1
