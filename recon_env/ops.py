"""The array backend the engine runs on: one interface, two implementations.

:class:`ArrayOps` is what :class:`recon_env.engine.Reconstructor` calls on a block of
frames; ``ops_numpy.NumpyOps`` (host, scipy FFTs) and ``ops_cupy.CupyOps`` (NVIDIA GPU,
fused kernels) implement it. Arrays are the backend's own (``numpy.ndarray`` or
``cupy.ndarray``), hence ``Any``; frame positions ``iy, ix`` are integer arrays of window
corners. Optional GPU fusions are capabilities an implementation may add
(``fuses_object_power``, ``fuses_probe_sums``, ``inertia_update``, ``to_floats``,
``check_interval``); the engine asks for them by name and falls back when absent.
"""
from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

import numpy as np


@runtime_checkable
class ArrayOps(Protocol):
    """Frame-block kernels of the reconstruction on one device."""

    @property
    def name(self) -> str:
        """``"numpy"`` or ``"cupy"``"""

    @property
    def xp(self) -> Any:
        """The array module (numpy or cupy)."""

    def asarray(self, a: Any, /, dtype: Any = None) -> Any:
        """``a`` on this device, C-contiguous."""

    def to_host(self, a: Any, /) -> np.ndarray:
        """``a`` as a NumPy array in host memory."""

    def synchronize(self) -> None:
        """Wait for queued device work (timings)."""

    def plan(self, n: int, n_frames: int, block: int | None, host_frames: bool | None, /) -> tuple[int, bool]:
        """(frames per block, whether frames stay in host memory and stream to the device)."""

    def host_array(self, a: Any, /) -> Any:
        """Host memory for frames that stream to the device (pinned on a GPU)."""

    def default_block(self, n: int, n_frames: int, /) -> int:
        """Frames per block when none is asked for."""

    def fft2(self, a: Any, /) -> Any:
        """Centred 2-D FFT over the last two axes."""

    def ifft2(self, a: Any, /) -> Any:
        """Its inverse."""

    def gather_product(self, obj: Any, probe: Any, iy: Any, ix: Any, out: Any, /) -> Any:
        """``out[j] = probe * obj[window j]`` for the block's frames."""

    def exit_waves(self, obj: Any, probe: Any, iy: Any, ix: Any, out: Any, /) -> Any:
        """The exit waves ``P O_j`` of the block (probe modes included)."""

    def scatter_conj_probe(self, target: Any, psi: Any, probe: Any, iy: Any, ix: Any, buf: Any,
                           /) -> None:
        """``target[window j] += conj(P) psi_j``: the object update's numerator."""

    def scatter_power(self, target: Any, probe: Any, iy: Any, ix: Any, /) -> None:
        """``target[window j] += |P|^2``: the object update's denominator."""

    def probe_sums(self, obj: Any, psi: Any, iy: Any, ix: Any, num: Any, den: Any, buf: Any,
                   rbuf: Any, /) -> None:
        """Add the block's terms of the probe update (numerator, denominator)."""

    def fourier_update(self, psi: Any, po: Any, amp: Any, maskf: Any, notmask: Any, coef: Any,
                       pbound: Any, fbuf: Any, absbuf: Any, devbuf: Any, extra: Any = None,
                       modes: int = 1, /) -> tuple[Any, Any]:
        """``psi <- c psi + d P_F(a po + b psi) + e po + g extra``; (errors, change)."""

    def fourier_error(self, waves: Any, amp: Any, maskf: Any, absbuf: Any, devbuf: Any,
                      modes: int = 1, /) -> Any:
        """Per-frame Fourier modulus errors of ``waves``."""

    def fourier_project(self, psi: Any, amp: Any, maskf: Any, notmask: Any, pbound: Any, fbuf: Any,
                        absbuf: Any, devbuf: Any, modes: int = 1, /) -> Any:
        """``psi <- P_F psi`` in place; per-frame errors."""
