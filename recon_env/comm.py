"""Sum-reductions across ranks (seed Fig. 5/9: partial eq. 4-5 sums combined by Allreduce).

Three implementations of one interface, :class:`Communicator` (``allreduce(array)`` in
place, ``allreduce_scalars(values)``, ``barrier()``, and ``bcast``/``allgather`` of small
Python objects, so callers never reach through to the mpi4py communicator):
- ``SerialComm``: one process, no-ops.
- ``MPIComm``: mpi4py; device arrays are staged through host memory.
- ``NCCLComm``: GPU arrays summed on the device by NCCL (CuPy), unique id sent over MPI.
mpi4py and cupy are imported only when such a communicator is made.
"""
from __future__ import annotations

from typing import Any, Protocol, TypeVar

import numpy as np

from sparkmpi_dl.launch.environment import in_mpi_job

ArrayT = TypeVar("ArrayT")  # a NumPy or CuPy array
T = TypeVar("T")


class Communicator(Protocol):
    """What the engine, the env and the runner use of a communicator."""

    rank: int
    size: int
    kind: str  # "serial", "mpi" or "nccl"

    def allreduce(self, array: ArrayT) -> ArrayT:
        """Sum ``array`` over the ranks, in place; returns it."""
        ...

    def allreduce_scalars(self, values: Any) -> np.ndarray:
        """Sum a few host scalars over the ranks (float64)."""
        ...

    def barrier(self) -> None:
        ...

    def bcast(self, obj: Any, root: int = 0) -> Any:
        """``root``'s ``obj`` on every rank (pickled: small objects only; the others pass
        anything, e.g. None)."""
        ...

    def allgather(self, obj: T) -> list[T]:
        """Every rank's ``obj``, by rank."""
        ...


class SerialComm:
    rank = 0
    size = 1
    kind = "serial"

    def allreduce(self, array: ArrayT) -> ArrayT:
        return array

    def allreduce_scalars(self, values: Any) -> np.ndarray:
        return np.asarray(values, dtype=np.float64)

    def barrier(self) -> None:
        pass

    def bcast(self, obj: Any, root: int = 0) -> Any:
        return obj

    def allgather(self, obj: T) -> list[T]:
        return [obj]


class MPIComm:
    """Host-staged MPI Allreduce; works for NumPy arrays and (via copies) CuPy arrays."""

    kind = "mpi"

    def __init__(self, comm: Any = None) -> None:
        from mpi4py import MPI

        self.MPI = MPI
        self.comm = comm if comm is not None else MPI.COMM_WORLD
        self.rank: int = self.comm.Get_rank()
        self.size: int = self.comm.Get_size()

    def allreduce(self, array: Any) -> Any:
        if self.size == 1:
            return array
        if isinstance(array, np.ndarray):
            self.comm.Allreduce(self.MPI.IN_PLACE, array, op=self.MPI.SUM)
            return array
        host = array.get()  # a CuPy array: stage through host memory
        self.comm.Allreduce(self.MPI.IN_PLACE, host, op=self.MPI.SUM)
        array.set(host)
        return array

    def allreduce_scalars(self, values: Any) -> np.ndarray:
        buf = np.asarray(values, dtype=np.float64).copy()
        if self.size > 1:
            self.comm.Allreduce(self.MPI.IN_PLACE, buf, op=self.MPI.SUM)
        return buf

    def barrier(self) -> None:
        self.comm.Barrier()

    def bcast(self, obj: Any, root: int = 0) -> Any:
        return self.comm.bcast(obj, root=root)

    def allgather(self, obj: T) -> list[T]:
        return list(self.comm.allgather(obj))


class NCCLComm(MPIComm):
    """Device-side sums through NCCL; MPI only bootstraps it and reduces host scalars."""

    kind = "nccl"

    def __init__(self, comm: Any = None) -> None:
        super().__init__(comm)
        import cupy
        from cupy.cuda import nccl

        self.cupy = cupy
        self.nccl = nccl
        uid = nccl.get_unique_id() if self.rank == 0 else None
        uid = self.comm.bcast(uid, root=0)
        self.nccl_comm = nccl.NcclCommunicator(self.size, uid, self.rank)

    def allreduce(self, array: Any) -> Any:
        if self.size == 1 or isinstance(array, np.ndarray):
            return super().allreduce(array)
        cp, nccl = self.cupy, self.nccl
        real = array.view(cp.float32 if array.dtype in (cp.complex64, cp.float32) else cp.float64)
        dtype = nccl.NCCL_FLOAT32 if real.dtype == cp.float32 else nccl.NCCL_FLOAT64
        stream = cp.cuda.get_current_stream()
        self.nccl_comm.allReduce(real.data.ptr, real.data.ptr, real.size, dtype, nccl.NCCL_SUM,
                                 stream.ptr)
        return array


def make_comm(kind: str = "auto", backend: str = "numpy") -> Communicator:
    """``auto``: MPI when launched with more than one rank (NCCL on GPU), else serial."""
    if kind == "serial":
        return SerialComm()
    if kind == "auto":
        if not in_mpi_job():
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
