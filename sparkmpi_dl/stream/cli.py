"""``sparkmpi-dl stream publish | recon | broker`` and ``sparkmpi-dl bench stream``."""
from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from sparkmpi_dl.config import Flag, add_dataclass_flags, from_args
from sparkmpi_dl.flags import add_frame_size, add_num_proc, positive_int

from .publish import PublishOptions
from .records import DEFAULT_PREFIX


def _count(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {value}")
    return value


def _seconds(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be > 0 seconds, got {text}")
    return value


def _fraction(text: str) -> float:
    value = float(text)
    if not 0 <= value <= 1:
        raise argparse.ArgumentTypeError(f"must be in [0, 1], got {text}")
    return value


def _add_broker(p: argparse.ArgumentParser) -> None:
    p.add_argument("--broker", metavar="redis://HOST:PORT",
                   help="a running Redis; default: the broker an earlier 'stream' command "
                        "started and recorded, or a new embedded one (left running)")
    p.add_argument("--prefix", default=DEFAULT_PREFIX,
                   help=f"stream name prefix (default {DEFAULT_PREFIX}): streams PREFIX:frames:K")


def _add_simulation(p: argparse.ArgumentParser) -> None:
    from recon_env.cli import _shape

    g = p.add_argument_group("simulation (with --simulate)")
    g.add_argument("--frames", dest="n_frames", type=positive_int, default=512,
                   help="diffraction frames")
    add_frame_size(g, type=_shape, default=128, help="detector pixels per side")
    g.add_argument("--photons", type=float, default=1e8, help="photons per frame")
    g.add_argument("--scan", choices=("fermat", "raster", "concentric"),
                   help="scan pattern (default: the simulator's)")
    g.add_argument("--probe", choices=("airy", "gaussian"),
                   help="probe shape (default: the simulator's)")
    g.add_argument("--object", help="built-in (mixed, siemens, cells, rings, flat) or image file")
    g.add_argument("--overlap", type=float, help="probe overlap fraction")
    g.add_argument("--jitter", type=float, help="scan position jitter")
    g.add_argument("--seed", type=int, default=0, help="simulation noise seed")


def simulation_options(args: argparse.Namespace) -> dict[str, Any]:
    """SimulationConfig fields from the CLI flags (probe size scaled like `recon`)."""
    sim = {k: getattr(args, k) for k in ("n_frames", "frame_size", "photons", "scan", "probe",
                                         "object", "overlap", "jitter", "seed")
           if getattr(args, k, None) is not None}
    sim["probe_diameter"] = sim["frame_size"] * 40 / 128
    return sim


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser],
             bench: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    stream = commands.add_parser("stream", help="live reconstruction: publish frames to a "
                                 "broker, reconstruct them as they arrive (Spark streaming + MPI)")
    sub = stream.add_subparsers(dest="stream_command", metavar="STREAM_COMMAND", required=True)

    p = sub.add_parser("publish", help="publish a scan (CXI file or simulation) at a frame rate",
                       description="Publish one scan to K Redis streams: a start record (probe, "
                       "geometry, frame count), the frames with their positions (frame i to "
                       "stream i %% K) at --rate frames/s, then an end-of-scan record. Frames "
                       "are never dropped: at --max-len unconsumed entries in a stream the "
                       "publisher waits for the consumer.")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--cxi", metavar="FILE", help="CXI file to publish")
    src.add_argument("--simulate", action="store_true", help="simulate the scan (see below)")
    add_dataclass_flags(p, PublishOptions, exclude=("prefix", "progress_every_s"), defaults={
        "rate": 100.0}, flags={"rate": Flag(metavar="FRAMES_PER_S"),
                               "streams": Flag(type=positive_int, metavar="K"),
                               "max_len": Flag(type=positive_int),
                               "backlog_timeout_s": Flag(names=("--backlog-timeout",), type=_seconds,
                                                         metavar="S")})
    p.add_argument("--scan-id", dest="scan_id", help="scan id (default: scan-<time>-<random>)")
    _add_broker(p)
    _add_simulation(p)
    p.set_defaults(func=publish_command)

    r = sub.add_parser("recon", help="reconstruct the published scan live (Spark streaming "
                       "micro-batches handed to MPI ranks)",
                       description="A Spark streaming query reads the scan's frames from the "
                       "broker; every micro-batch goes to the MPI ranks, which continue the "
                       "reconstruction with the new frames. Writes a phase PNG, TensorBoard "
                       "events and a line per batch, then after the end-of-scan record the "
                       "final iterations, recon.cxi, object.png, errors.png and summary.json. "
                       "Run the same command again after a crash to resume.")
    add_num_proc(r, dest="ranks", type=positive_int, default=2, help="MPI ranks (default 2)")
    r.add_argument("--trigger", type=_seconds, default=2.0, metavar="SECONDS",
                   help="micro-batch interval (default 2)")
    r.add_argument("--out", required=True, metavar="DIR",
                   help="output folder; it also holds the checkpoint a restart resumes from")
    r.add_argument("--backend", choices=("numpy", "cupy"), default="numpy",
                   help="array library (cupy: NVIDIA GPU)")
    r.add_argument("--agent", metavar="RUN_DIR",
                   help="a trained tuning agent ('agent train' run folder, or 'pretrained') "
                        "picks algorithm and beta for each batch's iterations")
    r.add_argument("--agent-every", dest="agent_every", type=positive_int, metavar="K",
                   help="iterations between the agent's decisions (default: its training's)")
    r.add_argument("--iterations-per-batch", dest="iterations_per_batch", type=_count, default=5,
                   help="iterations run on each micro-batch's frames")
    r.add_argument("--final-iterations", dest="final_iterations", type=_count, default=50,
                   help="iterations after the end-of-scan record")
    r.add_argument("--end-timeout", dest="end_timeout", type=_seconds, default=120.0,
                   metavar="S", help="give up (saving the partial result) when no data came "
                   "for S seconds and no end-of-scan record (default 120)")
    r.add_argument("--start-fraction", dest="start_fraction", type=_fraction, default=0.5,
                   metavar="F", help="iterate once this fraction of the scan's frames is in "
                   "(a few frames give an ill-posed start that later frames do not repair)")
    r.add_argument("--algorithm", choices=("dm", "raar"), default="dm",
                   help="without --agent: the algorithm of every iteration")
    r.add_argument("--beta", type=float, help="without --agent: the relaxation beta")
    r.add_argument("--threads", type=positive_int, default=1, help="threads per rank (numpy)")
    r.add_argument("--master", help="Spark master (default local[max(ranks, cores)])")
    _add_broker(r)
    r.set_defaults(func=recon_command)

    b = sub.add_parser("broker", help="the embedded Redis broker: start, stop, status")
    b.add_argument("action", choices=("start", "stop", "status"))
    b.set_defaults(func=broker_command)

    bb = bench.add_parser("stream", help="live pipeline: sustained ingest, end-of-scan "
                          "latency, empty-batch overhead")
    from .bench import add_arguments

    add_arguments(bb)


def _error(text: str, code: int = 2) -> int:
    print(f"error: {text}", file=sys.stderr, flush=True)
    return code


def publish_command(args: argparse.Namespace) -> int:
    from recon_env.errors import CXIFormatError

    from .broker import BrokerError, resolve
    from .publish import BacklogTimeout, cxi_scan, publish, simulated_scan

    opts = from_args(PublishOptions, args, rate=args.rate or None)
    try:
        opts.check()
        broker = resolve(args.broker)
        scan = (cxi_scan(args.cxi, args.scan_id) if args.cxi
                else simulated_scan(simulation_options(args), args.scan_id))
        print(f"publishing scan {scan.start.scan}: {scan.start.n_frames} frames "
              f"{scan.start.frame_shape[0]}x{scan.start.frame_shape[1]} {scan.start.dtype} to "
              f"{args.streams} streams at {broker.url}"
              f"{f' at {args.rate:g} frames/s' if args.rate else ''}", flush=True)
        stats = publish(broker.client(), scan, opts)
    except (BrokerError, CXIFormatError, ValueError) as err:
        return _error(str(err))
    except BacklogTimeout as err:
        return _error(str(err), 3)
    except KeyboardInterrupt:
        return _error("interrupted: the scan has no end-of-scan record", 130)
    print(f"published {stats['frames']} frames of scan {stats['scan']} in {stats['seconds']:.1f} s "
          f"({stats['frames_per_s']:.0f} frames/s; waited {stats['waited_s']:.1f} s for the "
          f"consumer, max backlog {stats['max_backlog']})", flush=True)
    return 0


def recon_command(args: argparse.Namespace) -> int:
    from pathlib import Path

    from sparkmpi_dl.runs import RunFolderError

    from .broker import BrokerError, resolve
    from .recon import ReconOptions, StreamReconError, run_recon

    opts = ReconOptions(out=Path(args.out), ranks=args.ranks, trigger=args.trigger,
                        broker=args.broker, prefix=args.prefix, backend=args.backend,
                        agent=args.agent, agent_every=args.agent_every,
                        iterations_per_batch=args.iterations_per_batch,
                        final_iterations=args.final_iterations, end_timeout=args.end_timeout,
                        start_fraction=args.start_fraction,
                        algorithm=args.algorithm, beta=args.beta, threads=args.threads,
                        master=args.master)
    try:
        if args.agent:
            from agents.steer import load_agent

            load_agent(args.agent)  # a wrong --agent fails here, before Spark starts
        if args.beta is not None:
            from recon_env.engine import check_parameters

            check_parameters(args.algorithm, args.beta, -1.0 / args.beta, 1.0 / args.beta)
        broker = resolve(args.broker)
        code, _ = run_recon(opts, broker.url)
        return code
    except (BrokerError, RunFolderError, StreamReconError, ValueError) as err:
        return _error(str(err), 1)
    except KeyboardInterrupt:
        from sparkmpi_dl.launch.spark_setup import end_spark_quietly

        end_spark_quietly()  # what the JVM prints as it dies must not follow the last line
        return _error("interrupted; run the same command again to resume", 130)


def broker_command(args: argparse.Namespace) -> int:
    from .broker import BrokerError, broker_home, find_recorded, resolve, stop_recorded

    try:
        if args.action == "start":
            broker = resolve(None)
            print(broker.url)
        elif args.action == "stop":
            stopped = stop_recorded()
            print(f"stopped broker {stopped.url}" if stopped else
                  f"no running broker recorded in {broker_home()}")
        else:
            found = find_recorded()
            print(json.dumps({"url": found.url, "pid": found.pid, "data_dir": found.data_dir})
                  if found else f"no running broker recorded in {broker_home()}")
            return 0 if found else 1
    except BrokerError as err:
        return _error(str(err), 1)
    return 0
