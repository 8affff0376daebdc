"""recon_env: distributed ptychographic reconstruction (DM, RAAR, generalised DM).

Import-light on purpose: importing ``recon_env`` pulls in neither cupy, mpi4py nor
tensorflow. The names below load their module on first use. (The simulator function is
``recon_env.simulate.simulate``: a package attribute of that name would be shadowed by the
submodule.)

Where Gymnasium is installed, ``import recon_env`` registers the tuning environments, so
``gym.make("recon_env/PtychoTuning-v0")`` works right after it (see recon_env/README.md).
"""
from __future__ import annotations

import importlib

_EXPORTS = {
    "Reconstructor": "recon_env.engine",
    "EngineConfig": "recon_env.engine",
    "ALGORITHMS": "recon_env.engine",
    "check_parameters": "recon_env.engine",
    "ReconstructionDiverged": "recon_env.errors",
    "CXIFormatError": "recon_env.errors",
    "DeviceMemoryError": "recon_env.errors",
    "PtychoData": "recon_env.data",
    "SimulationConfig": "recon_env.simulate",
    "read_cxi": "recon_env.cxi",
    "write_cxi": "recon_env.cxi",
    "compare_objects": "recon_env.metrics",
    "make_comm": "recon_env.comm",
}

__all__ = sorted(_EXPORTS) + ["register_envs"]

ENV_ENTRY_POINTS = {
    "recon_env/PtychoTuning-v0": "recon_env.tuning_env:PtychoTuningEnv",
    "recon_env/PtychoTuningContinuous-v0": "recon_env.tuning_env:PtychoTuningContinuousEnv",
}


def register_envs() -> None:
    """Register the tuning envs with Gymnasium (idempotent; a no-op without Gymnasium).
    Only entry-point strings are registered: the env module loads on ``gym.make``."""
    try:
        import gymnasium
    except ImportError:  # e.g. the GPU machine: reconstruction only
        return
    for env_id, entry_point in ENV_ENTRY_POINTS.items():
        if env_id not in gymnasium.registry:
            gymnasium.register(id=env_id, entry_point=entry_point)


register_envs()


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'recon_env' has no attribute {name!r}")
