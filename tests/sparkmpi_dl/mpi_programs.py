"""Small MPI programs the launcher tests run as real MPICH ranks (``python -m tests.sparkmpi_dl.mpi_programs NAME``)."""
from __future__ import annotations

import json
import os
import sys
import time


def collectives() -> None:
    import numpy as np
    from mpi4py import MPI
    comm = MPI.COMM_WORLD
    total = np.zeros(4)
    comm.Allreduce(np.full(4, comm.rank + 1.0), total)
    root_data = comm.bcast({"from": "root", "n": comm.size} if comm.rank == 0 else None, root=0)
    comm.Barrier()
    node = comm.Split_type(MPI.COMM_TYPE_SHARED)
    print(json.dumps({"rank": comm.rank, "size": comm.size, "sum": float(total[0]),
                      "bcast": root_data, "node_size": node.size,
                      "env_rank": os.environ["SPARKMPI_RANK"]}), flush=True)


def crash_mid_allreduce() -> None:
    import numpy as np
    from mpi4py import MPI
    comm = MPI.COMM_WORLD
    buf = np.ones(1000)
    comm.Allreduce(np.ones(1000), buf)
    if comm.rank == comm.size - 1:
        print("rank about to die", file=sys.stderr, flush=True)
        time.sleep(0.3)
        os._exit(9)
    comm.Allreduce(np.ones(1000), buf)  # blocks forever without the launcher's kill
    time.sleep(600)


def name_service() -> None:
    from mpi4py import MPI
    comm = MPI.COMM_WORLD
    if comm.rank == 0:
        port = MPI.Open_port()
        MPI.Publish_name("beamline-svc", port)
        comm.Barrier()
        comm.Barrier()
        MPI.Unpublish_name("beamline-svc", port)
        MPI.Close_port(port)
        print(json.dumps({"published": port}), flush=True)
    else:
        comm.Barrier()
        found = MPI.Lookup_name("beamline-svc")
        comm.Barrier()
        print(json.dumps({"found": found}), flush=True)


def exit_without_finalize() -> None:
    """Rank 0 leaves with code 0 and no MPI_Finalize; the others then wait for it forever."""
    from mpi4py import MPI
    comm = MPI.COMM_WORLD
    comm.Barrier()
    if comm.rank == 0:
        print("rank 0 leaving without MPI_Finalize", flush=True)
        os._exit(0)
    comm.Barrier()  # blocks forever unless the launcher ends the job
    time.sleep(600)


if __name__ == "__main__":
    globals()[sys.argv[1]]()
