"""The MPI side of the allreduce benchmark, run unchanged under every launcher.

``python -m sparkmpi_dl.bench.allreduce_rank --size ELEMS --repeat R`` sums a float32
array across all ranks R times (after one warm-up) and rank 0 prints one JSON line:
``{"allreduce_s": [...], "init_done": <unix time all ranks were past MPI_Init>}``.
"""
from __future__ import annotations

import argparse
import json
import time


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--size", type=int, default=2_000_000)
    parser.add_argument("--repeat", type=int, default=10)
    args = parser.parse_args()

    import numpy as np
    from mpi4py import MPI

    comm = MPI.COMM_WORLD
    comm.Barrier()
    init_done = time.time()
    send = np.arange(args.size, dtype=np.float32)
    recv = np.empty_like(send)
    comm.Allreduce(send, recv)  # warm-up: connection set-up, buffer registration
    times = []
    for _ in range(args.repeat):
        comm.Barrier()
        start = time.perf_counter()
        comm.Allreduce(send, recv)
        elapsed = comm.allreduce(time.perf_counter() - start, op=MPI.MAX)
        times.append(elapsed)
    expected = float(send[-1]) * comm.size
    if not np.isclose(recv[-1], expected):
        raise SystemExit(f"allreduce gave {recv[-1]}, expected {expected}")
    if comm.rank == 0:
        print(json.dumps({"allreduce_s": times, "init_done": init_done}), flush=True)


if __name__ == "__main__":
    main()
