"""Subprocess entry for function mode: load the pickled call, run it, write the result.

Usage: ``python -m sparkmpi_dl.launch.entry PAYLOAD RESULT``. A raised exception prints its
traceback to stderr (which reaches the driver) and exits 1.
"""
from __future__ import annotations

import os
import pickle
import sys
import traceback

import cloudpickle


def _exit_without_finalize_if_mpi() -> None:
    """Leave at once when MPI is up: MPI_Finalize could wait forever for ranks that are
    blocked in a collective with this one. The launcher sees the exit and stops them."""
    mpi_module = sys.modules.get("mpi4py.MPI")
    if mpi_module is not None and mpi_module.Is_initialized() and not mpi_module.Is_finalized():
        sys.stdout.flush()
        os._exit(1)


def main(payload_path: str, result_path: str) -> int:
    with open(payload_path, "rb") as f:
        fn, args, kwargs = cloudpickle.load(f)
    try:
        result = fn(*args, **kwargs)
    except BaseException:  # report everything, including SystemExit from user code
        traceback.print_exc()
        sys.stderr.flush()
        _exit_without_finalize_if_mpi()
        return 1
    tmp = result_path + ".tmp"
    with open(tmp, "wb") as f:
        cloudpickle.dump(result, f, protocol=pickle.HIGHEST_PROTOCOL)
    os.replace(tmp, result_path)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], sys.argv[2]))
