"""`sparkmpi-dl recon ...` and `sparkmpi-dl bench recon ...`.

With ``--ranks N`` (N > 1) and not already inside an MPI job, the command re-launches
itself as N ranks (the project's ``sparkmpi_dl.mpirun`` when present, else ``mpiexec``);
with ``--spark`` the ranks are Spark barrier tasks (``sparkmpi_dl.run``).
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

from sparkmpi_dl.config import Flag, add_dataclass_flags, comma_separated, field_docs
from sparkmpi_dl.flags import positive_int
from sparkmpi_dl.launch.environment import in_mpi_job

from .engine import EngineConfig
from .options import RunOptions
from .simulate import SimulationConfig



def _shape(text: str) -> int:
    """'128' or '128x128' -> 128 (frames are square)."""
    parts = text.lower().split("x")
    if len(parts) == 2 and parts[0] != parts[1]:
        raise argparse.ArgumentTypeError(f"frames must be square, got {text}")
    try:
        value = int(parts[0])
    except ValueError as err:
        raise argparse.ArgumentTypeError(f"not a frame size: {text!r}") from err
    if value < 8:
        raise argparse.ArgumentTypeError(f"frame size must be >= 8, got {value}")
    return value


class _SparkMaster(argparse.Action):
    """``--master URL`` means the ranks run in Spark: it sets ``--spark`` too."""

    def __call__(self, parser, namespace, values, option_string=None) -> None:
        setattr(namespace, self.dest, values)
        namespace.spark = True


# How a field's flag differs from ``--field-name`` (sparkmpi_dl.config). The flags a field
# had without a default (None: the simulator's or the engine's) still parse to None when not
# given (unset_is_none), so the configs' own defaults apply as before.
RUN_FLAGS = {
    "save_simulation": Flag(metavar="FILE"), "report_every": Flag(type=positive_int),
    "overwrite": Flag(action="store_true"), "agent": Flag(metavar="RUN_DIR"),
    "agent_every": Flag(type=positive_int, metavar="K"),
    "json": Flag(action="store_true"),
    "ranks": Flag(names=("-n", "--num-proc"), hidden=("--ranks",), type=positive_int,
                  metavar="N"),
    "spark": Flag(action="store_true"), "threads": Flag(type=positive_int),
    "gpu_simulation": Flag(action="store_true"),
}
SIM_FLAGS = {
    "n_frames": Flag(names=("--frames",), type=positive_int),
    "frame_size": Flag(names=("--frame-size",), hidden=("--shape",), type=_shape,
                       metavar="PIXELS"),
    "seed": Flag(help="simulation noise and engine start seed"),
    "position_error": Flag(metavar="PX"),
    "mode_powers": Flag(type=comma_separated(float, example="0.7,0.2,0.1"),
                        metavar="F1,F2,.."),
}
ENGINE_FLAGS = {
    "fourier_power_bound": Flag(names=("--power-bound",)),
    "subpixel": Flag(help="simulation: fractional scan positions; reconstruction: model them "
                     "(--no-subpixel rounds)", default_text="on when the positions are fractional"),
    "refine_positions": Flag(action="store_true", help="refine every frame's position (written "
                             "to recon.cxi, drawn in positions.png)"),
    "position_start": Flag(metavar="N"),
    "position_step_max": Flag(names=("--position-step",), metavar="PX"),
    "probe_modes": Flag(type=positive_int, metavar="K", help="reconstruct K incoherent probe "
                        "modes (power fractions in summary.json and modes.png)"),
    "overlap_iterations": Flag(type=positive_int), "block_frames": Flag(type=positive_int),
    "host_frames": Flag(action="store_true", help="with --backend cupy: keep frames in host "
                        "memory, stream blocks", default_text="only when they do not fit the GPU"),
    "deterministic": Flag(names=("--gpu-atomics",), action="store_false",
                          help="with --backend cupy: float atomics for the object sums instead "
                          "of the ordered gather (results then vary in the last bits from run "
                          "to run; not faster on an H200)"),
}
# flags both commands have (bench recon always simulates, and only times the engine)
COMMON_RUN = ("ranks", "spark", "backend", "threads", "comm", "algorithm", "gpu_simulation")
COMMON_ENGINE = ("overlap_iterations", "probe_update_start", "block_frames", "host_frames",
                 "deterministic")
# flags whose value is None unless given (the dataclass default applies later)
RECON_SIM_UNSET = ("scan", "probe", "object", "overlap", "jitter", "bad_pixels",
                   "position_error", "mode_powers")
RECON_ENGINE = ("probe_support", "fourier_power_bound", "subpixel", "refine_positions",
                "position_start", "position_step_max", "probe_modes", *COMMON_ENGINE)


def _add_run(p: argparse.ArgumentParser, only: tuple[str, ...], **kwargs) -> None:
    """``only`` of the RunOptions flags, then ``--master`` (it sets --spark as well)."""
    add_dataclass_flags(p, RunOptions, flags={**RUN_FLAGS, **kwargs.pop("flags", {})},
                        only=only, **kwargs)
    p.add_argument("--master", default=None, action=_SparkMaster,
                   help=field_docs(RunOptions)["master"])


def register(commands, bench) -> None:
    p = commands.add_parser("recon", help="ptychographic reconstruction (DM / RAAR)",
                            description="Reconstruct a ptychography scan from a CXI file or "
                            "simulated data; writes recon.cxi, object.png, errors.png, "
                            "summary.json to --out.")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--cxi", metavar="FILE", help="CXI input file")
    src.add_argument("--simulate", action="store_true", help="simulate the data (see --frames...)")
    _add_run(p, ("iterations", "algorithm", "beta", "gamma1", "gamma2", "save_simulation",
                 "report_every", "out", "overwrite", "agent", "agent_every", *COMMON_RUN))
    sim = p.add_argument_group("simulation (with --simulate)")
    add_dataclass_flags(sim, SimulationConfig, flags=SIM_FLAGS,
                        only=("n_frames", "frame_size", "photons", "seed"))
    add_dataclass_flags(sim, SimulationConfig, flags=SIM_FLAGS, only=RECON_SIM_UNSET,
                        unset_is_none=True)
    engine = p.add_argument_group("reconstruction engine")
    add_dataclass_flags(engine, EngineConfig, flags=ENGINE_FLAGS, only=RECON_ENGINE,
                        unset_is_none=True)
    p.set_defaults(func=recon_command)

    b = bench.add_parser("recon", help="seconds per DM iteration on simulated data")
    _add_run(b, ("iterations", "warmup", "json", *COMMON_RUN),
             flags={"iterations": Flag(type=positive_int, help="timed iterations")})
    sim = b.add_argument_group("simulation")
    add_dataclass_flags(sim, SimulationConfig, flags=SIM_FLAGS,
                        only=("n_frames", "frame_size", "photons", "seed"))
    engine = b.add_argument_group("reconstruction engine")
    add_dataclass_flags(engine, EngineConfig, flags=ENGINE_FLAGS, only=COMMON_ENGINE,
                        unset_is_none=True)
    b.set_defaults(func=bench_command, probe_diameter=None)


def _options(args: argparse.Namespace) -> dict:
    opts = {k: v for k, v in vars(args).items() if k != "func"}
    opts["argv"] = ["sparkmpi-dl", *(getattr(args, "argv", None) or sys.argv[1:])]
    if opts.get("frame_size") and not opts.get("probe_diameter"):
        opts["probe_diameter"] = opts["frame_size"] * 40 / 128
    return opts


def _inside_mpi() -> bool:
    return in_mpi_job()


def _relaunch(args: argparse.Namespace, env: dict[str, str] | None = None) -> int:
    """Run this same command as ``args.ranks`` MPI ranks (each with --ranks 1)."""
    # each rank runs the same command as one rank: a later -n wins over the one given
    cmd = [sys.executable, "-m", "recon_env.cli", *sys.argv[1:], "-n", "1"]
    if os.environ.get("RECON_ENV_LAUNCHER", "auto") != "mpiexec":
        try:
            from sparkmpi_dl import mpirun
        except (ImportError, AttributeError):
            pass
        else:
            return int(mpirun(cmd, args.ranks, env=env))
    mpiexec = Path(sys.executable).parent / "mpiexec"  # this environment's, not the PATH's
    if not os.access(mpiexec, os.X_OK):
        print(f"error: -n needs sparkmpi_dl.mpirun or {mpiexec}", file=sys.stderr)
        return 2
    return subprocess.call([mpiexec, "-n", str(args.ranks), *cmd], env={**os.environ, **(env or {})})


def _spark(fn, args: argparse.Namespace) -> list:
    import sparkmpi_dl

    # the executors' interpreter is chosen and checked by the launcher (spark_context)
    return sparkmpi_dl.run(fn, args.ranks, args=(_options(args),), master=args.master)


def _spark_cxi(args: argparse.Namespace) -> int:
    """``recon --cxi F --spark``: Spark tasks read the frames (one partition per rank, each
    task its own slice: ``spark_frames.read_cxi_frames``) and the ranks receive them through
    the data plane (``sparkmpi_dl.run(fn, data=frames)``); only the small metadata goes
    from the driver to the ranks, and no rank opens the file."""
    from .errors import CXIFormatError
    from .runner import cxi_file, run_recon_on_frames
    from .spark_frames import read_cxi_frames, read_geometry

    try:  # a bad file or too many ranks: one line, before Spark starts
        geometry = read_geometry(args.cxi)
        if geometry.n_frames < args.ranks:
            raise ValueError(f"{geometry.n_frames} frames cannot be split over {args.ranks} "
                             f"ranks (use --ranks {geometry.n_frames} or fewer)")
    except (CXIFormatError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    import sparkmpi_dl
    from pyspark.sql import SparkSession
    from sparkmpi_dl.launch.spark import spark_context

    sc = spark_context(None, args.master)  # a wrong --master: one line (SparkSetupError)
    spark = SparkSession.getActiveSession() or SparkSession(sc)
    frames = read_cxi_frames(spark, args.cxi, args.ranks)
    print(f"Spark tasks read {geometry.n_frames} frames of {geometry.frame_size}x"
          f"{geometry.frame_size} from {args.cxi} into {args.ranks} partitions, one per rank",
          flush=True)
    options = {**_options(args), "cxi_file": cxi_file(args.cxi)}
    try:
        sparkmpi_dl.run(run_recon_on_frames, data=frames, args=(options, geometry))
    except sparkmpi_dl.JobFailed as err:
        problem = _task_cxi_error(err)
        if problem is None:
            raise
        print(f"error: {problem}", file=sys.stderr)  # a frame a Spark task could not read
        return 2
    return 0


def _task_cxi_error(err: BaseException | None) -> str | None:
    """The CXIFormatError line of a Spark task that failed reading frames (e.g. a NaN in a
    frame), found in the Spark error the job failure was raised from; None if there is none."""
    marker = "CXIFormatError: "
    seen: set[int] = set()
    while err is not None and id(err) not in seen and getattr(err, "failure", None) is None:
        seen.add(id(err))
        for line in str(err).splitlines():
            if marker in line:
                return line.split(marker, 1)[1].strip()
        err = err.__cause__ or err.__context__
    return None


def recon_command(args: argparse.Namespace) -> int:
    from .engine import check_parameters

    if args.iterations < 0:
        print("error: --iterations must be >= 0", file=sys.stderr)
        return 2
    if args.beta is not None or args.gamma1 is not None or args.gamma2 is not None:
        try:
            check_parameters(args.algorithm, args.beta if args.beta is not None else 1.0,
                             args.gamma1 or 0.0, args.gamma2 or 0.0)
        except ValueError as err:
            print(f"error: {err}", file=sys.stderr)
            return 2
    if args.agent:
        try:  # a wrong --agent fails here, in one line, before any rank starts
            from .runner import load_agent

            load_agent(args.agent)
        except ValueError as err:
            print(f"error: --agent: {err}", file=sys.stderr)
            return 2
    if os.environ.get(RUN_OPENED) != os.path.abspath(args.out) and _rank_zero():
        try:
            _open_out(args)
        except ValueError as err:
            print(f"error: {err}", file=sys.stderr)
            return 2
    if args.spark and args.cxi:
        return _spark_cxi(args)
    if args.spark:
        from .runner import run_recon

        _spark(run_recon, args)
        return 0
    if args.ranks > 1 and not _inside_mpi():
        if args.simulate and args.save_simulation:
            _save_simulation(args)
        return _relaunch(args, env={RUN_OPENED: os.path.abspath(args.out)})
    from .errors import CXIFormatError, ReconstructionDiverged
    from .runner import run_recon

    if args.simulate and args.save_simulation and not _inside_mpi():
        _save_simulation(args)
    try:
        run_recon(_options(args))
    except (CXIFormatError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except ReconstructionDiverged as err:
        print(f"error: {err}", file=sys.stderr)
        return 3
    except MemoryError as err:
        print(f"error: out of memory reconstructing {_source(args)}"
              f"{f' ({err})' if str(err) else ''}; try more --ranks or a smaller scan",
              file=sys.stderr)
        return 1
    return 0


# set by the process that opened --out, so that the ranks it starts do not refuse the folder
RUN_OPENED = "RECON_ENV_RUN_OPENED"
OUTPUT_FILES = ("recon.cxi", "object.png", "errors.png", "summary.json", "run.json")


def _source(args: argparse.Namespace) -> str:
    return args.cxi if args.cxi else "simulated data"


def _rank_zero() -> bool:
    """Not inside MPI, or MPI rank 0 (under a user's own mpiexec only rank 0 opens --out)."""
    rank = next((os.environ[k] for k in ("PMI_RANK", "OMPI_COMM_WORLD_RANK", "PMIX_RANK")
                 if k in os.environ), "0")
    return rank == "0"


def _open_out(args: argparse.Namespace) -> None:
    """Refuse a non-empty --out (one line) unless --overwrite, which removes only the files an
    earlier recon run wrote; record this run's arguments in run.json (sparkmpi_dl.runs)."""
    from sparkmpi_dl.runs import open_run

    out = args.out
    if not args.overwrite and os.path.isdir(out) and os.listdir(out):
        raise ValueError(f"--out {out} is not empty; pass --overwrite to replace an earlier "
                         "recon run there, or choose another --out")
    if args.overwrite and os.path.isdir(out):
        others = sorted(set(os.listdir(out)) - set(OUTPUT_FILES))
        if others:
            raise ValueError(f"--overwrite: {out} holds files that no recon run wrote "
                             f"({', '.join(others[:3])}{', ...' if len(others) > 3 else ''}); "
                             "choose another --out")
        for name in OUTPUT_FILES:
            if os.path.exists(os.path.join(out, name)):
                os.remove(os.path.join(out, name))
    config = {k: v for k, v in vars(args).items() if k != "func"}
    open_run(out, "recon", config, resume=False, resume_flag="--overwrite",
             folder_flag="--out")


def _save_simulation(args: argparse.Namespace) -> None:
    from .cxi import write_cxi
    from .runner import config_from
    from .simulate import simulate

    data = simulate(config_from(SimulationConfig, _options(args)))
    write_cxi(args.save_simulation, data)
    print(f"wrote simulated data to {args.save_simulation}", flush=True)


def bench_command(args: argparse.Namespace) -> int:
    from .runner import run_bench

    if args.spark:
        report = _spark(run_bench, args)[0]
    elif args.ranks > 1 and not _inside_mpi():
        # rank 0 leaves its report in a file, so that launcher prefixes ("[rank 0] ...")
        # never mix into the one JSON line printed here
        import tempfile

        with tempfile.TemporaryDirectory() as tmp:
            path = os.path.join(tmp, "report.json")
            code = _relaunch(args, env={"RECON_ENV_REPORT": path})
            if code != 0 or not os.path.exists(path):
                return code or 1
            with open(path) as f:
                report = json.load(f)
    else:
        report = run_bench(_options(args))
        if report["rank"] != 0:
            return 0
        if os.environ.get("RECON_ENV_REPORT"):
            with open(os.environ["RECON_ENV_REPORT"], "w") as f:
                json.dump(report, f)
            return 0
    if args.json:
        print(json.dumps(report), flush=True)
    else:
        print(f"{report['frames']} frames {report['shape']}^2, {report['iterations']} "
              f"{report['algorithm']} iterations, {report['ranks']} rank(s), {report['backend']}: "
              f"{report['seconds_per_iteration']:.4f} s/iteration, "
              f"{report['seconds_total']:.2f} s total (after {report['warmup_iterations']} "
              f"warm-up iterations)", flush=True)
    return 0


def main(argv: list[str] | None = None) -> int:
    """Stand-alone entry (``python -m recon_env.cli recon ...``): only this area's commands,
    so it runs where the other areas' dependencies (TensorFlow, pyspark) are missing."""
    parser = argparse.ArgumentParser(prog="recon_env")
    commands = parser.add_subparsers(dest="command", required=True)
    bench = commands.add_parser("bench").add_subparsers(dest="bench", required=True)
    register(commands, bench)
    args = parser.parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)  # recorded in summary.json
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
