"""The steppable ptychographic reconstructor: generalised difference map and RAAR.

Notation (seed paper eqs. 4-7): psi_j are the exit-wave iterates, P_F the Fourier modulus
projection, P_O the overlap projection, i.e. the eq. 4-5 object/probe estimate from all
psi_j followed by psi_j = P * O_j.

- Generalised DM (Elser 2003, eq. 6) with P_1 = P_F, P_2 = P_O:
    psi <- psi + beta [P_F(f_2) - P_O(f_1)],  f_i = (1 + gamma_i) P_i psi - gamma_i psi.
  beta = 1, gamma1 = -1, gamma2 = 1 is plain DM (Thibault 2009). For gamma1 != -1 the
  term P_O(P_F psi) is the linear overlap projection with the current probe (one extra
  FFT pair and one scatter per iteration).
- RAAR (Luke 2005, eq. 7): psi <- [beta/2 (R_F R_O + I) + (1 - beta) P_O] psi, with
  R = 2P - I, i.e. psi <- beta psi + beta P_F(2 P_O psi - psi) + (1 - 2 beta) P_O psi.
  beta = 1 is plain DM.

Frames are split over MPI ranks; the object/probe sums and the errors are combined with
Allreduce, so every rank holds the same object and probe.

Views: with fractional positions (positions.py) or K probe modes (modes.py) every frame
has K "views", each with its own probe (the mode, Fourier-shifted by the frame's
sub-pixel offset), cached as one (frames x K, N, N) array and passed to the same batched
kernels; whole-pixel, single-mode data keep the shared probe (the original path).
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any, NamedTuple

import numpy as np

from .comm import SerialComm
from .data import PtychoData
from .errors import ReconstructionDiverged
from .ops import ArrayOps
from .positions import bound_steps, ramp_block, shift_ramps, solve_shifts, split_positions

ALGORITHMS = ("dm", "raar")


@dataclass
class EngineConfig:
    """Engine settings that stay fixed during a run (the agent steers only step() args)."""

    overlap_iterations: int = 1
    """inner object/probe refinement loops (overlap projections) per iteration"""
    probe_update_start: int = 2
    """first iteration (0-based) that refines the probe"""
    probe_support: float | None = 0.9
    """radius of the probe support, a fraction of N/2 (None: no support)"""
    object_inertia: float = 1e-4
    """object update inertia, relative to the largest eq. 4 denominator"""
    probe_inertia: float = 1e-3
    """probe update inertia, relative to the largest eq. 5 denominator"""
    fourier_power_bound: float | None = None
    """Fourier-constraint power bound (noise tolerance): mean squared |F|-A per valid pixel
    left uncorrected (None: none)"""
    divergence_threshold: float = 1e3
    """a relative Fourier error above this means the run diverged"""
    block_frames: int | None = None
    """frames per kernel block (None: the backend's default)"""
    host_frames: bool | None = None
    """GPU: keep psi and the amplitudes in host memory and stream blocks (None: only when
    they do not fit the GPU)"""
    seed: int = 0
    """seed of the engine's starting guess"""
    subpixel: bool | None = None
    """model fractional positions (None: when the data have them)"""
    probe_modes: int = 1
    """mixed-state probe modes (incoherent sum)"""
    refine_positions: bool = False
    """refine each frame's position (implies subpixel)"""
    position_start: int = 15
    """first iteration (0-based) that refines positions"""
    position_step_max: float = 0.3
    """largest position change (px) per frame and iteration"""
    deterministic: bool = True
    """GPU: bit-reproducible sums (False: float atomics, whose results vary in the last bits)"""

    def check(self) -> None:
        if self.overlap_iterations < 1:
            raise ValueError(f"overlap_iterations must be >= 1, got {self.overlap_iterations}")
        if self.probe_update_start < 0:
            raise ValueError(f"probe_update_start must be >= 0, got {self.probe_update_start}")
        if self.probe_support is not None and not 0 < self.probe_support <= 2:
            raise ValueError(f"probe_support must be in (0, 2] or None, got {self.probe_support}")
        if self.object_inertia < 0 or self.probe_inertia < 0:
            raise ValueError("object_inertia and probe_inertia must be >= 0")
        if self.fourier_power_bound is not None and not self.fourier_power_bound > 0:
            raise ValueError(
                f"fourier_power_bound must be > 0 or None, got {self.fourier_power_bound}")
        if not self.divergence_threshold > 0:
            raise ValueError("divergence_threshold must be > 0")
        if self.block_frames is not None and self.block_frames < 1:
            raise ValueError(f"block_frames must be >= 1, got {self.block_frames}")
        if self.host_frames not in (None, True, False):
            raise ValueError(f"host_frames must be None, True or False, got {self.host_frames!r}")
        if not isinstance(self.probe_modes, (int, np.integer)) or not 1 <= self.probe_modes <= 16:
            raise ValueError(f"probe_modes must be an integer in 1..16, got {self.probe_modes!r}")
        if self.refine_positions and self.subpixel is False:
            raise ValueError("refine_positions needs sub-pixel positions (subpixel=False given)")
        if self.position_start < 0:
            raise ValueError(f"position_start must be >= 0, got {self.position_start}")
        if not 0 < self.position_step_max <= 4:
            raise ValueError(
                f"position_step_max must be in (0, 4] px, got {self.position_step_max}")


def check_parameters(algorithm: str, beta: float, gamma1: float, gamma2: float) -> None:
    """Raise ValueError for parameters outside the range the engine supports."""
    if algorithm not in ALGORITHMS:
        raise ValueError(f"algorithm must be one of {ALGORITHMS}, got {algorithm!r}")
    for name, value in (("beta", beta), ("gamma1", gamma1), ("gamma2", gamma2)):
        if not isinstance(value, (int, float, np.floating, np.integer)) or not math.isfinite(value):
            raise ValueError(f"{name} must be a finite number, got {value!r}")
    if algorithm == "raar" and not 0 < beta <= 1:
        raise ValueError(f"RAAR needs 0 < beta <= 1, got beta={beta}")
    if algorithm == "dm" and (beta == 0 or abs(beta) > 2):
        raise ValueError(f"DM needs 0 < |beta| <= 2, got beta={beta}")
    if abs(gamma1) > 10 or abs(gamma2) > 10:
        raise ValueError(f"gamma1 and gamma2 must be in [-10, 10], got {gamma1}, {gamma2}")


class UpdateCoefficients(NamedTuple):
    """The exit-wave update as one formula for DM, generalised DM and RAAR:

        psi <- c psi + d P_F(a PO + b psi) + e PO + g P_O(P_F psi)

    with PO = P_O psi. A tuple still (the array ops unpack it as ``a, b, c, d, e, g``);
    the engine reads the fields by name."""

    a: float  # weight of P_O psi in the wave the Fourier projection gets
    b: float  # weight of psi in that wave
    c: float  # weight of psi kept
    d: float  # weight of the Fourier projection
    e: float  # weight of P_O psi added
    g: float  # weight of P_O(P_F psi): nonzero only for generalised DM (gamma1 != -1)


def update_coefficients(algorithm: str, beta: float, gamma1: float, gamma2: float) -> UpdateCoefficients:
    """The coefficients of ``algorithm`` (see :class:`UpdateCoefficients`)."""
    if algorithm == "raar":
        return UpdateCoefficients(2.0, -1.0, beta, beta, 1.0 - 2.0 * beta, 0.0)
    return UpdateCoefficients(1.0 + gamma2, -gamma2, 1.0, beta, beta * gamma1, -beta * (1.0 + gamma1))


def make_ops(backend: str, workers: int = 1, deterministic: bool = True) -> ArrayOps:
    if backend == "numpy":
        from .ops_numpy import NumpyOps

        return NumpyOps(workers=workers)
    if backend == "cupy":
        from .ops_cupy import CupyOps

        return CupyOps(deterministic)
    raise ValueError(f"backend must be 'numpy' or 'cupy', got {backend!r}")


def frame_range(n_frames: int, rank: int, size: int) -> tuple[int, int]:
    """Contiguous, balanced split of frames over ranks."""
    return n_frames * rank // size, n_frames * (rank + 1) // size


class _Work:
    """One thread's block buffers (exit waves / |F| buffers only where the backend uses them);
    ``block`` counts views (frames x probe modes)."""

    def __init__(self, xp, block: int, n: int, host: bool) -> None:
        shape = (block, n, n)
        self.f = xp.empty(shape, dtype=xp.complex64)
        self.x = xp.empty(shape, dtype=xp.complex64)
        self.dev = xp.empty(shape, dtype=xp.float32)
        self.po = xp.empty(shape, dtype=xp.complex64) if host else None
        self.abs = xp.empty(shape, dtype=xp.float32) if host else None

    def cut(self, name: str, k: int):
        buf = getattr(self, name)
        return None if buf is None else buf[:k]


class Reconstructor:
    """Steppable reconstruction of one data set (this rank's share of the frames).

    ``data`` holds all frames (each rank keeps its own contiguous share) unless
    ``local=True`` says it is already this rank's share (then ``total_frames`` must be
    the global count: it only scales the error normalisation check).
    """

    _views: Any  # the probe views of this rank's frames (None until computed)
    _probe_next: tuple[Any, Any, Any] | None  # (object, eq. 5 sums) of the last GPU update

    def __init__(self, data: PtychoData, config: EngineConfig | None = None, *,
                 backend: str = "numpy", comm=None, workers: int = 1,
                 local: bool = False) -> None:
        self.config = config or EngineConfig()
        self.config.check()
        self.comm = comm or SerialComm()
        if not isinstance(workers, (int, np.integer)) or workers < 1:
            raise ValueError(f"workers must be an integer >= 1, got {workers!r}")
        # NumPy: `workers` threads, each on its own share of the frame blocks (numpy and
        # scipy.fft release the GIL); CuPy: one host thread drives the GPU
        self._threads = int(workers) if backend == "numpy" else 1
        self.ops = make_ops(backend, 1, self.config.deterministic)
        self._pool = None
        if self._threads > 1:
            from concurrent.futures import ThreadPoolExecutor

            self._pool = ThreadPoolExecutor(self._threads, thread_name_prefix="recon")
        self.data = data
        n = data.frame_shape[0]
        self.n = n
        if local:
            start, stop = 0, data.n_frames
        else:
            start, stop = frame_range(data.n_frames, self.comm.rank, self.comm.size)
        self.frames = (start, stop)
        # where this rank's frames sit in the whole scan (for gathering refined positions)
        meta_frames = data.meta.get("frames") if local else None
        self._offset = int(meta_frames[0]) if meta_frames else start
        self._total = int(data.meta.get("total_frames", data.n_frames)) if local else data.n_frames
        xp = self.ops.xp
        self.xp = xp
        self.K = int(self.config.probe_modes)
        pos = np.asarray(data.positions[start:stop], dtype=np.float64)
        self.initial_positions = pos.copy()
        fractional = float(np.any(np.abs(pos - np.round(pos)) > 1e-6))
        fractional = self.comm.allreduce_scalars([fractional])[0] > 0  # same on every rank
        sub = self.config.subpixel
        self.subpixel = bool(fractional or self.config.refine_positions) if sub is None else sub
        self.plain = self.K == 1 and not self.subpixel
        self._limit = np.array(data.object_shape, dtype=np.float64) - n
        self._set_positions(pos)
        assert data.mask is not None  # PtychoData.__post_init__ sets it
        mask = np.fft.ifftshift(data.mask)
        self._mask_fft = mask
        self.maskf = None if mask.all() else self.ops.asarray(mask, dtype=np.float32)
        self.notmask = None if mask.all() else self.ops.asarray(~mask, dtype=np.float32)
        self.local_frames = stop - start
        # frames per block, and whether psi/amplitudes live on the host (GPU streaming)
        # views per frame and the per-view probe cache count against the memory plan
        factor = 1 if self.plain else 2 * self.K
        block_frames = self.config.block_frames
        units, self.streaming = self.ops.plan(n, max(1, self.local_frames) * factor,
                                              None if block_frames is None
                                              else block_frames * factor,
                                              self.config.host_frames)
        self.block = max(1, units // factor)
        if self.streaming and not self.plain:
            raise ValueError("sub-pixel positions and probe modes need this rank's frames "
                             "resident on the GPU: use more ranks or fewer frames per rank")
        amp = self._amplitudes(data.intensities[start:stop])
        self.amp = self.ops.host_array(amp) if self.streaming else amp
        amx = np if self.streaming else xp
        self.amp_norm = float(self.comm.allreduce_scalars(
            [float(amx.sum(amp * amp, dtype=np.float64))])[0])
        if self.amp_norm <= 0:
            raise ValueError("the data contain no photons in valid pixels")
        self.npix_valid = int(np.asarray(data.mask).sum())
        assert data.object_shape is not None  # PtychoData.__post_init__ sets it
        self.object_shape = tuple(data.object_shape)
        self._support = self._probe_support_mask()
        self._buffers()
        self.reset()

    def _amplitudes(self, intensities: np.ndarray):
        """Measured amplitudes in FFT order, zero at masked pixels, computed where they will
        live (host memory when streaming to the GPU)."""
        amx = np if self.streaming else self.xp
        amp = amx.asarray(intensities, dtype=np.float32)
        amp = amx.fft.ifftshift(amx.sqrt(amx.maximum(amp, 0)), axes=(-2, -1))
        amp *= amx.asarray(self._mask_fft, dtype=np.float32)
        return amp

    def add_frames(self, intensities: np.ndarray, positions: np.ndarray) -> bool:
        """Append frames to this rank's share of a running reconstruction (a live scan).

        Collective over the communicator: every rank calls it, with zero frames if it has
        none to add. The amplitudes are prepared for the new frames only and their exit
        waves start as ``P O`` of the current object and probe, so the cost follows the new
        frames, not the whole scan. Returns False, changing nothing, where the layout cannot
        grow in place (the GPU would have to stream from host memory, or sub-pixel positions
        arrive in a whole-pixel reconstruction): then build a new Reconstructor.
        """
        pos = np.asarray(positions, dtype=np.float64).reshape(-1, 2)
        m = len(pos)
        fractional = bool(np.any(np.abs(pos - np.round(pos)) > 1e-6))
        total = self.local_frames + m
        factor = 1 if self.plain else 2 * self.K
        grows = self.streaming or (fractional and not self.subpixel) or (
            self.ops.name != "numpy" and self.ops.plan(self.n, total * factor, None,
                                                       self.config.host_frames)[1])
        amp = self._amplitudes(intensities) if m and not grows else None
        power = float(self.xp.sum(amp * amp, dtype=np.float64)) if amp is not None else 0.0
        blocked, added, frames = self.comm.allreduce_scalars([float(grows), power, float(m)])
        if blocked > 0:
            return False
        self.amp_norm += float(added)
        self._total += int(frames)
        if not m:
            return True
        old = self.local_frames
        self.amp = self._extend("amp", amp)
        self.local_frames = total
        self.frames = (self.frames[0], self.frames[0] + total)
        self.initial_positions = np.concatenate([self.initial_positions, pos])
        self._set_positions(np.concatenate([self.positions, pos]))
        self.psi = self._extend("psi", None, m * self.K)
        self._probe_next = None
        fresh = np.zeros(total, dtype=bool)
        fresh[old:] = True
        self._restart_frames(fresh)
        return True

    def _extend(self, name: str, rows, count: int = 0):
        """``self.<name>`` with rows appended (``count`` uninitialised ones if ``rows`` is
        None), in a buffer that doubles when full: appending batch after batch costs the
        new rows, not a copy of everything held so far."""
        current = getattr(self, name)
        count = len(rows) if rows is not None else count
        used = current.shape[0]
        store, handed = getattr(self, "_grown", {}).get(name, (None, None))
        if handed is not current or store.shape[0] < used + count:
            store = self.xp.empty((max(used + count, 2 * used),) + current.shape[1:],
                                  dtype=current.dtype)
            store[:used] = current
        out = store[:used + count]
        if rows is not None:
            out[used:] = rows
        self._grown = {**getattr(self, "_grown", {}), name: (store, out)}
        return out

    # ------------------------------------------------------------ positions and views
    def _set_positions(self, pos: np.ndarray) -> None:
        """Whole-pixel windows per view, sub-pixel ramps per frame; drops cached views."""
        self.positions = np.asarray(pos, dtype=np.float64)
        whole, frac = split_positions(self.positions, self.subpixel)
        self.iyf_host, self.ixf_host = whole[:, 0].copy(), whole[:, 1].copy()
        self.iy_host = np.repeat(self.iyf_host, self.K)
        self.ix_host = np.repeat(self.ixf_host, self.K)
        self.iy, self.ix = self.ops.asarray(self.iy_host), self.ops.asarray(self.ix_host)
        if self.K == 1:
            self.iyf, self.ixf = self.iy, self.ix
        else:
            self.iyf, self.ixf = self.ops.asarray(self.iyf_host), self.ops.asarray(self.ixf_host)
        self._ramps = shift_ramps(self.xp, frac, self.n) if self.subpixel else None
        self._views = None
        self._obj_den = None

    def _probe_arg(self, s: int, e: int):
        """The probe argument of the kernels for frames [s, e): the shared probe, or the
        block's per-view probes."""
        if self.plain:
            return self.probe
        if self._views is None:
            self._views = self._compute_views()
        return self._views[s * self.K:e * self.K]

    def _all_views(self):
        return self._probe_arg(0, self.local_frames)

    def _compute_views(self):
        """(frames x K, N, N): mode k Fourier-shifted by frame j's sub-pixel offset."""
        xp, n, k = self.xp, self.n, self.K
        probes = self.probe if k > 1 else self.probe[None]
        views = xp.empty((self.local_frames * k, n, n), dtype=xp.complex64)
        if not self.subpixel:
            views.reshape(self.local_frames, k, n, n)[...] = probes[None]
            return views
        spec = self.ops.fft2(probes)
        ry, rx = self._ramps
        for s, e in self._blocks():  # one batched inverse FFT per block of frames
            ramp = ramp_block(ry[s:e], rx[s:e])
            views[s * k:e * k] = self.ops.ifft2((ramp[:, None] * spec[None]).reshape(-1, n, n))
        return views

    def _vs(self, s: int, e: int) -> slice:
        return slice(s * self.K, e * self.K)

    # ------------------------------------------------------------ state
    def _buffers(self) -> None:
        xp, n, b = self.xp, self.n, self.block * self.K
        host = self.ops.name == "numpy"  # the CuPy kernels need no exit-wave/abs buffers
        self._work = [_Work(xp, b, n, host) for _ in range(self._threads)]
        if self.streaming:  # device copies of one block of psi and amplitudes
            self._psi_dev = xp.empty((b, n, n), dtype=xp.complex64)
            self._amp_dev = xp.empty((self.block, n, n), dtype=xp.float32)

    def _map_blocks(self, init, fn) -> list:
        """fn(work, s, e, acc) over all blocks of frames; returns each thread's acc.

        With T threads (NumPy backend), thread t takes the t-th contiguous share of the
        blocks and its own buffers and accumulator (init()); the caller sums the accumulators
        in thread order, so results are deterministic for a given T.
        """
        if not self.plain and self._views is None:  # before the threads share them
            self._views = self._compute_views()
        blocks = list(self._blocks())
        shares = [blocks[len(blocks) * t // self._threads: len(blocks) * (t + 1) // self._threads]
                  for t in range(self._threads)]

        def run(t: int):
            acc = init()
            for s, e in shares[t]:
                fn(self._work[t], s, e, acc)
            return acc

        if self._pool is None:
            return [run(0)]
        return list(self._pool.map(run, range(self._threads)))

    def _sum(self, parts: list):
        total = parts[0]
        for part in parts[1:]:
            total += part
        return total

    def _probe_support_mask(self):
        frac = self.config.probe_support
        if frac is None:
            return None
        y, x = np.indices((self.n, self.n)) - self.n / 2 + 0.5
        return self.ops.asarray(np.hypot(y, x) <= frac * self.n / 2, dtype=bool)

    def _initial_probe(self) -> np.ndarray:
        data = self.data
        if data.probe_guess is not None:
            return np.asarray(data.probe_guess, dtype=np.complex64)
        # No guess: a flat-phase probe whose far field has the mean measured amplitude.
        mean_amp = np.sqrt(np.maximum(data.intensities.mean(axis=0), 0))
        probe = np.fft.fftshift(np.fft.ifft2(np.fft.ifftshift(mean_amp), norm="ortho"))
        return probe.astype(np.complex64)

    def reset(self) -> None:
        """Start from the initial probe, a seeded near-flat object and psi = P * O_j."""
        xp = self.xp
        rng = np.random.default_rng(self.config.seed)
        obj = (1.0 + 0.01 * (rng.standard_normal(self.object_shape)
                             + 1j * rng.standard_normal(self.object_shape))).astype(np.complex64)
        self.object = self.ops.asarray(obj)
        probe = self._initial_probe()
        if self.K > 1:
            from .modes import initial_modes

            probe = initial_modes(probe, self.K)
        self.probe = self.ops.asarray(probe)
        if self._support is not None:
            self.probe *= self._support
        self._views = None
        shape = (self.local_frames * self.K, self.n, self.n)
        self.psi = (self.ops.host_array(np.empty(shape, np.complex64)) if self.streaming
                    else xp.empty(shape, dtype=xp.complex64))
        def start(work, s, e, acc):
            psi = self._psi(s, e, load=False)
            v = self._vs(s, e)
            self.ops.gather_product(self.object, self._probe_arg(s, e), self.iy[v], self.ix[v],
                                    psi)
            self._store(s, e, psi)

        self._map_blocks(lambda: None, start)
        self._probe_next = None  # (object, eq. 5 sums) left by the last GPU update
        self.iteration = 0
        self.history: dict[str, list[float]] = {"fourier_error": [], "exit_change": [],
                                                "beta": [], "gamma1": [], "gamma2": [],
                                                "algorithm": []}
        self._obj_den = None  # eq. 4 denominator, valid until the probe changes

    def _blocks(self):
        for s in range(0, self.local_frames, self.block):
            yield s, min(s + self.block, self.local_frames)

    # Frames [s, e) of psi / amplitudes on the compute device: views when resident, copies
    # into one block buffer when streaming from host memory (then _store writes psi back).
    def _psi(self, s: int, e: int, load: bool = True):
        v = self._vs(s, e)
        if not self.streaming:
            return self.psi[v]
        dev = self._psi_dev[: v.stop - v.start]
        if load:
            dev.set(self.psi[v])
        return dev

    def _store(self, s: int, e: int, dev) -> None:
        if self.streaming:
            dev.get(out=self.psi[self._vs(s, e)])

    def _amp(self, s: int, e: int):
        if not self.streaming:
            return self.amp[s:e]
        dev = self._amp_dev[: e - s]
        dev.set(self.amp[s:e])
        return dev

    def snapshot(self) -> dict:
        """Host copy of the full state (this rank's exit waves included)."""
        return {"psi": self.ops.to_host(self.psi).copy(),
                "object": self.ops.to_host(self.object).copy(),
                "probe": self.ops.to_host(self.probe).copy(),
                "iteration": self.iteration,
                "positions": self.positions.copy(),
                "history": {k: list(v) for k, v in self.history.items()}}

    def restore(self, state: dict) -> None:
        """Return exactly to a snapshot() state (same rank layout)."""
        if state["psi"].shape != tuple(self.psi.shape):
            raise ValueError(f"snapshot psi shape {state['psi'].shape} != {tuple(self.psi.shape)}")
        self.psi[...] = state["psi"] if self.streaming else self.ops.asarray(state["psi"])
        self.object = self.ops.asarray(state["object"]).copy()
        self.probe = self.ops.asarray(state["probe"]).copy()
        self.iteration = int(state["iteration"])
        self._probe_next = None
        self.history = {k: list(v) for k, v in state["history"].items()}
        if "positions" in state and not np.array_equal(state["positions"], self.positions):
            self._set_positions(np.array(state["positions"], dtype=np.float64))
        self._views = None
        self._obj_den = None

    # ------------------------------------------------------------ eq. 4 and 5
    def _object_denominator(self):
        xp = self.xp
        den = xp.zeros(self.object_shape, dtype=xp.float32)
        self.ops.scatter_power(den, self.probe if self.plain else self._all_views(),
                               self.iy, self.ix)
        return self.comm.allreduce(den)

    def _object_numerator(self, with_den: bool = False):
        """(eq. 4 numerator, denominator or None): with_den (GPU) sums the denominator in
        the same pass over the frames, from the same probe values."""
        xp = self.xp

        def add(work, s, e, acc):
            v = self._vs(s, e)
            self.ops.scatter_conj_probe(acc[0], self._psi(s, e), self._probe_arg(s, e),
                                        self.iy[v], self.ix[v], work.f[: v.stop - v.start],
                                        **({"power": acc[1]} if with_den else {}))

        parts = self._map_blocks(
            lambda: (xp.zeros(self.object_shape, dtype=xp.complex64),
                     xp.zeros(self.object_shape, dtype=xp.float32) if with_den else None), add)
        num = self.comm.allreduce(self._sum([p[0] for p in parts]))
        if not with_den:
            return num, None
        return num, self.comm.allreduce(self._sum([p[1] for p in parts]))

    def _update_object(self) -> None:
        """Eq. 4 with a little inertia (keeps unlit pixels at their old value)."""
        fuse = self._obj_den is None and getattr(self.ops, "fuses_object_power", False)
        num, den = self._object_numerator(with_den=fuse)
        if fuse:
            self._obj_den = den
        elif self._obj_den is None:
            self._obj_den = self._object_denominator()
        self.object = self._inertia_update(num, self.object, self._obj_den,
                                           self.config.object_inertia)

    def _inertia_update(self, num, old, den, inertia: float, support=None):
        """(num + reg old) / (den + reg + 1e-30), reg = inertia * max(den), times support:
        eq. 4/5 with inertia. The GPU ops do it in one kernel without reading max(den) back
        to the host (a device sync every update), with the same result bit for bit."""
        fused = getattr(self.ops, "inertia_update", None)
        if fused is not None:
            return fused(num, old, den, inertia, support)
        reg = inertia * float(den.max())
        out = (num + reg * old) / (den + reg + 1e-30)
        if support is not None:
            out *= support
        return out

    def _update_probe(self) -> None:
        """Eq. 5 with inertia, then the support constraint."""
        if not self.plain:
            self._update_probe_views()
            return
        xp, n = self.xp, self.n

        def add(work, s, e, acc):
            self.ops.probe_sums(self.object, self._psi(s, e), self.iy[s:e], self.ix[s:e],
                                acc[0], acc[1], work.f[: e - s], work.dev[: e - s])

        fused, self._probe_next = self._probe_next, None
        if fused is not None and fused[0] is self.object:  # summed by the last update
            num, den = fused[1], fused[2]
        else:
            parts = self._map_blocks(lambda: (xp.zeros((n, n), dtype=xp.complex64),
                                              xp.zeros((n, n), dtype=xp.float32)), add)
            num = self._sum([p[0] for p in parts])
            den = self._sum([p[1] for p in parts])
        self.comm.allreduce(num)
        self.comm.allreduce(den)
        probe = self._inertia_update(num, self.probe, den, self.config.probe_inertia,
                                     self._support)
        self.probe = probe.astype(xp.complex64, copy=False)
        self._obj_den = None  # the eq. 4 denominator depends on the probe

    def _update_probe_views(self) -> None:
        """Eq. 5 for K modes at sub-pixel positions: per mode k, sum_j S_-f_j[conj(O_j)
        psi_jk] / sum_j |O|^2(r + p_j) (S_f: Fourier shift by f, summed in Fourier space so
        one forward FFT per view and one inverse at the end; the object power, not
        periodic over a window, is sampled bilinearly instead); modes re-orthogonalised."""
        xp, ops, n, k_modes = self.xp, self.ops, self.n, self.K
        objc = xp.conj(self.object)
        power = (self.object.real ** 2 + self.object.imag ** 2).astype(xp.complex64)
        power = xp.pad(power, ((0, 1), (0, 1)), mode="edge")  # room for the +1 corner
        ones = xp.ones((n, n), dtype=xp.complex64)
        sub = self.subpixel
        corners = self._bilinear() if sub else None

        def add(work, s, e, acc):
            k, v = e - s, self._vs(s, e)
            t = ops.gather_product(objc, self._psi(s, e), self.iy[v], self.ix[v],
                                   work.f[: k * k_modes])
            if sub:
                back = xp.conj(ramp_block(self._ramps[0][s:e], self._ramps[1][s:e]))
                acc[0] += (ops.fft2(t).reshape(k, k_modes, n, n) * back[:, None]).sum(axis=0)
                for cy, cx, wgt in corners:
                    d = ops.gather_product(power, ones, cy[s:e], cx[s:e], work.x[:k])
                    acc[1] += (d.real * wgt[s:e, None, None]).sum(axis=0)
            else:
                d = ops.gather_product(power, ones, self.iyf[s:e], self.ixf[s:e], work.x[:k])
                acc[0] += t.reshape(k, k_modes, n, n).sum(axis=0)
                acc[1] += d.real.sum(axis=0)

        parts = self._map_blocks(lambda: [xp.zeros((k_modes, n, n), dtype=xp.complex64),
                                          xp.zeros((n, n), dtype=xp.float32)], add)
        num = self.comm.allreduce(self._sum([p[0] for p in parts]))
        den = self.comm.allreduce(self._sum([p[1] for p in parts]))
        if sub:
            num = ops.ifft2(num)
        probes = self.probe if k_modes > 1 else self.probe[None]
        reg = self.config.probe_inertia * float(den.max())
        new = ((num + reg * probes) / (den + reg + 1e-30)).astype(xp.complex64)
        if self._support is not None:
            new *= self._support
        if k_modes > 1:
            from .modes import orthogonalize

            new, unitary = orthogonalize(xp, new)
            self._mix_modes(unitary)
        self.probe = new if k_modes > 1 else new[0]
        self._views = None
        self._obj_den = None

    def _mix_modes(self, unitary: np.ndarray) -> None:
        """psi_j <- U psi_j over the mode axis: the exit waves follow the re-orthogonalised
        modes (the summed intensities do not change)."""
        if np.allclose(unitary, np.eye(self.K), atol=1e-7):
            return
        km, nn = self.K, self.n * self.n

        def mix(work, s, e, acc):
            psi = self._psi(s, e)
            u = self.ops.asarray(unitary) if not isinstance(psi, np.ndarray) else unitary
            p3 = psi.reshape(e - s, km, nn)
            p3[...] = u @ p3
            self._store(s, e, psi)

        self._map_blocks(lambda: None, mix)

    def _bilinear(self) -> list:
        """[(iy, ix, weight)] for the four whole-pixel windows around each frame's exact
        position (device arrays, one weight per frame)."""
        pos = self.positions
        base = np.floor(pos).astype(np.int32)
        t = (pos - base).astype(np.float32)
        out = []
        for dy, dx in ((0, 0), (0, 1), (1, 0), (1, 1)):
            wgt = (t[:, 0] if dy else 1 - t[:, 0]) * (t[:, 1] if dx else 1 - t[:, 1])
            out.append((self.ops.asarray(base[:, 0] + dy), self.ops.asarray(base[:, 1] + dx),
                        self.ops.asarray(wgt)))
        return out

    def _overlap_update(self) -> None:
        """Eq. 4-5 by alternating updates: (probe, object) x overlap_iterations.

        The probe is refined against the current object first and the object then follows
        the new probe, so the object that enters P * O_j always matches the probe (the
        order object -> probe, without a final object update, stalls from a poor guess).
        """
        if self.iteration < self.config.probe_update_start:
            self._update_object()
            return
        for _ in range(self.config.overlap_iterations):
            self._update_probe()
            self._update_object()

    # ------------------------------------------------------------ one iteration
    def _iterate(self, algorithm: str, beta: float, gamma1: float, gamma2: float) -> list:
        """One iteration; returns its error sums unread: per thread, the blocks' Fourier
        error sums and exit-wave change sums (host floats, or device scalars on the GPU),
        which _flush turns into the history values."""
        ops, xp = self.ops, self.xp
        self._overlap_update()
        coef = update_coefficients(algorithm, beta, gamma1, gamma2)
        pb = self.config.fourier_power_bound
        extra_obj = None
        if coef.g != 0.0:  # generalised DM with gamma1 != -1: P_O(P_F psi), linear in psi
            def project(work, s, e, num):
                v = self._vs(s, e)
                k = v.stop - v.start
                proj, _ = ops.fourier_project(self._psi(s, e), self._amp(s, e), self.maskf,
                                              self.notmask, pb, work.x[:k], work.cut("abs", k),
                                              work.dev[:k], modes=self.K)
                ops.scatter_conj_probe(num, proj, self._probe_arg(s, e), self.iy[v],
                                       self.ix[v], work.f[:k])

            num = self._sum(self._map_blocks(
                lambda: xp.zeros(self.object_shape, dtype=xp.complex64), project))
            self.comm.allreduce(num)
            extra_obj = self._inertia_update(num, self.object, self._obj_den,
                                             self.config.object_inertia)
        # GPU, one shared probe: the update also sums the next probe update's eq. 5 terms
        # (the object stays as it is until then), which saves that update a pass over psi
        fuse = self.plain and getattr(ops, "fuses_probe_sums", False)

        def update(work, s, e, acc):
            v = self._vs(s, e)
            k = v.stop - v.start
            iy, ix = self.iy[v], self.ix[v]
            probe = self._probe_arg(s, e)
            po = ops.exit_waves(self.object, probe, iy, ix, work.cut("po", k))
            extra = None
            if extra_obj is not None:
                extra = ops.exit_waves(extra_obj, probe, iy, ix, work.x[:k])
            psi = self._psi(s, e)
            err, dchange = ops.fourier_update(
                psi, po, self._amp(s, e), self.maskf, self.notmask, coef, pb, work.f[:k],
                work.cut("abs", k), work.dev[:k], extra, modes=self.K,
                **({"probe_sums": acc[2]} if fuse else {}))
            self._store(s, e, psi)
            acc[0].append(err.sum())  # read back later (_flush): no device sync here
            acc[1].append(dchange)

        n = self.n
        parts = self._map_blocks(
            lambda: [[], [], (xp.zeros((n, n), dtype=xp.complex64),
                              xp.zeros((n, n), dtype=xp.float32))] if fuse else [[], []],
            update)
        if fuse:
            self._probe_next = (self.object, self._sum([p[2][0] for p in parts]),
                                self._sum([p[2][1] for p in parts]))
        if self.config.refine_positions and self.iteration >= self.config.position_start:
            self._refine_positions()
        self.iteration += 1
        return [(p[0], p[1]) for p in parts]

    def _flush(self, pending: list, out: dict) -> None:
        """Turn the pending iterations' error sums into history values, in order, and raise
        ReconstructionDiverged for the first one that diverged.

        The sums are added exactly as a per-iteration read would add them (each block's
        value as a float, in block then thread order; one allreduce per iteration), so the
        history is the same; on the GPU they come back in one transfer. Every pending
        iteration enters the history (it has run: the state includes it), and the error
        names the first that diverged. The probe is checked as it is now."""
        flat = [v for parts, _ in pending for part in parts for vals in part for v in vals]
        to_floats = getattr(self.ops, "to_floats", None)
        host = iter(to_floats(flat) if to_floats is not None else [float(v) for v in flat])
        first = None
        for parts, (params, iteration) in pending:
            sums = []
            for ferr_vals, change_vals in parts:  # thread order
                ferr_t, change_t = 0.0, 0.0
                for _ in ferr_vals:
                    ferr_t += next(host)
                for _ in change_vals:
                    change_t += next(host)
                sums.append((ferr_t, change_t))
            totals = self.comm.allreduce_scalars([sum(t[0] for t in sums),
                                                  sum(t[1] for t in sums)])
            # both relative to the measured power sum A^2 (~ sum |psi|^2)
            ferr, change = totals[0] / self.amp_norm, totals[1] / self.amp_norm
            for key, val in (("fourier_error", ferr), ("exit_change", change)):
                out[key].append(val)
                self.history[key].append(val)
            for key, val in zip(("beta", "gamma1", "gamma2", "algorithm"), params):
                self.history[key].append(val)
            if first is None:
                reason = self._divergence(ferr, change)
                if reason:
                    first = (iteration, reason)
        if first is None:
            pnorm = float(self.xp.abs(self.probe).max())
            if not math.isfinite(pnorm):
                first = (self.iteration, "probe contains NaN or inf")
        if first is not None:
            raise ReconstructionDiverged(first[0], first[1], self.history)

    def step(self, n_iterations: int, beta: float | None = None, gamma1: float | None = None,
             gamma2: float | None = None, algorithm: str = "dm",
             model_error: bool = True) -> dict:
        """Run ``n_iterations`` with the given relaxation; returns this call's error history
        (lists ``fourier_error``, ``exit_change``) and ``model_error`` after the last one
        (None with ``model_error=False``: it costs one more pass over the frames, which a
        caller stepping one iteration at a time may not want).

        Defaults: DM beta=1, gamma1=-1/beta, gamma2=1/beta (Elser's choice; plain DM at
        beta=1); RAAR beta=0.9. Raises ValueError for bad parameters and
        ReconstructionDiverged when the error becomes non-finite or explodes.

        The errors are read back every ``ops.check_interval`` iterations (1 for NumPy; 16 on
        the GPU, where each read stalls the device queue; whole-pixel single-mode runs) and
        at the end of the call. There a divergence is therefore raised up to 15 iterations after the iteration it
        names (``ReconstructionDiverged.iteration``, as before the count of iterations up to
        and including the first diverged one); the history then holds every iteration run.
        """
        if not isinstance(n_iterations, (int, np.integer)) or n_iterations < 0:
            raise ValueError(f"n_iterations must be an integer >= 0, got {n_iterations!r}")
        if beta is None:
            beta = 0.9 if algorithm == "raar" else 1.0
        check_parameters(algorithm, beta, 0.0 if gamma1 is None else gamma1,
                         0.0 if gamma2 is None else gamma2)
        gamma1 = -1.0 / beta if gamma1 is None else float(gamma1)
        gamma2 = 1.0 / beta if gamma2 is None else float(gamma2)
        check_parameters(algorithm, beta, gamma1, gamma2)
        out: dict = {"fourier_error": [], "exit_change": []}
        # deferred reads on the whole-pixel single-mode path only: the others read the
        # device anyway (probe views, position refinement, which must not see NaN positions)
        every = max(1, int(getattr(self.ops, "check_interval", 1))) if self.plain else 1
        params = (beta, gamma1, gamma2, algorithm)
        pending: list = []
        for _ in range(int(n_iterations)):
            sums = self._iterate(algorithm, float(beta), gamma1, gamma2)
            pending.append((sums, (params, self.iteration)))
            if len(pending) >= every:
                batch, pending = pending, []
                self._flush(batch, out)
        if pending:
            self._flush(pending, out)
        out["model_error"] = self.model_error() if model_error else None
        return out

    def model_error(self) -> float:
        """Fourier error of the current estimate itself: sum over valid pixels of
        (|FFT(P O_j)| - A)^2 / sum A^2 (one extra FFT pass; the per-iteration
        fourier_error is that of the wave fed to the modulus projection, as ptypy reports)."""
        def add(work, s, e, acc):
            v = self._vs(s, e)
            k = v.stop - v.start
            waves = self.ops.gather_product(self.object, self._probe_arg(s, e), self.iy[v],
                                            self.ix[v], work.f[:k])
            err = self.ops.fourier_error(waves, self._amp(s, e), self.maskf, work.cut("abs", k),
                                         work.dev[:k], modes=self.K)
            acc[0] += float(err.sum())

        total = sum(p[0] for p in self._map_blocks(lambda: [0.0], add))
        return float(self.comm.allreduce_scalars([total])[0]) / self.amp_norm

    def _divergence(self, ferr: float, change: float) -> str | None:
        """Why an iteration with these relative errors counts as diverged, or None."""
        if not (math.isfinite(ferr) and math.isfinite(change)):
            return f"non-finite error (fourier_error={ferr}, exit_change={change})"
        if ferr > self.config.divergence_threshold:
            return (f"fourier_error {ferr:.3g} exceeds divergence_threshold "
                    f"{self.config.divergence_threshold:.3g}")
        return None

    # ------------------------------------------------------------ results
    def illumination(self) -> np.ndarray:
        """Sum over all frames of |P|^2 in object coordinates (the eq. 4 denominator)."""
        den = self._obj_den if self._obj_den is not None else self._object_denominator()
        return self.ops.to_host(den).astype(np.float64)

    def result(self) -> dict:
        """Host copies of the object, the probe (the strongest mode), the illumination map
        and the positions of all frames (refined ones with refine_positions: then every rank
        must call result(), it gathers them; None for an un-refined share of a scan); with
        K > 1 also ``probe_modes`` and ``mode_fractions``."""
        probe = self.ops.to_host(self.probe).copy()
        out = {"object": self.ops.to_host(self.object).copy(),
               "probe": probe if self.K == 1 else probe[0].copy(),
               "illumination": self.illumination(),
               "iteration": self.iteration,
               "positions": self.global_positions() if self.config.refine_positions
               else (self.positions.copy() if self._total == self.local_frames else None),
               "config": asdict(self.config)}
        if self.K > 1:
            from .modes import power_fractions

            out["probe_modes"] = probe
            out["mode_fractions"] = power_fractions(probe)
        return out

    def global_positions(self) -> np.ndarray:
        """(all frames, 2) current positions (y, x) in object pixels, gathered over ranks."""
        if self.comm.size == 1 and self._total == self.local_frames:
            return self.positions.copy()
        buf = np.zeros((self._total, 2), dtype=np.float64)
        buf[self._offset:self._offset + self.local_frames] = self.positions
        return self.ops.to_host(self.comm.allreduce(self.ops.asarray(buf))).astype(np.float64)

    # ------------------------------------------------------------ position refinement
    def _refine_positions(self) -> None:
        """One bounded Gauss-Newton step of every frame's position (positions.py), then
        the mean shift over all frames removed; frames whose whole-pixel window changes
        restart from P O_j."""
        xp, ops, km = self.xp, self.ops, self.K
        obj = self.object
        grad_y = 0.5 * (xp.roll(obj, -1, axis=0) - xp.roll(obj, 1, axis=0))
        grad_x = 0.5 * (xp.roll(obj, -1, axis=1) - xp.roll(obj, 1, axis=1))

        def add(work, s, e, acc):
            v = self._vs(s, e)
            k, kv = e - s, v.stop - v.start
            probe, iy, ix = self._probe_arg(s, e), self.iy[v], self.ix[v]
            w = ops.gather_product(obj, probe, iy, ix, work.f[:kv])
            proj, _ = ops.fourier_project(w, self._amp(s, e), self.maskf, self.notmask, None,
                                          work.x[:kv], work.cut("abs", kv), work.dev[:kv],
                                          modes=km)
            delta = (proj - w).reshape(k, -1)
            gy = ops.gather_product(grad_y, probe, iy, ix, xp.empty_like(w)).reshape(k, -1)
            gx = ops.gather_product(grad_x, probe, iy, ix, xp.empty_like(w)).reshape(k, -1)
            sums = xp.stack([(gy.real ** 2 + gy.imag ** 2).sum(axis=1),
                             (gx.real ** 2 + gx.imag ** 2).sum(axis=1),
                             (gy.conj() * gx).real.sum(axis=1),
                             (gy.conj() * delta).real.sum(axis=1),
                             (gx.conj() * delta).real.sum(axis=1)])
            acc.append((s, ops.to_host(sums).astype(np.float64)))

        sums = np.zeros((5, self.local_frames))
        for part in self._map_blocks(list, add):
            for s, block in part:
                sums[:, s:s + block.shape[1]] = block
        steps = bound_steps(solve_shifts(*sums), self.config.position_step_max)
        new = self.positions + steps
        moved = new - self.initial_positions
        total = self.comm.allreduce_scalars([moved[:, 0].sum(), moved[:, 1].sum(),
                                             float(self.local_frames)])
        new -= total[:2] / max(total[2], 1.0)  # global drift constraint
        new = np.clip(new, 0.0, self._limit)
        old_y, old_x = self.iyf_host.copy(), self.ixf_host.copy()
        self._set_positions(new)
        changed = (self.iyf_host != old_y) | (self.ixf_host != old_x)
        if changed.any():
            self._restart_frames(changed)

    def join_frames(self, frames: np.ndarray) -> None:
        """Start the exit waves of the frames flagged in ``frames`` (host bool, one per local
        frame) as ``P O`` of the current object and probe: how frames join a running
        reconstruction (live scans, restored states)."""
        self._restart_frames(np.asarray(frames, dtype=bool))

    def _restart_frames(self, changed: np.ndarray) -> None:
        """psi_j = P_j O_j for the frames flagged in ``changed`` (host bool per frame)."""
        km = self.K
        self._probe_next = None  # psi changes outside the update

        def reset(work, s, e, acc):
            rows = np.repeat(changed[s:e], km)
            if not rows.any():
                return
            v = self._vs(s, e)
            kv = v.stop - v.start
            fresh = self.ops.gather_product(self.object, self._probe_arg(s, e), self.iy[v],
                                            self.ix[v], work.f[:kv])
            psi = self._psi(s, e)
            sel = self.ops.asarray(rows)
            psi[sel] = fresh[sel]
            self._store(s, e, psi)

        self._map_blocks(lambda: None, reset)

    def quality(self, threshold: float = 0.5) -> dict:
        """Ground-truth errors (needs data.truth_object); see metrics.compare_objects."""
        from .metrics import compare_objects

        if self.data.truth_object is None:
            raise ValueError("quality() needs ground truth: data.truth_object is None")
        return compare_objects(self.ops.to_host(self.object), self.data.truth_object,
                               self.illumination(), threshold)
