"""Exception types of the reconstruction engine.

``ReconstructionDiverged`` is what the Gymnasium environment catches: a run whose error is
NaN/inf or explodes is stopped and reported, never returned as a garbage image.
"""
from __future__ import annotations


class ReconstructionDiverged(RuntimeError):
    """The iteration produced non-finite values or an exploding error."""

    def __init__(self, iteration: int, reason: str, history: dict | None = None) -> None:
        super().__init__(f"reconstruction diverged at iteration {iteration}: {reason}")
        self.iteration = iteration
        self.reason = reason
        self.history = history or {}


class CXIFormatError(ValueError):
    """A CXI/HDF5 file is malformed or incomplete; the message names the file and path."""

    def __init__(self, filename: str, h5path: str, problem: str) -> None:
        super().__init__(f"{filename}: {h5path}: {problem}")
        self.filename = filename
        self.h5path = h5path
        self.problem = problem


class DeviceMemoryError(MemoryError):
    """Not even one block of frames fits the accelerator's free memory."""


class NegativeIntensityWarning(UserWarning):
    """Some measured intensities are negative (background subtraction, detector offset); the
    engine uses sqrt(max(I, 0)), so they count as zero. The message says how many and where."""
