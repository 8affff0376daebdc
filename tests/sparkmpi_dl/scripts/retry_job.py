"""Run under spark-submit with --master local[2,2]: the first stage attempt fails on rank 1,
Spark retries the barrier stage, and the retry (a new PMI epoch) succeeds."""
import json
import sys

import sparkmpi_dl


def flaky(marker_dir: str):
    import os
    from mpi4py import MPI
    comm = MPI.COMM_WORLD
    marker = os.path.join(marker_dir, "failed-once")
    if comm.rank == 1 and not os.path.exists(marker):
        open(marker, "w").close()
        raise RuntimeError("transient detector glitch")
    return comm.allreduce(comm.rank + 1), os.environ["SPARKMPI_EPOCH"]


if __name__ == "__main__":
    results = sparkmpi_dl.run(flaky, 2, args=(sys.argv[1],), stage_retries=1)
    print("RESULT " + json.dumps(results), flush=True)
