"""One reconstruction or benchmark run on every MPI rank (the CLI's worker side).

``run_recon(options)`` and ``run_bench(options)`` take a plain dict (picklable, so Spark
tasks can receive it) and are called on every rank; rank 0 prints and writes the outputs.
"""
from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

import numpy as np

from .engine import EngineConfig, Reconstructor, frame_range

SIM_KEYS = ("n_frames", "frame_size", "probe", "probe_diameter", "probe_defocus", "object",
            "scan", "overlap", "jitter", "photons", "bad_pixels", "beamstop", "seed")
ENGINE_KEYS = ("overlap_iterations", "probe_update_start", "probe_support", "object_inertia",
               "probe_inertia", "fourier_power_bound", "block_frames", "host_frames", "seed")


def load_share(options: dict, comm):
    """This rank's frames, from a CXI file or the simulator."""
    if options.get("cxi"):
        from .cxi import frame_count, read_cxi

        total = frame_count(options["cxi"])
        return read_cxi(options["cxi"], frame_range(total, comm.rank, comm.size))
    from .simulate import SimulationConfig, simulate

    sim = SimulationConfig(**{k: options[k] for k in SIM_KEYS if options.get(k) is not None})
    return simulate(sim, frame_range=frame_range(sim.n_frames, comm.rank, comm.size),
                    gpu=options.get("backend") == "cupy" and bool(options.get("gpu_simulation")))


def _engine_config(options: dict) -> EngineConfig:
    return EngineConfig(**{k: options[k] for k in ENGINE_KEYS if options.get(k) is not None})


def _log(comm, text: str) -> None:
    if comm.rank == 0:
        print(text, flush=True)


def run_recon(options: dict) -> dict:
    """Reconstruct and (rank 0) write recon.cxi, object.png, errors.png, summary.json."""
    from .comm import make_comm

    _select_device(options)
    comm = make_comm(options.get("comm", "auto"), options.get("backend", "numpy"))
    data = load_share(options, comm)
    rec = Reconstructor(data, _engine_config(options), backend=options.get("backend", "numpy"),
                        comm=comm, workers=options.get("threads", 1), local=True)
    total, chunk = int(options["iterations"]), max(1, int(options.get("report_every", 10)))
    params = {k: options.get(k) for k in ("beta", "gamma1", "gamma2")}
    t0 = time.perf_counter()
    done = 0
    while done < total:
        n = min(chunk, total - done)
        hist = rec.step(n, algorithm=options.get("algorithm", "dm"), **params)
        done += n
        rate = (time.perf_counter() - t0) / done
        _log(comm, f"iteration {done}/{total}  fourier_error {hist['fourier_error'][-1]:.4e}  "
                   f"exit_change {hist['exit_change'][-1]:.3e}  {rate:.3f} s/it  "
                   f"eta {rate * (total - done):.0f} s")
    seconds = time.perf_counter() - t0
    summary = {"iterations": total, "seconds": seconds, "ranks": comm.size,
               "backend": options.get("backend", "numpy"),
               "algorithm": options.get("algorithm", "dm"),
               "fourier_error": rec.history["fourier_error"][-1] if total else None,
               "exit_change": rec.history["exit_change"][-1] if total else None}
    result = rec.result()
    if data.truth_object is not None:
        summary["quality"] = rec.quality()
    if comm.rank == 0:
        out = Path(options.get("out") or "recon-out")
        out.mkdir(parents=True, exist_ok=True)
        _write_outputs(out, data, result, rec.history, summary, options)
        _log(comm, f"wrote {out}/recon.cxi, object.png, errors.png, summary.json")
        if "quality" in summary:
            q = summary["quality"]
            _log(comm, f"phase_rms {q['phase_rms']:.4f} rad  amplitude_nrmse "
                       f"{q['amplitude_nrmse']:.4f}  (well-illuminated region)")
    return summary


def _write_outputs(out: Path, data, result, history, summary, options) -> None:
    from .cxi import write_result_cxi
    from .plots import save_errors_png, save_object_png

    write_result_cxi(out / "recon.cxi", result, history, data.object_pixel_m,
                     source=options.get("cxi") or "simulation")
    save_object_png(result["object"], result["illumination"], out / "object.png")
    save_errors_png(history, out / "errors.png")
    (out / "summary.json").write_text(json.dumps(summary, indent=2, default=float))


def _select_device(options: dict) -> None:
    """One GPU per rank (local rank modulo device count), before any CUDA/NCCL call."""
    if options.get("backend") != "cupy":
        return
    import cupy

    local = next((int(os.environ[k]) for k in ("OMPI_COMM_WORLD_LOCAL_RANK", "MPI_LOCALRANKID",
                                                "PMI_RANK", "PMIX_RANK") if k in os.environ), 0)
    cupy.cuda.Device(local % cupy.cuda.runtime.getDeviceCount()).use()


def run_bench(options: dict) -> dict:
    """Time ``iterations`` DM iterations after ``warmup`` untimed ones (kernels compiled)."""
    from .comm import make_comm

    backend = options.get("backend", "numpy")
    _select_device(options)
    comm = make_comm(options.get("comm", "auto"), backend)
    t = time.perf_counter()
    data = load_share(options, comm)
    sim_s = time.perf_counter() - t
    rec = Reconstructor(data, _engine_config(options), backend=backend, comm=comm,
                        workers=options.get("threads", 1), local=True)
    algorithm = options.get("algorithm", "dm")
    rec.step(int(options.get("warmup", 2)), algorithm=algorithm)
    rec.ops.synchronize()
    comm.barrier()
    t0, c0 = time.perf_counter(), time.process_time()
    rec.step(int(options["iterations"]), algorithm=algorithm)
    rec.ops.synchronize()
    cpu = time.process_time() - c0  # this rank's CPU time: what an idle core would take
    comm.barrier()
    seconds = time.perf_counter() - t0
    report = {"rank": comm.rank, "frames": options["n_frames"], "shape": options["frame_size"],
              "iterations": int(options["iterations"]), "ranks": comm.size, "backend": backend,
              "algorithm": algorithm, "comm": getattr(comm, "kind", "serial"),
              "threads_per_rank": options.get("threads", 1),
              "seconds_total": seconds, "seconds_per_iteration": seconds / max(1, int(options["iterations"])),
              "cpu_seconds_rank0": cpu, "block_frames": rec.block, "streaming": rec.streaming,
              "warmup_iterations": int(options.get("warmup", 2)), "setup_seconds": sim_s,
              "fourier_error": rec.history["fourier_error"][-1],
              "loadavg_1min": os.getloadavg()[0], "python": sys.version.split()[0],
              "numpy": np.__version__}
    if backend == "cupy":
        import cupy

        report["device"] = cupy.cuda.runtime.getDeviceProperties(cupy.cuda.Device().id)["name"].decode()
        report["cupy"] = cupy.__version__
    return report
