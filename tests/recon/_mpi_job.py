"""One reconstruction with the frames split over the MPI ranks of whatever launched it
(mpiexec, sparkmpi_dl.mpirun, Spark barrier tasks); rank 0's result is returned/saved."""
import sys

import numpy as np


def job(iterations: int) -> dict | None:
    from recon_env.comm import MPIComm
    from recon_env.engine import EngineConfig, Reconstructor
    from recon_env.simulate import simulate

    comm = MPIComm()
    data = simulate(n_frames=40, frame_size=32, probe_diameter=10, photons=1e6, seed=5,
                    bad_pixels=0.02)
    rec = Reconstructor(data, EngineConfig(seed=2), comm=comm)
    hist = rec.step(iterations, beta=0.9)
    rec.step(2, algorithm="raar", beta=0.8)
    shares = comm.comm.gather(rec.frames, root=0)
    if comm.rank != 0:
        return None
    return dict(object=rec.result()["object"], probe=rec.result()["probe"],
                fourier_error=np.array(rec.history["fourier_error"]),
                exit_change=np.array(hist["exit_change"]), shares=np.array(shares),
                size=comm.size)


if __name__ == "__main__":
    result = job(int(sys.argv[2]))
    if result is not None:
        np.savez(sys.argv[1], **result)
