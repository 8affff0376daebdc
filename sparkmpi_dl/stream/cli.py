"""``sparkmpi-dl stream publish | recon | broker`` and ``sparkmpi-dl bench stream``."""
from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from sparkmpi_dl.config import Flag, add_dataclass_flags, from_args
from sparkmpi_dl.flags import add_frame_size, positive_int

from .publish import PublishOptions
from .recon import ReconOptions
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
    add_dataclass_flags(r, ReconOptions, exclude=("broker", "prefix", "engine", "quiet"), flags={
        "ranks": Flag(names=("-n", "--num-proc"), hidden=("--ranks",), type=positive_int,
                      metavar="N"),
        "trigger": Flag(type=_seconds, metavar="SECONDS"),
        "out": Flag(metavar="DIR"),
        "agent": Flag(metavar="RUN_DIR"),
        "agent_every": Flag(type=positive_int, metavar="K"),
        "iterations_per_batch": Flag(type=_count),
        "final_iterations": Flag(type=_count),
        "end_timeout": Flag(type=_seconds, metavar="S"),
        "start_fraction": Flag(type=_fraction, metavar="F"),
        "threads": Flag(type=positive_int)})
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
    from .recon import StreamReconError, run_recon

    opts = from_args(ReconOptions, args, out=Path(args.out), broker=args.broker,
                     prefix=args.prefix)
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
