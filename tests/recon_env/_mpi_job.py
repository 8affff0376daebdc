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


ISSUE14 = dict(n_frames=40, frame_size=32, probe_diameter=10, photons=1e6, seed=5,
               subpixel=True, position_error=1.0, mode_powers=(0.8, 0.2))
ISSUE14_ENGINE = dict(probe_modes=2, refine_positions=True, position_start=2, seed=2)


def job_views(iterations: int) -> dict | None:
    """Sub-pixel positions, two probe modes and position refinement, frames split."""
    from recon_env.comm import MPIComm
    from recon_env.engine import EngineConfig, Reconstructor
    from recon_env.simulate import simulate

    comm = MPIComm()
    rec = Reconstructor(simulate(**ISSUE14), EngineConfig(**ISSUE14_ENGINE), comm=comm)
    rec.step(iterations)
    result = rec.result()  # collective: gathers the refined positions
    if comm.rank != 0:
        return None
    return dict(object=result["object"], probe=result["probe"], positions=result["positions"],
                fourier_error=np.array(rec.history["fourier_error"]), size=comm.size)


if __name__ == "__main__":
    fn = job_views if sys.argv[3:] == ["views"] else job
    result = fn(int(sys.argv[2]))
    if result is not None:
        np.savez(sys.argv[1], **result)
