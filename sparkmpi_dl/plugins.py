"""Code a lower layer uses without importing the layer above: entry points.

The packages form layers (core ``sparkmpi_dl`` <- ``recon_env`` <- ``agents``,
``recon_datasets``, ``trainers``; tests/test_architecture.py checks it). Where a lower layer
needs code from above (the CLI's subcommands, the tuning env's quality estimator, the recon
command's steering agent) it owns an entry-point group and the package above declares the
implementation in pyproject.toml, so the direction stays visible and checked.
"""
from __future__ import annotations

from importlib import metadata
from typing import Any

# The groups this project defines (pyproject.toml [project.entry-points.<group>]).
COMMANDS = "sparkmpi_dl.commands"  # register(commands, bench) functions for the CLI
ESTIMATORS = "recon_env.estimators"  # estimator classes: Cls(model_path) -> PhaseErrorEstimator
STEERING = "recon_env.steering"  # modules with load_agent(spec) and steer(...)
DEMO_STAGES = "sparkmpi_dl.demo"  # demo_stages() -> [(title, stage(sc, out) -> figures)]


class PluginMissing(LookupError):
    """No installed distribution provides the entry point (the install is stale or partial)."""


def entry_points(group: str) -> list[metadata.EntryPoint]:
    """The group's entry points, once each by name, in the order the distributions declare them.

    Every distribution on the path is read, not only the first of each name: a source tree
    on PYTHONPATH may hold an older ``*.egg-info`` of this project (left by a wheel build)
    that would otherwise hide the installed metadata.
    """
    seen: dict[str, metadata.EntryPoint] = {}
    for dist in metadata.distributions():
        for point in dist.entry_points:
            if point.group == group:
                seen.setdefault(point.name, point)
    return list(seen.values())


def load(group: str, name: str | None = None) -> Any:
    """The object of the group's entry point ``name`` (the only/first one if None).

    Raises :class:`PluginMissing` naming the group when nothing provides it; errors raised
    while importing the provider propagate unchanged.
    """
    points = [p for p in entry_points(group) if name is None or p.name == name]
    if not points:
        what = f"entry point {name!r} of group {group!r}" if name else f"entry point group {group!r}"
        raise PluginMissing(f"no installed package provides the {what}; reinstall the project "
                            "(pip install -e . or scripts/setup.sh)")
    return points[0].load()
