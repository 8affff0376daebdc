"""Simulate a scan, save it as CXI, reconstruct it with DM, then look at the result.

    python examples/recon_quickstart.py [OUT_DIR]

Same as `sparkmpi-dl recon --simulate --frames 128 --shape 64 --iterations 60`, written out
so that each step is visible. Add MPI ranks with `mpiexec -n 2 python examples/...`: the
frames are split over the ranks and the sums combined with Allreduce.
"""
import sys
from pathlib import Path

from recon_env.comm import make_comm
from recon_env.cxi import read_cxi, write_cxi
from recon_env.engine import EngineConfig, Reconstructor
from recon_env.plots import save_errors_png, save_object_png
from recon_env.simulate import SimulationConfig, simulate


def main(out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    comm = make_comm()  # serial, or MPI when started by mpiexec
    cxi = out / "scan.cxi"
    if comm.rank == 0:
        config = SimulationConfig(n_frames=128, frame_size=64, probe_diameter=20, photons=1e7,
                                  scan="fermat", overlap=0.75, bad_pixels=0.01, seed=0)
        write_cxi(cxi, simulate(config))
    comm.barrier()
    data = read_cxi(cxi)  # every rank reads the file; the engine keeps its own frames
    rec = Reconstructor(data, EngineConfig(seed=0), comm=comm)
    for chunk in range(6):
        hist = rec.step(10)  # plain DM (beta=1); see recon_schedule.py for other settings
        if comm.rank == 0:
            print(f"iteration {rec.iteration}: model error {hist['model_error']:.2e}, "
                  f"phase rms {rec.quality()['phase_rms']:.3f} rad")
    if comm.rank == 0:
        result = rec.result()
        save_object_png(result["object"], result["illumination"], out / "object.png")
        save_errors_png(rec.history, out / "errors.png")
        print(f"wrote {out}/object.png and errors.png")


if __name__ == "__main__":
    main(Path(sys.argv[1] if len(sys.argv) > 1 else "recon-quickstart"))
