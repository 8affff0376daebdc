"""Run under an MPI launcher: reconstruct with frames split over the ranks, save rank 0's
result (and every rank's share) to the .npz named on the command line."""
import sys

import numpy as np

from recon_env.comm import MPIComm
from recon_env.engine import EngineConfig, Reconstructor
from recon_env.simulate import simulate


def main(out: str, iterations: int) -> None:
    comm = MPIComm()
    data = simulate(n_frames=40, frame_size=32, probe_diameter=10, photons=1e6, seed=5,
                    bad_pixels=0.02)
    rec = Reconstructor(data, EngineConfig(seed=2), comm=comm)
    hist = rec.step(iterations, beta=0.9)
    rec.step(2, algorithm="raar", beta=0.8)
    shares = comm.comm.gather(rec.frames, root=0)
    if comm.rank == 0:
        np.savez(out, object=rec.result()["object"], probe=rec.result()["probe"],
                 fourier_error=np.array(rec.history["fourier_error"]),
                 exit_change=np.array(hist["exit_change"]), shares=np.array(shares),
                 size=comm.size)


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]))
