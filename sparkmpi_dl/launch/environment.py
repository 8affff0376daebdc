"""What the launch environment says about this process: is it already a rank?

A program that can either start its own ranks or run as one (``sparkmpi-dl train``,
``sparkmpi-dl recon``, the trainer script) asks here, so the variable lists live in one place.
"""
from __future__ import annotations

import os
from collections.abc import Mapping

# Set for an MPI process by mpiexec/Hydra, the project's launchers (PMI_FD), Open MPI, PMIx:
# MPI_Init in such a process joins that job.
MPI_VARS = ("PMI_RANK", "PMI_SIZE", "PMI_FD", "PMI_PORT", "OMPI_COMM_WORLD_SIZE", "PMIX_RANK")
# A rank of any launcher: the MPI ones above, and horovodrun's Gloo mode (no MPI at all).
RANK_VARS = ("PMI_RANK", "PMI_FD", "OMPI_COMM_WORLD_RANK", "PMIX_RANK", "HOROVOD_RANK")
SIZE_VARS = ("PMI_SIZE", "OMPI_COMM_WORLD_SIZE", "HOROVOD_SIZE")


def in_mpi_job(environ: Mapping[str, str] | None = None) -> bool:
    """Whether an MPI launcher started this process (so MPI_Init joins its job)."""
    env = os.environ if environ is None else environ
    return any(var in env for var in MPI_VARS)


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
