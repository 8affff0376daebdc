"""`sparkmpi-dl dataset build|validate` and `sparkmpi-dl bench dataset`."""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from recon_datasets.arguments import add_generator_arguments, config_from_args
from recon_datasets.config import EstimatorConfig
from sparkmpi_dl.config import Flag, add_dataclass_flags, from_args
from sparkmpi_dl.flags import add_num_proc


def _build(args: argparse.Namespace) -> int:
    from recon_datasets.build import BuildFailed, build
    from recon_datasets.schema import DatasetError

    try:
        config = config_from_args(args)
        summary = build(config, args.out, master=args.master, progress_s=args.progress_s,
                        fail_partition=args.fail_partition)
    except (ValueError, DatasetError, BuildFailed) as err:
        print(f"sparkmpi-dl dataset build: error: {err}", file=sys.stderr)
        return 2
    print(json.dumps(summary))
    return 0


def _validate(args: argparse.Namespace) -> int:
    from recon_datasets.reader import validate
    from recon_datasets.schema import DatasetError

    try:
        summary = validate(args.dir, reproduce=args.reproduce)
    except DatasetError as err:
        print(f"sparkmpi-dl dataset validate: error: {err}", file=sys.stderr)
        return 2
    print(json.dumps(summary))
    return 0


def _train_estimator(args: argparse.Namespace) -> int:
    from recon_datasets.estimator import check_run_folder, train_estimator
    from recon_datasets.reader import load_config
    from recon_datasets.schema import DatasetError

    config = from_args(EstimatorConfig, args, data=str(Path(args.data).resolve()),
                       out_dir=str(Path(args.out_dir).resolve()))
    try:
        config.check()
        load_config(config.data)  # a missing dataset is named first
        check_run_folder(config)  # one line before any rank starts
        if args.num_proc is None:
            result = train_estimator(config)
        else:
            from sparkmpi_dl.horovod import run
            from sparkmpi_dl.launch.spark import spark_context

            spark = spark_context(master=args.master, default_master=f"local[{args.num_proc}]")
            result = run(train_estimator, args.num_proc, args=(config,), spark=spark)
    except (ValueError, DatasetError) as err:
        print(f"sparkmpi-dl dataset train-estimator: error: {err}", file=sys.stderr)
        return 2
    print(json.dumps({k: v for k, v in result.items() if k != "epoch_losses"}))
    return 0


def _bench(args: argparse.Namespace) -> int:
    from recon_datasets.bench import main

    return main(args)


def register(commands: argparse._SubParsersAction, bench: argparse._SubParsersAction) -> None:
    dataset = commands.add_parser("dataset", help="reconstructed-image datasets (Parquet, built by Spark)")
    sub = dataset.add_subparsers(dest="dataset_command", metavar="ACTION", required=True)

    build_parser = sub.add_parser("build", help="simulate + reconstruct scans in Spark tasks, "
                                                "write a partitioned Parquet dataset (resumable)")
    build_parser.add_argument("--out", required=True, help="dataset directory (shared by executors)")
    build_parser.add_argument("--master", default=None,
                              help="Spark master URL (default: spark-submit's, else local[*])")
    build_parser.add_argument("--progress-s", type=float, default=10.0,
                              help="seconds between progress lines")
    build_parser.add_argument("--fail-partition", type=int, default=None,
                              help="fault injection (tests): crash this partition before its commit")
    add_generator_arguments(build_parser)
    build_parser.set_defaults(func=_build)

    check = sub.add_parser("validate", help="check a dataset: files, schema, every scan once, "
                                            "page checksums and content hash of every column")
    check.add_argument("dir", help="the dataset directory")
    check.add_argument("--reproduce", type=int, default=0, metavar="N",
                       help="also rebuild N scans from the recorded seed and compare the rows "
                            "(default: %(default)s)")
    check.set_defaults(func=_validate)

    est = sub.add_parser("train-estimator", help="train the reconstruction-quality estimator "
                                                 "(Horovod ranks in Spark tasks with -n)")
    add_dataclass_flags(est, EstimatorConfig, exclude=("threads",), flags={
        "out_dir": Flag(names=("--out",), hidden=("--out-dir",), metavar="DIR"),
        "val_every": Flag(metavar="N")})
    add_num_proc(est, type=int, default=None,
                 help="Horovod ranks as Spark barrier tasks (default: this process only)")
    est.add_argument("--master", default=None, help="Spark master URL (default: local[N])")
    est.set_defaults(func=_train_estimator)

    bench_parser = bench.add_parser("dataset", help="dataset build throughput, 1 vs 2 Spark tasks")
    bench_parser.add_argument("--repeat", type=int, default=2, help="alternating trials per setting")
    bench_parser.add_argument("--tasks", type=int, nargs="+", default=[1, 2],
                              help="Spark task counts to compare")
    bench_parser.add_argument("--master", default=None, help="default local[max tasks]")
    bench_parser.add_argument("--json", default=None, help="write the figures here")
    add_generator_arguments(bench_parser, defaults={"scans": 16, "n_frames": 32, "frame_size": 48,
                                                    "iterations": (20, 40)})
    bench_parser.set_defaults(func=_bench)
