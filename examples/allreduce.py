"""Spark-MPI allreduce (the seed paper's Fig. 6), without mpirun, ssh or a patched MPI.

    spark-submit --master local[4] examples/allreduce.py 4
    spark-submit --master spark://HOST:7077 examples/allreduce.py 8

Each Spark barrier task becomes one MPI rank: the driver hosts the PMI service, the task
joins it and starts the rank with PMI_FD/PMI_RANK/PMI_SIZE set, and MPI_Init wires the
ranks together. The function below is ordinary mpi4py code.
"""
import sys
import time

import sparkmpi_dl


def allreduce(n: int):
    import numpy as np
    from mpi4py import MPI

    comm = MPI.COMM_WORLD
    send = np.arange(n, dtype=np.float32)
    send[n - 1] = 5.0
    recv = np.empty_like(send)
    comm.Allreduce(send, recv)  # warm-up
    start = time.perf_counter()
    comm.Allreduce(send, recv)
    return {"rank": comm.rank, "seconds": time.perf_counter() - start, "last": float(recv[-1])}


if __name__ == "__main__":
    partitions = int(sys.argv[1]) if len(sys.argv) > 1 else 2
    results = sparkmpi_dl.run(allreduce, partitions, args=(2 * 1000 * 1000,))
    for r in results:
        print(f"rank {r['rank']}: allreduce of 8 MB in {r['seconds'] * 1e3:.2f} ms, "
              f"last element {r['last']:.0f} (expected {5 * partitions})")
