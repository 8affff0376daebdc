"""The dataset-build options, turned from BuildConfig into CLI flags and back (shared by
``sparkmpi-dl dataset build`` and ``sparkmpi-dl bench dataset``)."""
from __future__ import annotations

import argparse
import math
from collections.abc import Callable
from typing import Any

from recon_datasets.config import BuildConfig
from sparkmpi_dl.config import Flag, add_dataclass_flags, from_args


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


# Where a flag differs from its BuildConfig field: names, LOW,HIGH pairs, photons (not log10).
FLAGS = {
    "n_frames": Flag(names=("--frames",)),
    "iterations": Flag(type=_range(int), metavar="LOW,HIGH"),
    "beta": Flag(type=_range(float), metavar="LOW,HIGH"),
    "log10_photons": Flag(
        names=("--photons",), type=_photon_range, metavar="LOW,HIGH",
        help="photons per frame, drawn log-uniformly from LOW..HIGH",
        default_text=",".join(f"{10 ** v:g}" for v in BuildConfig().log10_photons)),
}
# Drawn from their default ranges; set from Python (BuildConfig) only.
NOT_FLAGS = ("probe_diameter_frac", "overlap", "phase_max")


def add_generator_arguments(parser: argparse.ArgumentParser,
                            defaults: dict[str, Any] | None = None) -> None:
    """The BuildConfig options (shared by build and the benchmark, with its own ``defaults``)."""
    add_dataclass_flags(parser, BuildConfig, flags=FLAGS, exclude=NOT_FLAGS, defaults=defaults)
    parser.add_argument("--log10-photons", dest="log10_photons", type=_range(float),
                        default=argparse.SUPPRESS, help=argparse.SUPPRESS)  # the old spelling


def config_from_args(args: argparse.Namespace) -> BuildConfig:
    """The checked BuildConfig the options describe (ValueError naming a bad one)."""
    config = from_args(BuildConfig, args)
    config.check()
    return config
