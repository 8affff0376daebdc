"""One reconstruction or benchmark run on every MPI rank (the CLI's worker side).

``run_recon(options)`` and ``run_bench(options)`` take a plain dict (picklable, so Spark
tasks can receive it) and are called on every rank; rank 0 prints and writes the outputs.
Its keys are the field names of the documented configs the CLI's flags come from:
``options.RunOptions``, ``simulate.SimulationConfig`` and ``engine.EngineConfig``
(:func:`config_from` picks each config's fields out of it).
"""
from __future__ import annotations

import json
import os
import sys
import time
import warnings
from collections.abc import Mapping
from dataclasses import asdict, fields
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from .engine import EngineConfig, Reconstructor, frame_range
from .errors import NegativeIntensityWarning
from sparkmpi_dl import plugins

C = TypeVar("C")


def config_from(cls: type[C], options: Mapping[str, Any]) -> C:
    """The config dataclass ``cls`` (SimulationConfig, EngineConfig) the options dict
    describes: each of its fields given in ``options`` and not None, the others at their
    defaults (a flag not given parses to None; other keys belong to other configs)."""
    names = {f.name for f in fields(cls) if f.init}  # type: ignore[arg-type]
    return cls(**{k: v for k, v in options.items() if k in names and v is not None})


def source_name(options: dict) -> str:
    """What the data came from, for messages: the CXI file or 'simulated data'."""
    return str(options["cxi"]) if options.get("cxi") else "simulated data"


def _check_split(total: int, comm) -> None:
    if total < comm.size:
        raise ValueError(f"{total} frames cannot be split over {comm.size} ranks "
                         f"(use --ranks {max(total, 1)} or fewer)")


def load_share(options: dict, comm):
    """This rank's frames, from a CXI file or the simulator."""
    if options.get("cxi"):
        from .cxi import frame_count, read_cxi

        total = frame_count(options["cxi"])
        if total == 0:
            from .cxi import DET
            from .errors import CXIFormatError

            raise CXIFormatError(str(options["cxi"]), DET + "/data", "holds no frames")
        _check_split(total, comm)
        return read_cxi(options["cxi"], frame_range(total, comm.rank, comm.size))
    from .simulate import SimulationConfig, simulate

    sim = config_from(SimulationConfig, options)
    _check_split(sim.n_frames, comm)
    return simulate(sim, frame_range=frame_range(sim.n_frames, comm.rank, comm.size),
                    gpu=options.get("backend") == "cupy" and bool(options.get("gpu_simulation")))


def load_agent(spec: str):
    """The steering agent named by ``--agent`` (a run folder or 'pretrained').

    The agents package sits above recon_env (core <- recon_env <- agents): it declares its
    steering module as the entry point ``recon_env.steering`` (pyproject.toml), loaded here
    on demand; the interface used is ``load_agent(spec)`` and
    ``steer(reconstructor, agent, every=, iterations=, on_step=)``."""
    try:
        steering = plugins.load(plugins.STEERING)
    except (ImportError, plugins.PluginMissing) as err:
        raise ValueError(f"--agent needs the project's agents package ({err})") from err
    return steering, steering.load_agent(spec)


def _warn_negative_all_ranks(data, comm, options: dict) -> None:
    """One warning line (rank 0) counting the negative intensities of all ranks."""
    neg = data.intensities < 0
    first = int(data.meta.get("frames", (0, 0))[0])
    mine = (int(np.count_nonzero(neg)),
            (np.flatnonzero(neg.reshape(data.n_frames, -1).any(axis=1)) + first).tolist(),
            float(data.intensities.min()) if neg.any() else 0.0)
    every = comm.allgather(mine)
    count = sum(c for c, _, _ in every)
    if count == 0:
        return
    frames = sorted(f for _, fs, _ in every for f in fs)
    total = int(data.meta.get("total_frames", data.n_frames))
    shown = ", ".join(map(str, frames[:5])) + (", ..." if len(frames) > 5 else "")
    _warn(comm, f"{source_name(options)}: {count} negative intensity values in {len(frames)} "
                f"of {total} frames (frames {shown}; min {min(m for _, _, m in every):.4g}); "
                "they are treated as 0")


def _warn(comm, text: str) -> None:
    """One 'warning: ...' line on stderr, from rank 0 only."""
    if comm.rank == 0:
        print(f"warning: {text}", file=sys.stderr, flush=True)


def _engine_config(options: dict) -> EngineConfig:
    return config_from(EngineConfig, options)


def _log(comm, text: str) -> None:
    if comm.rank == 0:
        print(text, flush=True)


def run_recon_on_frames(table, options: dict, geometry) -> dict:
    """``run_recon`` on the frames the data plane handed this rank (``recon --cxi F --spark``):
    ``table`` is this rank's partition of ``spark_frames.read_cxi_frames``, ``geometry`` the
    scan's metadata read on the driver; the rank never opens the CXI file."""
    from .spark_frames import frames_to_data

    return run_recon(options, share=lambda comm: frames_to_data(table, geometry))


def run_recon(options: dict, share=None) -> dict:
    """Reconstruct and (rank 0) write recon.cxi, object.png, errors.png, summary.json.

    ``share(comm)``, when given, returns this rank's frames instead of ``load_share``."""
    from .comm import make_comm

    _select_device(options)
    comm = make_comm(options.get("comm", "auto"), options.get("backend", "numpy"))
    steering, agent = load_agent(options["agent"]) if options.get("agent") else (None, None)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", NegativeIntensityWarning)
        data = share(comm) if share is not None else load_share(options, comm)
    for w in caught:
        if not issubclass(w.category, NegativeIntensityWarning):
            warnings.showwarning(w.message, w.category, w.filename, w.lineno)
        elif comm.size == 1:
            _warn(comm, str(w.message))
    if comm.size > 1:  # each rank saw its share: rank 0 reports the whole job's count
        _warn_negative_all_ranks(data, comm, options)
    try:
        rec = Reconstructor(data, _engine_config(options), backend=options.get("backend", "numpy"),
                            comm=comm, workers=options.get("threads", 1), local=True)
    except ValueError as err:  # e.g. no photons: say which input
        raise ValueError(f"{source_name(options)}: {err}") from err
    total, chunk = int(options["iterations"]), max(1, int(options.get("report_every", 10)))
    params: dict[str, Any] = {k: options.get(k) for k in ("beta", "gamma1", "gamma2")}
    t0 = time.perf_counter()
    schedule = None
    if steering is not None and agent is not None:
        every = int(options.get("agent_every") or agent.every)

        def report(entry: dict, hist: dict) -> None:
            done = entry["start"] + entry["iterations"]
            rate = (time.perf_counter() - t0) / done
            _log(comm, f"iteration {done}/{total}  agent: {entry['algorithm']} beta "
                       f"{entry['beta']:.2f}  model_error {entry['model_error']:.4e}  "
                       f"fourier_error {hist['fourier_error'][-1]:.4e}  {rate:.3f} s/it")

        schedule = steering.steer(rec, agent, every=every, iterations=total, on_step=report)
    done = total if agent is not None else 0
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
               "algorithm": "agent" if agent is not None else options.get("algorithm", "dm"),
               "fourier_error": rec.history["fourier_error"][-1] if total else None,
               "exit_change": rec.history["exit_change"][-1] if total else None,
               "model_error": rec.model_error(),
               "pixel_size_m": data.object_pixel_m,
               "inputs": _inputs(options, data, rec, comm, agent)}
    if schedule is not None:
        summary["schedule"] = schedule
    result = rec.result()
    from .refine_outputs import summary_entries

    summary.update(summary_entries(rec, data, result))
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


def _inputs(options: dict, data, rec, comm, agent) -> dict:
    """Everything needed to repeat the run: the input (file or simulation parameters), seed,
    algorithm and relaxation, engine settings, ranks, backend and the steering agent."""
    inputs: dict = {"iterations": int(options["iterations"]), "seed": options.get("seed", 0),
                    "algorithm": options.get("algorithm", "dm"),
                    **{k: options.get(k) for k in ("beta", "gamma1", "gamma2")},
                    "engine": asdict(rec.config), "ranks": comm.size,
                    "backend": options.get("backend", "numpy"),
                    "threads": options.get("threads", 1), "comm": getattr(comm, "kind", "serial"),
                    "argv": options.get("argv")}
    if options.get("cxi"):
        # the Spark path's ranks never open the file: the driver stat()ed it for them
        seen = options.get("cxi_file") or cxi_file(options["cxi"])
        inputs["cxi"] = {**seen,
                         "frames": int(data.meta.get("total_frames", data.n_frames)),
                         "frame_size": data.frame_shape[0]}
    else:
        inputs["simulation"] = dict(data.meta.get("simulation", {}))
    if agent is not None:
        inputs["algorithm"] = "agent"
        inputs["agent"] = {"source": agent.source, "every": int(options.get("agent_every")
                                                                or agent.every),
                           "trained": agent.trained}
    return inputs


def cxi_file(path) -> dict:
    """The input file as summary.json records it: absolute path, size and mtime."""
    resolved = Path(path).resolve()
    stat = resolved.stat()
    return {"path": str(resolved), "bytes": stat.st_size, "mtime": stat.st_mtime}


def _jsonable(value):
    if isinstance(value, (np.integer, np.floating)):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    return str(value)


def _write_outputs(out: Path, data, result, history, summary, options) -> None:
    from .cxi import write_result_cxi
    from .plots import save_errors_png, save_object_png

    write_result_cxi(out / "recon.cxi", result, history, data.object_pixel_m,
                     source=options.get("cxi") or "simulation")
    steered = "schedule" in summary
    what = "agent-steered" if steered else summary["algorithm"].upper()
    beta = options.get("beta")
    if not steered and beta is not None:
        what += f" beta {beta:g}"
    title = f"{what}, {summary['iterations']} iterations"
    if "quality" in summary:
        title += f"  (true phase RMS {summary['quality']['phase_rms']:.3f} rad)"
    save_object_png(result["object"], result["illumination"], out / "object.png",
                    pixel_m=data.object_pixel_m, title=title, probe=result["probe"],
                    truth=data.truth_object)
    save_errors_png(history, out / "errors.png", schedule=summary.get("schedule"), title=title)
    from .refine_outputs import save_figures

    save_figures(out, data, result, summary)  # positions.png, modes.png when they apply
    (out / "summary.json").write_text(json.dumps(summary, indent=2, default=_jsonable) + "\n")


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
    # seconds per iteration = slope between a short and the full run: the per-call costs
    # (the closing model error, synchronisation) cancel
    short = max(1, int(options["iterations"]) // 4)
    comm.barrier()
    t_short = time.perf_counter()
    rec.step(short, algorithm=algorithm)
    rec.ops.synchronize()
    comm.barrier()
    t_short = time.perf_counter() - t_short
    t0, c0 = time.perf_counter(), time.process_time()
    rec.step(int(options["iterations"]), algorithm=algorithm)
    rec.ops.synchronize()
    cpu = time.process_time() - c0  # this rank's CPU time: what an idle core would take
    comm.barrier()
    seconds = time.perf_counter() - t0
    iters = int(options["iterations"])
    slope = (seconds - t_short) / (iters - short) if iters > short else seconds / iters
    report = {"rank": comm.rank, "frames": options["n_frames"], "shape": options["frame_size"],
              "iterations": int(options["iterations"]), "ranks": comm.size, "backend": backend,
              "algorithm": algorithm, "comm": getattr(comm, "kind", "serial"),
              "threads_per_rank": options.get("threads", 1),
              "seconds_total": seconds, "seconds_per_iteration": slope,
              "seconds_per_iteration_mean": seconds / max(1, iters),
              "slope_iterations": [short, iters],
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
