"""How one ``sparkmpi-dl recon`` / ``bench recon`` run is carried out: the options besides
the simulated scan's (:class:`~recon_env.simulate.SimulationConfig`) and the engine's
(:class:`~recon_env.engine.EngineConfig`). All three become the commands' flags through
:mod:`sparkmpi_dl.config`; the runner receives them as one picklable dict (a Spark task's
argument), keyed by field name. Kept free of NumPy so that building the CLI stays light.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

__all__ = ["RunOptions"]


@dataclass
class RunOptions:
    """One reconstruction (``recon``) or timing (``bench recon``) run. A field whose
    default is None says in its docstring what is used then."""

    iterations: int = 100
    """reconstruction iterations"""
    algorithm: Literal["dm", "raar"] = "dm"
    """Difference Map or RAAR"""
    beta: float | None = None
    """DM/RAAR relaxation (default: the algorithm's)"""
    gamma1: float | None = None
    """DM gamma1 (default: the engine's)"""
    gamma2: float | None = None
    """DM gamma2 (default: the engine's)"""
    save_simulation: str | None = None
    """also write the simulated data to this CXI file"""
    report_every: int = 10
    """iterations between progress lines"""
    out: str = "recon-out"
    """output folder; must be absent or empty (see --overwrite)"""
    overwrite: bool = False
    """replace the outputs of an earlier recon run in --out"""
    agent: str | None = None
    """a trained tuning agent (an `agent train` run folder, or 'pretrained' for the shipped
    one) picks the algorithm and beta every --agent-every iterations from the measured
    errors; --algorithm/--beta are then ignored"""
    agent_every: int | None = None
    """iterations between the agent's decisions (default: the interval it was trained
    with)"""
    warmup: int = 2
    """untimed iterations (kernel compile)"""
    json: bool = False
    """print one JSON line"""
    ranks: int = 1
    """MPI ranks (frames split)"""
    spark: bool = False
    """run the ranks as Spark barrier tasks (with --cxi: Spark tasks read the frames and
    hand them to the ranks)"""
    master: str | None = None
    """Spark master URL; implies --spark (default: spark-submit's, else local[*])"""
    backend: Literal["numpy", "cupy"] = "numpy"
    """array library (cupy: NVIDIA GPU)"""
    threads: int = 1
    """threads per rank (numpy backend: frame blocks processed in parallel)"""
    comm: Literal["auto", "serial", "mpi", "nccl"] = "auto"
    """how ranks sum: auto = NCCL for cupy, host MPI otherwise"""
    gpu_simulation: bool = False
    """with --backend cupy: simulate the data on the GPU (large benchmarks)"""
