"""The dataset-build options, turned from BuildConfig into CLI flags and back (shared by
``sparkmpi-dl dataset build`` and ``sparkmpi-dl bench dataset``)."""
from __future__ import annotations

import argparse
import math
from collections.abc import Callable
from typing import Any

from recon_datasets.config import BuildConfig


def _range(kind: Callable[[str], Any]) -> Callable[[str], tuple[Any, Any]]:
    """An argparse type for 'LOW,HIGH' pairs of ``kind``."""
    def parse(text: str) -> tuple[Any, Any]:
        try:
            low, high = (kind(v) for v in text.split(","))
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected LOW,HIGH, got {text!r}") from None
        return low, high
    return parse


def _photon_range(text: str) -> tuple[float, float]:
    """'1e4,1e8' photons per frame -> their log10 (what BuildConfig draws from)."""
    low, high = _range(float)(text)
    if low <= 0 or high <= 0:
        raise argparse.ArgumentTypeError(f"photon counts must be > 0, got {text!r}")
    return math.log10(low), math.log10(high)


def add_generator_arguments(parser: argparse.ArgumentParser) -> None:
    """The BuildConfig options (shared by build and the benchmark)."""
    d = BuildConfig()
    parser.add_argument("--scans", type=int, default=d.scans, help="rows of the dataset")
    parser.add_argument("--seed", type=int, default=d.seed, help="same seed -> same dataset")
    parser.add_argument("--partitions", type=int, default=None,
                        help="Parquet files = Spark tasks (default: about 8 scans each)")
    parser.add_argument("--crop", type=int, default=d.crop, help="side of the phase/amplitude crops")
    parser.add_argument("--frames", dest="n_frames", type=int, default=d.n_frames,
                        help="diffraction frames per scan")
    parser.add_argument("--frame-size", type=int, default=d.frame_size, help="detector pixels")
    parser.add_argument("--iterations", type=_range(int), default=d.iterations,
                        help="LOW,HIGH iterations per scan (drawn, multiples of 5)")
    parser.add_argument("--beta", type=_range(float), default=d.beta, help="LOW,HIGH beta range")
    parser.add_argument("--photons", dest="log10_photons", type=_photon_range,
                        default=d.log10_photons, metavar="LOW,HIGH",
                        help="photons per frame, drawn log-uniformly from LOW..HIGH "
                             f"(default: {10 ** d.log10_photons[0]:g},{10 ** d.log10_photons[1]:g})")
    parser.add_argument("--log10-photons", dest="log10_photons", type=_range(float),
                        default=argparse.SUPPRESS, help=argparse.SUPPRESS)  # the old spelling
    parser.add_argument("--rows-per-group", type=int, default=d.rows_per_group,
                        help="Parquet row group size (the trainers shard by row group)")


def config_from_args(args: argparse.Namespace) -> BuildConfig:
    """The checked BuildConfig the options describe (ValueError naming a bad one)."""
    config = BuildConfig(
        scans=args.scans, seed=args.seed, partitions=args.partitions, crop=args.crop,
        n_frames=args.n_frames, frame_size=args.frame_size, iterations=args.iterations,
        beta=args.beta, log10_photons=args.log10_photons, rows_per_group=args.rows_per_group)
    config.check()
    return config
