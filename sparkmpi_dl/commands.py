"""Core subcommands: ``mpirun``, ``spark-run`` and ``bench allreduce``."""
from __future__ import annotations

import argparse
import logging


def _add_launch_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-n", "--num-proc", type=int, required=True, metavar="N",
                        help="number of MPI ranks")
    parser.add_argument("--start-timeout", type=float, default=60.0, metavar="S",
                        help="fail if not every rank has joined within S seconds (default 60)")
    parser.add_argument("--timeout", type=float, default=None, metavar="SECONDS",
                        help="end the job, killing every rank, once it has run SECONDS "
                             "(exit code 124; default: no limit)")
    parser.add_argument("-v", "--verbose", action="store_true",
                        help="log the job service's events (and, for spark-run, Spark's own)")
    parser.add_argument("cmd", nargs=argparse.REMAINDER, metavar="-- CMD ...",
                        help="the program each rank runs")


def _command(args: argparse.Namespace) -> list[str]:
    cmd: list[str] = args.cmd[1:] if args.cmd[:1] == ["--"] else args.cmd
    if not cmd:
        raise SystemExit("sparkmpi-dl: error: give the command to run after '--'")
    if args.num_proc < 1:
        raise SystemExit(f"sparkmpi-dl: error: -n must be at least 1, got {args.num_proc}")
    if args.timeout is not None and not args.timeout > 0:
        raise SystemExit(f"sparkmpi-dl: error: --timeout must be a positive number of seconds, got {args.timeout:g}")
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="sparkmpi-dl: %(message)s")
    return cmd


def _mpirun(args: argparse.Namespace) -> int:
    from sparkmpi_dl.launch.local import mpirun
    return mpirun(_command(args), args.num_proc, start_timeout=args.start_timeout,
                  timeout=args.timeout)


def _spark_run(args: argparse.Namespace) -> int:
    from sparkmpi_dl.launch.spark import run_command, spark_context
    from sparkmpi_dl.launch.spark_setup import set_spark_verbose
    cmd = _command(args)
    if args.verbose:
        set_spark_verbose(True)  # Spark's own logging too
    conf = {}
    for item in args.conf:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise SystemExit(f"sparkmpi-dl: error: --conf wants KEY=VALUE, got {item!r}")
        conf[key] = value
    # a bad master, too few slots and a failed rank end in one line (sparkmpi_dl.cli)
    sc = spark_context(master=args.master, conf=conf)
    run_command(cmd, args.num_proc, spark=sc, start_timeout=args.start_timeout,
                bind_host=args.bind, timeout=args.timeout)
    return 0


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser],
             bench: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    mpirun = commands.add_parser(
        "mpirun", help="run a command as N local MPI ranks (an mpiexec stand-in, no Spark)",
        description="Run CMD as N MPI ranks on this host through the project's PMI service. "
        "Output lines are prefixed [rank N]; the exit code is the first failing rank's.")
    _add_launch_options(mpirun)
    mpirun.set_defaults(func=_mpirun)

    spark_run = commands.add_parser(
        "spark-run", help="run a command as N MPI ranks inside Spark barrier tasks",
        description="Run CMD as N MPI ranks, one per Spark barrier task, wired up by a PMI "
        "service on the driver. Works under spark-submit and with --master.")
    spark_run.add_argument("--master", default=None,
                           help="Spark master URL (default: the active session's, else local[*])")
    spark_run.add_argument("--conf", action="append", default=[], metavar="KEY=VALUE",
                           help="Spark configuration, as for spark-submit (repeatable)")
    spark_run.add_argument("--bind", default=None, metavar="ADDR",
                           help="address the driver's PMI service listens on "
                                "(default: spark.driver.host)")
    _add_launch_options(spark_run)
    spark_run.set_defaults(func=_spark_run)

    from sparkmpi_dl.bench import allreduce
    allreduce.register(bench)
    from sparkmpi_dl.bench import dataplane
    dataplane.register(bench)
