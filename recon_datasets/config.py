"""What a dataset build draws from: ``BuildConfig`` and the per-scan draw.

Every scan's parameters (object, probe, scan pattern, photons, algorithm, beta schedule,
iteration count) are a pure function of ``(seed, scan index)``: a partition can be rebuilt
alone, on any worker, and gives the same rows.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields
from typing import Any

import numpy as np

OBJECTS = ("mixed", "cells", "rings", "siemens")
PROBES = ("airy", "gaussian")
SCANS = ("fermat", "raster", "concentric")
ALGORITHMS = ("dm", "raar")
SCHEDULES = ("constant", "linear", "step")
CHUNK = 5  # iterations per engine call: beta is constant within a chunk


@dataclass(frozen=True)
class BuildConfig:
    """Generator parameters of a dataset (recorded in its schema file; a resume must match).
    Most fields are flags of `sparkmpi-dl dataset build` (recon_datasets/arguments.py)."""

    scans: int = 64
    """rows of the dataset"""
    seed: int = 0
    """same seed -> same dataset"""
    partitions: int | None = None
    """Parquet files = Spark tasks (default: about 8 scans each)"""
    crop: int = 32
    """side of the phase/amplitude crops (px)"""
    n_frames: int = 32
    """diffraction frames per scan"""
    frame_size: int = 48
    """detector pixels"""
    probe_diameter_frac: tuple[float, float] = (0.28, 0.4)
    """probe diameter drawn from this range, as a fraction of frame_size"""
    overlap: tuple[float, float] = (0.55, 0.8)
    """probe overlap fraction drawn from this range"""
    log10_photons: tuple[float, float] = (4.0, 8.0)
    """log10 of the photons per frame, drawn uniformly from this range"""
    phase_max: tuple[float, float] = (0.5, 1.5)
    """object phase amplitude (rad) drawn from this range"""
    iterations: tuple[int, int] = (5, 60)
    """LOW,HIGH iterations per scan (drawn, whole chunks of 5)"""
    beta: tuple[float, float] = (0.4, 1.0)
    """LOW,HIGH beta range"""
    rows_per_group: int = 4
    """Parquet row group size (the trainers shard by row group)"""

    def __post_init__(self) -> None:
        for name in ("probe_diameter_frac", "overlap", "log10_photons", "phase_max",
                     "iterations", "beta"):
            object.__setattr__(self, name, tuple(getattr(self, name)))

    def check(self) -> None:
        """Raise ValueError naming the option that is out of range."""
        if self.scans < 1:
            raise ValueError(f"--scans must be >= 1, got {self.scans}")
        if self.partitions is not None and not 1 <= self.partitions <= self.scans:
            raise ValueError(f"--partitions must be in [1, --scans={self.scans}], got {self.partitions}")
        if self.frame_size < 8 or self.frame_size % 2:
            raise ValueError(f"--frame-size must be an even number >= 8, got {self.frame_size}")
        if not 4 <= self.crop <= self.frame_size:
            raise ValueError(f"--crop must be in [4, --frame-size={self.frame_size}], got {self.crop}")
        if self.n_frames < 4:
            raise ValueError(f"--frames must be >= 4, got {self.n_frames}")
        if self.rows_per_group < 1:
            raise ValueError(f"--rows-per-group must be >= 1, got {self.rows_per_group}")
        for name in ("probe_diameter_frac", "overlap", "log10_photons", "phase_max",
                     "iterations", "beta"):
            bounds = getattr(self, name)
            if len(bounds) != 2 or bounds[0] > bounds[1]:
                raise ValueError(f"{name} must be (low, high) with low <= high, got {bounds}")
        if not (0 < self.probe_diameter_frac[0] and self.probe_diameter_frac[1] < 1):
            raise ValueError(f"probe_diameter_frac must lie in (0, 1), got {self.probe_diameter_frac}")
        if self.iterations[0] < 1:
            raise ValueError(f"iterations must be >= 1, got {self.iterations}")
        if not (0 < self.beta[0] and self.beta[1] <= 1):
            raise ValueError(f"beta must lie in (0, 1] (valid for DM and RAAR), got {self.beta}")

    @property
    def num_partitions(self) -> int:
        return self.partitions or max(1, math.ceil(self.scans / 8))

    @property
    def max_iterations(self) -> int:
        """Length of the padded error-history columns."""
        return CHUNK * math.ceil(self.iterations[1] / CHUNK)

    def partition_scans(self, partition: int) -> range:
        """Scan indices of one partition: contiguous, balanced."""
        p = self.num_partitions
        return range(self.scans * partition // p, self.scans * (partition + 1) // p)

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        return {k: list(v) if isinstance(v, tuple) else v for k, v in out.items()}

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> "BuildConfig":
        names = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - names)
        if unknown:
            raise ValueError(f"unknown build parameter(s) {unknown}")
        return cls(**values)


@dataclass
class EstimatorConfig:
    """One training run (plain data: it pickles into Spark tasks). The fields but threads are
    the flags of `sparkmpi-dl dataset train-estimator`."""

    data: str
    """a dataset built by `dataset build`"""
    out_dir: str = "runs/quality_estimator"
    """checkpoints and the trained estimator go here"""
    epochs: int = 30
    """training epochs"""
    batch_size: int = 16
    """per rank"""
    lr: float = 3e-3
    """per rank, scaled by the number of ranks"""
    val_every: int = 5
    """scans with scan_index % N == 0 are the validation set"""
    seed: int = 0
    """weights and shuffling seed"""
    threads: int = 1
    """TensorFlow intra-op threads per rank"""
    resume: bool = False
    """continue the run in the output folder from its last checkpoint (same arguments;
    --epochs may grow; sparkmpi_dl.runs rules); a new run needs an empty folder"""

    def check(self) -> None:
        for name in ("epochs", "batch_size", "threads"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.val_every < 2:
            raise ValueError(f"val_every must be >= 2 (else nothing is left to train on), "
                             f"got {self.val_every}")
        if not self.lr > 0:
            raise ValueError(f"lr must be > 0, got {self.lr}")


def draw_scan(config: BuildConfig, index: int) -> dict[str, Any]:
    """Simulation and reconstruction parameters of scan ``index`` (pure in (seed, index)).

    The simulation part is drawn by the tuning env's ``ScanGenerator`` (one scan
    distribution for the project), with the dataset's ranges and no optional parts, so its
    keys are exactly the ``sim_*`` columns and earlier datasets still validate."""
    from recon_env.tuning_env import ScanGenerator  # the one scan distribution

    rng = np.random.default_rng([config.seed, index])
    generator = ScanGenerator(objects=OBJECTS, probes=PROBES, scans=SCANS,
                              n_frames=config.n_frames, frame_size=config.frame_size,
                              probe_diameter_frac=config.probe_diameter_frac,
                              overlap=config.overlap, log10_photons=config.log10_photons,
                              phase_max=config.phase_max)
    sim = generator.draw(rng)

    def uniform(bounds: tuple[float, float]) -> float:
        return float(rng.uniform(*bounds))

    lo, hi = (math.ceil(config.iterations[0] / CHUNK), config.max_iterations // CHUNK)
    chunks = int(rng.integers(lo, hi + 1))
    recon = {
        "algorithm": str(rng.choice(ALGORITHMS)),
        "schedule": str(rng.choice(SCHEDULES)),
        "beta_start": uniform(config.beta),
        "beta_end": uniform(config.beta),
        "iterations": chunks * CHUNK,
        "engine_seed": int(rng.integers(2**31 - 1)),
    }
    return {"simulation": sim, "reconstruction": recon}


def beta_schedule(recon: dict[str, Any]) -> list[float]:
    """Beta of each chunk: constant (beta_start), linear start->end, or a step at half way."""
    chunks = recon["iterations"] // CHUNK
    start, end = recon["beta_start"], recon["beta_end"]
    if recon["schedule"] == "constant":
        return [start] * chunks
    if recon["schedule"] == "linear":
        return [start + (end - start) * c / max(1, chunks - 1) for c in range(chunks)]
    if recon["schedule"] == "step":
        return [start if c < chunks // 2 else end for c in range(chunks)]
    raise ValueError(f"beta schedule must be one of {SCHEDULES}, got {recon['schedule']!r}")
