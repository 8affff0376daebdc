"""Sum-reductions across ranks (seed Fig. 5/9: partial eq. 4-5 sums combined by Allreduce).

Three implementations with one interface, ``allreduce(array)`` (in place, sum) and
``allreduce_scalars(values)``:
- ``SerialComm``: one process, no-ops.
- ``MPIComm``: mpi4py; device arrays are staged through host memory.
- ``NCCLComm``: GPU arrays summed on the device by NCCL (CuPy), unique id sent over MPI.
mpi4py and cupy are imported only when such a communicator is made.
"""
from __future__ import annotations

import numpy as np


class SerialComm:
    rank = 0
    size = 1
    kind = "serial"

    def allreduce(self, array):
        return array

    def allreduce_scalars(self, values) -> np.ndarray:
        return np.asarray(values, dtype=np.float64)

    def barrier(self) -> None:
        pass


class MPIComm:
    """Host-staged MPI Allreduce; works for NumPy arrays and (via copies) CuPy arrays."""

    kind = "mpi"

    def __init__(self, comm=None) -> None:
        from mpi4py import MPI

        self.MPI = MPI
        self.comm = comm if comm is not None else MPI.COMM_WORLD
        self.rank = self.comm.Get_rank()
        self.size = self.comm.Get_size()

    def allreduce(self, array):
        if self.size == 1:
            return array
        if isinstance(array, np.ndarray):
            self.comm.Allreduce(self.MPI.IN_PLACE, array, op=self.MPI.SUM)
            return array
        host = array.get()  # a CuPy array: stage through host memory
        self.comm.Allreduce(self.MPI.IN_PLACE, host, op=self.MPI.SUM)
        array.set(host)
        return array

    def allreduce_scalars(self, values) -> np.ndarray:
        buf = np.asarray(values, dtype=np.float64).copy()
        if self.size > 1:
            self.comm.Allreduce(self.MPI.IN_PLACE, buf, op=self.MPI.SUM)
        return buf

    def barrier(self) -> None:
        self.comm.Barrier()


class NCCLComm(MPIComm):
    """Device-side sums through NCCL; MPI only bootstraps it and reduces host scalars."""

    kind = "nccl"

    def __init__(self, comm=None) -> None:
        super().__init__(comm)
        import cupy
        from cupy.cuda import nccl

        self.cupy = cupy
        self.nccl = nccl
        uid = nccl.get_unique_id() if self.rank == 0 else None
        uid = self.comm.bcast(uid, root=0)
        self.nccl_comm = nccl.NcclCommunicator(self.size, uid, self.rank)

    def allreduce(self, array):
        if self.size == 1 or isinstance(array, np.ndarray):
            return super().allreduce(array)
        cp, nccl = self.cupy, self.nccl
        real = array.view(cp.float32 if array.dtype in (cp.complex64, cp.float32) else cp.float64)
        dtype = nccl.NCCL_FLOAT32 if real.dtype == cp.float32 else nccl.NCCL_FLOAT64
        stream = cp.cuda.get_current_stream()
        self.nccl_comm.allReduce(real.data.ptr, real.data.ptr, real.size, dtype, nccl.NCCL_SUM,
                                 stream.ptr)
        return array


def make_comm(kind: str = "auto", backend: str = "numpy"):
    """``auto``: MPI when launched with more than one rank (NCCL on GPU), else serial."""
    if kind == "serial":
        return SerialComm()
    if kind == "auto":
        import os

        launched = any(k in os.environ for k in ("PMI_RANK", "PMI_SIZE", "PMI_FD", "PMI_PORT",
                                                  "OMPI_COMM_WORLD_SIZE", "PMIX_RANK"))
        if not launched:
            return SerialComm()
        comm = MPIComm()
        if comm.size == 1:
            return comm
        if backend == "cupy":
            try:
                return NCCLComm()
            except Exception as err:  # noqa: BLE001 - fall back, but say why
                import sys

                print(f"recon_env: NCCL unavailable ({err}); summing through host MPI",
                      file=sys.stderr)
        return comm
    if kind == "mpi":
        return MPIComm()
    if kind == "nccl":
        return NCCLComm()
    raise ValueError(f"comm must be one of auto, serial, mpi, nccl; got {kind!r}")
