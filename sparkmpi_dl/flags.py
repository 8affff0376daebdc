"""One flag name per concept across every ``sparkmpi-dl`` subcommand.

=============  ====================  ==========================================
concept        flag                  older spellings (still accepted, not shown)
=============  ====================  ==========================================
rank count     ``-n/--num-proc``     ``--ranks``
output folder  ``--out``             ``--out-dir``, ``--run-dir`` (agent train)
frame size     ``--frame-size``      ``--shape``
photons        ``--photons``         (dataset: ``--log10-photons``)
=============  ====================  ==========================================

The old spellings are hidden aliases (same ``dest``), so scripts written against them
keep working while ``--help`` shows one name. A config dataclass's flags come from
:mod:`sparkmpi_dl.config`, whose ``Flag(names=..., hidden=...)`` uses the same aliasing.
"""
from __future__ import annotations

import argparse
from typing import Any



def positive_int(text: str) -> int:
    """argparse type for counts that must be at least 1 (ranks, iterations, frames)."""
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value

def add_aliased(parser: Any, names: tuple[str, ...], hidden: tuple[str, ...], *,
                dest: str, required: bool = False, **kwargs: Any) -> argparse.Action:
    """Add the option ``names`` (shown) and ``hidden`` (accepted, not shown) for one ``dest``.

    A required option becomes a required mutually exclusive group of both, so giving
    either spelling satisfies it and giving both is refused.
    """
    if required and not hidden:
        return parser.add_argument(*names, dest=dest, required=True, **kwargs)  # type: ignore[no-any-return]
    target = parser.add_mutually_exclusive_group(required=True) if required else parser
    action: argparse.Action = target.add_argument(*names, dest=dest, **kwargs)
    alias = {k: v for k, v in kwargs.items() if k not in ("help", "default", "metavar")}
    for name in hidden:
        target.add_argument(name, dest=dest, help=argparse.SUPPRESS,
                            default=argparse.SUPPRESS, **alias)
    return action


def add_num_proc(parser: Any, *, dest: str = "num_proc", **kwargs: Any) -> argparse.Action:
    """``-n/--num-proc N`` (older: ``--ranks``): how many ranks the job has."""
    kwargs.setdefault("metavar", "N")
    return add_aliased(parser, ("-n", "--num-proc"), ("--ranks",), dest=dest, **kwargs)


def add_out(parser: Any, *, dest: str = "out", hidden: tuple[str, ...] = ("--out-dir",),
            **kwargs: Any) -> argparse.Action:
    """``--out DIR`` (older: ``--out-dir``): the folder a command writes its results to."""
    kwargs.setdefault("metavar", "DIR")
    return add_aliased(parser, ("--out",), hidden, dest=dest, **kwargs)


def add_frame_size(parser: Any, *, dest: str = "frame_size", **kwargs: Any) -> argparse.Action:
    """``--frame-size PIXELS`` (older: ``--shape``): the side of a square detector frame."""
    kwargs.setdefault("metavar", "PIXELS")
    return add_aliased(parser, ("--frame-size",), ("--shape",), dest=dest, **kwargs)
