"""CuPy kernels of the engine: batched cuFFT plus fused elementwise / raw kernels.

No Python loop over frames: every kernel covers a whole block of frames (by default all
of this rank's frames). Results repeat bit for bit: no float atomics by default; the object
sums are gathers (each object pixel adds the views that cover it, in frame order, from the
running sum) and the probe sums add groups of 16 frames in order, so a scan streamed from
the host in blocks of a multiple of 16 frames also gives the resident result. The exit-wave
update computes the next probe update's sums on the way (one pass over the frames fewer).
Imported only when backend="cupy" is asked for.

``probe`` arguments are one (n, n) probe or one per view (views, n, n): the kernels read
probe[j * ps + p] with ps = 0 or n * n (sub-pixel shifted probes, probe modes).
"""
from __future__ import annotations

from typing import Any

import cupy as cp
import cupyx
import cupyx.scipy.fft as cufft
import numpy as np
from cupy.cuda import cufft as _cufft_lib

from .errors import DeviceMemoryError

try:  # the plan lookup cupyx.scipy.fft itself makes (its cache, the same plan objects)
    from cupy.fft._fft import _get_cufft_plan_nd
except ImportError:  # another CuPy layout: plans through cupyx.scipy.fft instead
    _get_cufft_plan_nd = None

_INDEX = """
    const int nn = n * n;
    const long long j = i / nn;
    const int p = i - j * nn;
    const int y = p / n;
    const int x = p - y * n;
    const long long o = (long long)(iy[j] + y) * W + ix[j] + x;
"""

_gather_product = cp.ElementwiseKernel(
    "raw complex64 obj, raw complex64 probe, raw int32 iy, raw int32 ix, int32 n, int32 W, "
    "int32 ps", "complex64 out", _INDEX + "out = probe[j * ps + p] * obj[o];",
    "recon_gather_product")

# Object sums as a gather, no atomics: each thread owns object pixels of one 32 x (8 R)
# tile and adds, in frame order, every view whose window covers them (the tile's list of
# views, sorted by view). The sum starts from the target's own value, so a scan summed in
# contiguous blocks of frames (host streaming) adds exactly the same terms in the same
# order as one resident pass: results repeat bit for bit and do not depend on the blocking.
_GATHER = r"""
#include <cupy/complex.cuh>
template <int R, int U, bool NUM, bool DEN>
__global__ void recon_gather_sum(complex<float>* num, float* den,
    const complex<float>* __restrict__ psi, const complex<float>* __restrict__ probe,
    const int* __restrict__ iy, const int* __restrict__ ix, const int* __restrict__ starts,
    const int* __restrict__ views, int n, int H, int W, int ps, int ntx) {
  // NUM: num += conj(P_j) psi_j; DEN: den += |P_j|^2 (the same probe loads serve both)
  // U: views whose terms are loaded before they are added (in order), for small tiles
  const int tile = blockIdx.x;
  const int ty = tile / ntx, tx = tile - ty * ntx;
  const int ox = tx * 32 + threadIdx.x;
  const int oy0 = ty * (8 * R) + threadIdx.y;
  const long long nn = (long long)n * n;
  complex<float> acc[R];
  float accd[R];
#pragma unroll
  for (int r = 0; r < R; ++r) {
    const int oy = oy0 + 8 * r;
    const bool in = ox < W && oy < H;
    acc[r] = (NUM && in) ? num[(long long)oy * W + ox] : complex<float>(0.f, 0.f);
    accd[r] = (DEN && in) ? den[(long long)oy * W + ox] : 0.f;
  }
  const int k1 = starts[tile + 1];
  for (int k = starts[tile]; k < k1; k += U) {
    complex<float> t[U][R];
    float td[U][R];
#pragma unroll
    for (int u = 0; u < U; ++u) {
      const bool valid = k + u < k1;
      const int j = valid ? views[k + u] : 0;
      const int px = ox - ix[j];
      const int y0 = iy[j];
#pragma unroll
      for (int r = 0; r < R; ++r) {
        const int py = oy0 + 8 * r - y0;
        t[u][r] = complex<float>(0.f, 0.f);
        td[u][r] = 0.f;
        if (valid && (unsigned)px < (unsigned)n && (unsigned)py < (unsigned)n) {
          const long long q = (long long)py * n + px;
          const complex<float> P = probe[j * (long long)ps + q];
          if (DEN) td[u][r] = P.real() * P.real() + P.imag() * P.imag();
          if (NUM) t[u][r] = conj(P) * psi[j * nn + q];
        }
      }
    }
#pragma unroll
    for (int u = 0; u < U; ++u) {
#pragma unroll
      for (int r = 0; r < R; ++r) {
        if (NUM) acc[r] += t[u][r];
        if (DEN) accd[r] += td[u][r];
      }
    }
  }
#pragma unroll
  for (int r = 0; r < R; ++r) {
    const int oy = oy0 + 8 * r;
    if (ox < W && oy < H) {
      if (NUM) num[(long long)oy * W + ox] = acc[r];
      if (DEN) den[(long long)oy * W + ox] = accd[r];
    }
  }
}

// eq. 5 partial sums: one thread per (probe pixel, chunk of frames), the chunk's frames
// added in order; the chunks are then summed in a fixed order.
extern "C" __global__ void recon_probe_sums(
    const complex<float>* __restrict__ obj, const complex<float>* __restrict__ psi,
    const int* __restrict__ iy, const int* __restrict__ ix, complex<float>* pnum,
    float* pden, int frames, int n, int W, int chunk) {
  const int nn = n * n;
  const int p = blockIdx.x * blockDim.x + threadIdx.x;
  const int c = blockIdx.y;
  if (p >= nn) return;
  const int j0 = c * chunk, j1 = min(frames, j0 + chunk);
  const int y = p / n, x = p - (p / n) * n;
  complex<float> a(0.f, 0.f);
  float d = 0.f;
#pragma unroll 4
  for (int j = j0; j < j1; ++j) {
    const complex<float> o = obj[(long long)(iy[j] + y) * W + ix[j] + x];
    a += conj(o) * psi[(long long)j * nn + p];
    d += o.real() * o.real() + o.imag() * o.imag();
  }
  pnum[(long long)c * nn + p] = a;
  pden[(long long)c * nn + p] = d;
}
"""
# (rows of 8 per thread, views loaded at once): 32 x 32 tiles, or 32 x 8 for small objects
_TILE_ROWS = ((4, 1), (1, 4))
_GROUP = 16  # frames per thread in the probe sums and the exit-wave update

# total += parts[0] + parts[1] + ... in this order, from the running total (eq. 5 numerator
# and denominator in one launch): with blocks of a multiple of _GROUP frames, a streamed
# scan adds the same group sums in the same order
_add_groups = cp.ElementwiseKernel(
    "raw complex64 pnum, raw float32 pden, int32 groups, int32 nn", "complex64 num, float32 den",
    """
    complex<float> t = num;
    float u = den;
    for (int g = 0; g < groups; ++g) {
      t += pnum[(long long)g * nn + i];
      u += pden[(long long)g * nn + i];
    }
    num = t;
    den = u;
    """, "recon_add_groups")

# Eq. 4/5 with inertia, out = (num + reg old) / (den + reg + tiny) with reg = inertia *
# max(den), in one pass and without reading max(den) back to the host (which would stall
# the queue every update). Written with the operators, in the order, that CuPy's own
# multiply/add/divide kernels apply to the same expression with a host scalar reg (a
# complex64 (reg, 0); a float32 denominator as (d, 0)), so the result is bit for bit the
# same; reg is rounded from the float64 product exactly as a host float would be.
_INERTIA = """
    const float reg = (float)((double)mx[0] * inertia);
    out = (num + complex<float>(reg, 0.f) * old) / complex<float>(den + reg + tiny, 0.f);
"""
_inertia_update = cp.ElementwiseKernel(
    "complex64 num, complex64 old, float32 den, raw float32 mx, float64 inertia, float32 tiny",
    "complex64 out", _INERTIA, "recon_inertia_update")
_inertia_update_support = cp.ElementwiseKernel(
    "complex64 num, complex64 old, float32 den, bool sup, raw float32 mx, float64 inertia, "
    "float32 tiny", "complex64 out",
    _INERTIA + "    out = out * complex<float>(sup ? 1.f : 0.f, 0.f);\n",
    "recon_inertia_update_support")
_TINY = np.float32(1e-30)

_gather = cp.RawModule(code=_GATHER, name_expressions=[
    f"recon_gather_sum<{r}, {u}, {m}>" for r, u in _TILE_ROWS
    for m in ("true, false", "false, true", "true, true")]
    + ["recon_probe_sums"])

# float atomics (--gpu-atomics): the thread order changes the last bits of the sums
_scatter_conj_atomic = cp.ElementwiseKernel(
    "raw complex64 psi, raw complex64 probe, raw int32 iy, raw int32 ix, int32 n, int32 W, "
    "int32 ps", "raw float32 target",
    _INDEX + """
    const complex<float> v = conj(probe[j * ps + p]) * psi[i];
    atomicAdd(&target[2 * o], v.real());
    atomicAdd(&target[2 * o + 1], v.imag());
    """, "recon_scatter_conj")


# layouts kept (most recently used first): a scan's blocks, the whole scan for the
# illumination, and a few earlier position sets (refinement, frames added to a live scan)
_LAYOUTS_KEPT = 32


class _Layout:
    """Which views cover each object tile (CSR: views[starts[t]:starts[t+1]], sorted)."""

    __slots__ = ("iy", "ix", "n", "shape", "starts", "views", "rows", "unroll", "ntx", "ntiles",
                 "comb")

    def __init__(self, iy, ix, n: int, shape: tuple[int, int]) -> None:
        h, w = shape
        tiles_big = ((h + 31) // 32) * ((w + 31) // 32)
        # enough tiles to fill the GPU: 32 x 32 tiles on large objects, 32 x 8 otherwise
        self.rows, self.unroll = _TILE_ROWS[0] if tiles_big >= 1024 else _TILE_ROWS[1]
        th = 8 * self.rows
        self.ntx = (w + 31) // 32
        self.ntiles = ((h + th - 1) // th) * self.ntx
        self.iy, self.ix = iy, ix  # held: their memory cannot be reused while cached
        self.n, self.shape = n, shape
        self.comb = None  # FFT of the scan positions' comb (scatter_power), made on demand
        views = iy.size
        ty0, tx0 = iy // th, ix // 32
        cy = (iy + n - 1) // th - ty0 + 1
        cx = (ix + n - 1) // 32 - tx0 + 1
        cnt = (cy * cx).astype(cp.int64)
        end = cp.cumsum(cnt)
        total = int(end[-1]) if views else 0
        k = cp.arange(total, dtype=cp.int64)
        j = cp.searchsorted(end, k, side="right")
        local = k - (end[j] - cnt[j])
        tile = (ty0[j] + local // cx[j]) * self.ntx + tx0[j] + local % cx[j]
        order = cp.argsort(tile * views + j)  # unique keys: by tile, then by view
        self.views = j[order].astype(cp.int32)
        self.starts = cp.searchsorted(tile[order], cp.arange(self.ntiles + 1),
                                      side="left").astype(cp.int32)

    def matches(self, iy, ix) -> bool:
        return (self.iy.data.ptr == iy.data.ptr and self.ix.data.ptr == ix.data.ptr
                and self.iy.shape == iy.shape and self.ix.shape == ix.shape
                and self.iy.strides == iy.strides and self.ix.strides == ix.strides)


# Exit waves P * O_j are never stored: the mix and update kernels recompute them from the
# object (read through L2) and the probe, which saves a full write + read of the frames.
# The FFTs run unscaled (cuFFT's own output; CuPy's "ortho" scaling would be one more pass
# over the frames each way): the kernels below take s = 1/N and see |F| = s |FFT f|, and the
# projection writes s^2 F' so that the unscaled inverse returns the orthonormal result.
_frame_error = cp.ReductionKernel(
    "complex64 f, float32 amp, float32 m, float32 s", "float32 err",
    "m * (abs(f) * s - amp) * (abs(f) * s - amp)", "a + b", "err = a", "0",
    "recon_frame_error")

_project = cp.ElementwiseKernel(
    "float32 amp, float32 m, raw float32 r, int32 nn, float32 s", "complex64 f",
    """
    const float rj = r[i / nn];
    const float mag = max(abs(f) * s, 1e-30f);
    const float factor = m > 0.f ? (1.f - rj) * amp / mag + rj : 1.f;
    f = f * (factor * s * s);
    """, "recon_project")


# Fused passes (no frame-sized temporaries): the modulus projection with its per-frame
# error, and the exit-wave update with its change sum. Each block of 256 threads covers one
# contiguous range of one frame and writes one partial sum (tree-reduced in shared memory,
# a fixed order), so the sums repeat bit for bit.
_FUSED = r"""
#include <cupy/complex.cuh>
__device__ float block_sum(float v) {
  __shared__ float sh[256];
  sh[threadIdx.x] = v;
  __syncthreads();
  for (int s = 128; s > 0; s >>= 1) {
    if (threadIdx.x < s) sh[threadIdx.x] += sh[threadIdx.x + s];
    __syncthreads();
  }
  return sh[0];
}

// f = a P O_j + b psi_j: one block per contiguous range of one frame (no 64-bit division
// per element, which made the elementwise version ~60 % slower than its memory traffic)
extern "C" __global__ void recon_mix(
    const complex<float>* __restrict__ obj, const complex<float>* __restrict__ pr,
    const int* __restrict__ iy, const int* __restrict__ ix, int n, int W, int ps,
    const complex<float>* __restrict__ psi, float a, float b, complex<float>* __restrict__ f,
    int chunks) {
  const int nn = n * n;
  const int j = blockIdx.x / chunks, chunk = blockIdx.x - j * chunks;
  const int per = (nn + chunks - 1) / chunks;
  const int start = chunk * per, stop = min(nn, start + per);
  const long long base = (long long)j * nn;
  const complex<float>* P = pr + (long long)j * ps;
  const complex<float>* O = obj + (long long)iy[j] * W + ix[j];
  for (int p = start + threadIdx.x; p < stop; p += blockDim.x) {
    const int y = p / n, x = p - (p / n) * n;
    f[base + p] = a * (P[p] * O[(long long)y * W + x]) + b * psi[base + p];
  }
}

// unscaled spectrum f (s = 1/N, see above): error of |F| = s|f| against amp, f <- s^2 F'
extern "C" __global__ void recon_modulus(complex<float>* f, const float* amp, const float* m,
                                         float* partial, int nn, int chunks, float s) {
  const int frame = blockIdx.x / chunks, chunk = blockIdx.x - frame * chunks;
  const int per = (nn + chunks - 1) / chunks;
  const int start = chunk * per, stop = min(nn, start + per);
  const float s2 = s * s;
  float acc = 0.f;
  for (int p = start + threadIdx.x; p < stop; p += blockDim.x) {
    const long long i = (long long)frame * nn + p;
    const complex<float> v = f[i];
    const float a = amp[i], mk = m[p];
    const float mag = abs(v) * s;
    const float dev = mag - a;
    acc += mk * dev * dev;
    f[i] = v * (mk > 0.f ? s2 * a / max(mag, 1e-30f) : s2);
  }
  const float total = block_sum(acc);
  if (threadIdx.x == 0) partial[blockIdx.x] = total;
}

// psi_j <- psi_j + delta_j for a group of G frames, one thread per frame pixel looping over
// the group (loads of U frames in flight); writes the group's partial change sum per block
// and, when pnum is given (shared probe), the group's eq. 5 sums conj(O_j) psi_j, |O_j|^2
// with the NEW psi: they are the next probe update's sums (the object does not change in
// between), which saves that update a pass over the frames.
extern "C" __global__ void recon_update(
    const complex<float>* __restrict__ fp, const complex<float>* __restrict__ obj,
    const complex<float>* __restrict__ xobj, const complex<float>* __restrict__ pr,
    const int* __restrict__ iy, const int* __restrict__ ix, int n, int W, int ps,
    float d, float e, float c1, float g, complex<float>* __restrict__ psi,
    float* __restrict__ partial, int frames, int G, complex<float>* __restrict__ pnum,
    float* __restrict__ pden) {
  const int nn = n * n;
  const int p = blockIdx.x * blockDim.x + threadIdx.x;
  const int grp = blockIdx.y;
  const int j0 = grp * G, j1 = min(frames, j0 + G);
  float acc = 0.f, dd = 0.f;
  complex<float> a(0.f, 0.f);
  if (p < nn) {
    const int y = p / n, x = p - (p / n) * n;
#pragma unroll 4
    for (int j = j0; j < j1; ++j) {
      const long long i = (long long)j * nn + p;
      const long long o = (long long)(iy[j] + y) * W + ix[j] + x;
      const complex<float> P = pr[(long long)j * ps + p];
      const complex<float> O = obj[o];
      const complex<float> old = psi[i];
      complex<float> delta = d * fp[i] + e * (P * O) + c1 * old;
      if (g != 0.f) delta += g * (P * xobj[o]);
      const complex<float> nv = old + delta;
      psi[i] = nv;
      acc += delta.real() * delta.real() + delta.imag() * delta.imag();
      a += conj(O) * nv;
      dd += O.real() * O.real() + O.imag() * O.imag();
    }
    if (pnum != nullptr) {
      pnum[(long long)grp * nn + p] = a;
      pden[(long long)grp * nn + p] = dd;
    }
  }
  const float total = block_sum(acc);
  if (threadIdx.x == 0) partial[(long long)grp * gridDim.x + blockIdx.x] = total;
}
"""
_fused = cp.RawModule(code=_FUSED)
_CHUNK = 4096  # frame pixels per thread block (16 per thread)


def _chunks(nn: int) -> int:
    return max(1, (nn + _CHUNK - 1) // _CHUNK)


class _ExitWaves:
    """P * O_j left unevaluated: the Fourier kernels read object and probe directly."""

    __slots__ = ("obj", "probe", "iy", "ix")

    def __init__(self, obj, probe, iy, ix) -> None:
        self.obj, self.probe, self.iy, self.ix = obj, probe, iy, ix


class CupyOps:
    """Same interface as NumpyOps; arrays live on the current CUDA device."""

    name = "cupy"
    xp = cp

    # the engine reads the per-iteration error sums back (one device sync) every this many
    # iterations and at the end of each step() call, not after every iteration
    check_interval = 16

    def __init__(self, deterministic: bool = True) -> None:
        self._ones: dict[int, Any] = {}  # n -> a cached (n, n) float32 array of ones
        self.deterministic = bool(deterministic)
        self._layouts: list[_Layout] = []
        self._plans: dict = {}  # frame-stack shape -> cuFFT plan (a few block sizes)

    # ------------------------------------------------------------ memory
    def asarray(self, a, dtype=None):
        return cp.ascontiguousarray(cp.asarray(a, dtype=dtype))

    def to_host(self, a) -> np.ndarray:
        return cp.asnumpy(a)

    def synchronize(self) -> None:
        cp.cuda.get_current_stream().synchronize()

    @staticmethod
    def to_floats(values: list) -> list[float]:
        """Host floats of device scalars (0-d arrays) in order: one transfer per dtype
        instead of one synchronising read each; each value converts exactly."""
        out: list = [None] * len(values)
        groups: dict = {}
        for i, v in enumerate(values):
            if isinstance(v, cp.ndarray):
                groups.setdefault(v.dtype, []).append(i)
            else:
                out[i] = float(v)
        for idx in groups.values():
            host = cp.stack([values[i].reshape(()) for i in idx]).get()
            for i, x in zip(idx, host):
                out[i] = float(x)
        return out

    def inertia_update(self, num, old, den, inertia: float, support=None):
        """(num + reg old) / (den + reg + 1e-30) with reg = inertia * max(den), times the
        support mask when given: the engine's eq. 4/5 update, in one kernel and without a
        host read of max(den) (bit for bit what the array expression gives)."""
        mx = den.max().reshape(1)
        if support is None:
            return _inertia_update(num, old, den, mx, float(inertia), _TINY)
        return _inertia_update_support(num, old, den, support, mx, float(inertia), _TINY)

    def plan(self, n: int, n_frames: int, block: int | None, host_frames: bool | None):
        """(frames per block, streaming?).

        Resident (psi and amplitudes on the GPU, 12 bytes/pixel) when they fit with at least
        one block of work space; otherwise, or with host_frames=True, they stay in pinned
        host memory and each pass streams blocks through the GPU. DeviceMemoryError when
        not even one block fits."""
        free, _ = cp.cuda.runtime.memGetInfo()
        free += cp.get_default_memory_pool().free_bytes()  # cached by CuPy, reusable
        usable = free * 0.9
        px = n * n
        resident = n_frames * px * (8 + 4)          # psi, amplitudes
        work = px * (8 * 2 + 4 + 8)                 # two complex + one float buffer, cuFFT
        stream_work = work + px * (8 + 4)           # + the block's psi/amplitude copies
        if host_frames is None:
            host_frames = resident + work > usable
        if host_frames:
            fit = int(usable // stream_work)
        else:
            fit = int((usable - resident) // work)
        if fit < 1:
            what = "one block of work space" if host_frames else "the resident frames"
            raise DeviceMemoryError(
                f"{n_frames} frames of {n}x{n}: {what} does not fit the "
                f"{free / 2**30:.1f} GiB free on the GPU (one frame needs "
                f"{stream_work / 2**20:.1f} MiB streamed): use more ranks/GPUs or smaller frames")
        fit = min(n_frames, fit)
        if host_frames:  # moderate blocks: copies overlap nothing, but stay large enough
            fit = min(fit, max(1, (1 << 30) // (px * 8)))
        return (min(block, fit) if block else fit), bool(host_frames)

    @staticmethod
    def host_array(a: np.ndarray) -> np.ndarray:
        """A pinned (page-locked) host copy: faster, asynchronous-capable transfers."""
        try:
            out = cupyx.empty_pinned(a.shape, dtype=a.dtype)
        except cp.cuda.runtime.CUDARuntimeError:  # pinned memory is an optimisation only
            out = np.empty(a.shape, dtype=a.dtype)
        out[...] = a
        return out

    def default_block(self, n: int, n_frames: int) -> int:
        """Frames per block when resident (see plan)."""
        return self.plan(n, n_frames, None, False)[0]

    # ------------------------------------------------------------ overlap
    @staticmethod
    def _dims(obj, frames):
        return np.int32(frames.shape[-1]), np.int32(obj.shape[1])

    @staticmethod
    def _ps(probe):
        """Probe stride per view: 0 for one shared probe, n * n for per-view probes."""
        return np.int32(probe.shape[-1] * probe.shape[-2] if probe.ndim == 3 else 0)

    def fft2(self, a):
        """Orthonormal 2-D FFT over the last two axes (a new array)."""
        return cufft.fft2(a, axes=(-2, -1), norm="ortho")

    def ifft2(self, a):
        return cufft.ifft2(a, axes=(-2, -1), norm="ortho")

    def gather_product(self, obj, probe, iy, ix, out):
        n, w = self._dims(obj, out)
        _gather_product(obj, probe, iy, ix, n, w, self._ps(probe), out)
        return out

    def exit_waves(self, obj, probe, iy, ix, out=None):
        """P * O_j for a block, left lazy (see _ExitWaves)."""
        return _ExitWaves(obj, probe, iy, ix)

    def _layout(self, iy, ix, n: int, shape) -> _Layout:
        """The tile lists for these windows, built once per pair of position arrays (a
        scan's blocks each keep theirs; no device sync to look them up). Position arrays
        are identified by their memory, which the cache holds: they must not be modified
        in place (the engine makes new ones when positions change)."""
        for i, lay in enumerate(self._layouts):
            if lay.n == n and lay.shape == tuple(shape) and lay.matches(iy, ix):
                if i:  # most recently used first
                    self._layouts.insert(0, self._layouts.pop(i))
                return lay
        lay = _Layout(iy, ix, n, tuple(shape))
        self._layouts.insert(0, lay)
        del self._layouts[_LAYOUTS_KEPT:]
        return lay

    def _gather_sum(self, num, den, psi, probe, iy, ix) -> None:
        """num += sum_j window_j(conj(P_j) psi_j), den += sum_j window_j(|P_j|^2) (either
        may be None): see _GATHER."""
        n = probe.shape[-1]
        h, w = (num if num is not None else den).shape
        lay = self._layout(iy, ix, n, (h, w))
        mode = f"{'true' if num is not None else 'false'}, {'true' if den is not None else 'false'}"
        _gather.get_function(f"recon_gather_sum<{lay.rows}, {lay.unroll}, {mode}>")(
            (lay.ntiles,), (32, 8),
            (num, den, psi, probe, iy, ix, lay.starts, lay.views, np.int32(n), np.int32(h),
             np.int32(w), self._ps(probe), np.int32(lay.ntx)))

    @property
    def fuses_object_power(self) -> bool:
        """scatter_conj_probe can add the eq. 4 denominator in the same pass (power=)."""
        return self.deterministic

    def scatter_conj_probe(self, target, psi, probe, iy, ix, buf, power=None) -> None:
        """target += sum_j window_j(conj(P_j) psi_j): a gather in frame order (bit for bit
        repeatable), or float atomics when deterministic=False; with ``power`` (float32,
        object-shaped) also power += sum_j window_j(|P_j|^2) from the same probe loads."""
        if not self.deterministic:
            n, w = self._dims(target, psi)
            _scatter_conj_atomic(psi, probe, iy, ix, n, w, self._ps(probe),
                                 target.view(cp.float32), size=psi.size)
            if power is not None:
                self.scatter_power(power, probe, iy, ix)
            return
        self._gather_sum(target, power, psi, probe, iy, ix)

    def scatter_power(self, target, probe, iy, ix) -> None:
        """target += sum_j window_j(|P|^2), as a float64 FFT convolution of the scan
        positions with |P|^2 (a few object-sized FFTs instead of frames x N^2 terms);
        per-view probes are gathered directly."""
        if probe.ndim == 3:
            self._gather_sum(None, target, None, probe, iy, ix)
            return
        h, w = target.shape
        n = probe.shape[0]
        # any size >= the object's holds the linear convolution (every window lies inside
        # it): sizes with small prime factors keep cuFFT off its slow (Bluestein) path
        fh, fw = cufft.next_fast_len(h, real=True), cufft.next_fast_len(w, real=True)
        lay = self._layout(iy, ix, n, target.shape)
        if lay.comb is None:  # the positions' spectrum, kept with their tile lists
            comb = cp.zeros((fh, fw), dtype=cp.float64)
            cp.add.at(comb, (iy, ix), 1.0)
            lay.comb = cp.fft.rfft2(comb)
        kernel = cp.zeros((fh, fw), dtype=cp.float64)
        kernel[:n, :n] = cp.abs(probe.astype(cp.complex128)) ** 2
        den = cp.fft.irfft2(lay.comb * cp.fft.rfft2(kernel), s=(fh, fw))[:h, :w]
        target += cp.maximum(den, 0.0).astype(target.dtype)

    def probe_sums(self, obj, psi, iy, ix, num, den, buf, rbuf) -> None:
        """num += sum_j conj(O_j) psi_j, den += sum_j |O_j|^2 (fixed-order partial sums)."""
        frames, n = psi.shape[0], psi.shape[-1]
        nn, groups = n * n, (frames + _GROUP - 1) // _GROUP
        pnum = cp.empty((groups, n, n), dtype=cp.complex64)
        pden = cp.empty((groups, n, n), dtype=cp.float32)
        _gather.get_function("recon_probe_sums")(
            ((nn + 255) // 256, groups), (256,),
            (obj, psi, iy, ix, pnum, pden, np.int32(frames), np.int32(n),
             np.int32(obj.shape[1]), np.int32(_GROUP)))
        _add_groups(pnum, pden, np.int32(groups), np.int32(nn), num, den)

    # ------------------------------------------------------------ Fourier
    def _maskf(self, maskf, n):
        if maskf is not None:
            return maskf
        if n not in self._ones:
            self._ones[n] = cp.ones((n, n), dtype=cp.float32)
        return self._ones[n]

    def _fft_inplace(self, f, forward: bool):
        """Unscaled batched 2-D FFT of a C-contiguous complex64 frame stack, in place, with
        the same cuFFT plan cupyx.scipy.fft would use (looked up once per shape: the plan
        search costs more host time than the launch at small frames)."""
        plan = self._plans.get(f.shape)
        if plan is None:
            if _get_cufft_plan_nd is None or f.ndim != 3 or not f.flags.c_contiguous \
                    or f.dtype != cp.complex64:
                if forward:
                    return cufft.fft2(f, axes=(-2, -1), norm="backward", overwrite_x=True)
                return cufft.ifft2(f, axes=(-2, -1), norm="forward", overwrite_x=True)
            plan = _get_cufft_plan_nd(f.shape, _cufft_lib.CUFFT_C2C, axes=(1, 2), order="C")
            if len(self._plans) >= 4:  # a few block sizes at most
                self._plans.pop(next(iter(self._plans)))
            self._plans[f.shape] = plan
        if f.size:
            plan.fft(f, f, _cufft_lib.CUFFT_FORWARD if forward else _cufft_lib.CUFFT_INVERSE)
        return f

    def _modulus(self, f, amp, maskf, pbound, modes=1):
        """Returns (P_F(f), per-frame errors); f is transformed in place when cuFFT can.
        With ``modes`` > 1, f holds that many views per frame whose intensities add.
        Both FFTs run unscaled; the projection applies the scale (see _frame_error)."""
        n = f.shape[-1]
        m = self._maskf(maskf, n)
        sc = np.float32(1.0 / n)  # 1 / sqrt(N^2)
        big = self._fft_inplace(f, True)
        if modes > 1:
            err = self._modulus_modes(big, amp, m, pbound, modes, sc)
        elif pbound is None:  # one fused pass: error and projection
            frames, nn = big.shape[0], n * n
            chunks = _chunks(nn)
            partial = cp.empty(frames * chunks, dtype=cp.float32)
            _fused.get_function("recon_modulus")(
                (frames * chunks,), (256,),
                (big, amp, m, partial, np.int32(nn), np.int32(chunks), sc))
            err = partial.reshape(frames, chunks).sum(axis=1)
        else:
            err = _frame_error(big, amp, m, sc, axis=(1, 2))
            lim = pbound * float(m.sum())
            r = cp.where(err > lim, cp.sqrt(lim / cp.maximum(err, 1e-30)), 1.0).astype(cp.float32)
            _project(amp, m, r, np.int32(n * n), sc, big)
        return self._fft_inplace(big, False), err

    @staticmethod
    def _modulus_modes(big, amp, m, pbound, modes, sc):
        """Mixed-state modulus projection: one factor sqrt(I)/sqrt(sum_k |F_k|^2) per pixel,
        in place on the unscaled spectra; returns the per-frame errors."""
        frames, n = big.shape[0] // modes, big.shape[-1]
        b4 = big.reshape(frames, modes, n, n)
        mag = cp.sqrt((b4.real ** 2 + b4.imag ** 2).sum(axis=1)) * sc
        err = (m * (mag - amp) ** 2).sum(axis=(1, 2))
        if pbound is None:
            r = cp.zeros((frames, 1, 1), dtype=cp.float32)
        else:
            lim = pbound * float(m.sum())
            r = cp.where(err > lim, cp.sqrt(lim / cp.maximum(err, 1e-30)), 1.0)
            r = r.astype(cp.float32)[:, None, None]
        factor = cp.where(m > 0, (1 - r) * amp / cp.maximum(mag, 1e-30) + r, 1.0) * (sc * sc)
        b4 *= factor.astype(cp.float32)[:, None]
        return err

    # the exit-wave update also returns the next probe update's sums (shared probe only)
    fuses_probe_sums = True

    def fourier_update(self, psi, po, amp, maskf, notmask, coef, pbound, fbuf, absbuf, devbuf,
                       extra=None, modes=1, probe_sums=None):
        """psi <- c psi + d P_F(a PO + b psi) + e PO + g extra; PO, extra are _ExitWaves.
        Returns (per-frame errors, change sum as a 0-d device array).

        ``probe_sums``: (num, den) to which sum_j conj(O_j) psi_j and sum_j |O_j|^2 of the
        updated psi are added (one shared probe, one mode), as probe_sums() would."""
        a, b, c, d, e, g = (np.float32(v) for v in coef)
        n, w = np.int32(psi.shape[-1]), np.int32(po.obj.shape[1])
        ps = self._ps(po.probe)
        frames, nn = psi.shape[0], int(n) * int(n)
        chunks = _chunks(nn)
        _fused.get_function("recon_mix")(
            (frames * chunks,), (256,),
            (po.obj, po.probe, po.iy, po.ix, n, w, ps, psi, a, b, fbuf, np.int32(chunks)))
        proj, err = self._modulus(fbuf, amp, maskf, pbound, modes)
        xobj = po.obj if extra is None else extra.obj
        if extra is None:
            g = np.float32(0.0)
        groups, blocks = (frames + _GROUP - 1) // _GROUP, (nn + 255) // 256
        partial = cp.empty(groups * blocks, dtype=cp.float32)
        pnum = pden = None
        if probe_sums is not None:
            if ps != 0 or modes != 1:
                raise ValueError("fused probe sums need one shared probe and one mode")
            pnum = cp.empty((groups, int(n), int(n)), dtype=cp.complex64)
            pden = cp.empty((groups, int(n), int(n)), dtype=cp.float32)
        _fused.get_function("recon_update")(
            (blocks, groups), (256,),
            (proj, po.obj, xobj, po.probe, po.iy, po.ix, n, w, ps, d, e, np.float32(c - 1.0), g,
             psi, partial, np.int32(frames), np.int32(_GROUP), pnum, pden))
        if probe_sums is not None:
            _add_groups(pnum, pden, np.int32(groups), np.int32(nn), probe_sums[0],
                         probe_sums[1])
        # the change sum stays on the device (a 0-d float64 array): reading it here would
        # stall the queue every iteration; the engine reads it back with the others
        return err, partial.sum(dtype=cp.float64)

    def fourier_error(self, waves, amp, maskf, absbuf, devbuf, modes=1):
        """Per-frame sum over valid pixels of (|FFT(waves)| - A)^2; waves is overwritten."""
        n = waves.shape[-1]
        big = self._fft_inplace(waves, True)
        m = self._maskf(maskf, n)
        sc = np.float32(1.0 / n)
        if modes > 1:
            b4 = big.reshape(-1, modes, n, n)
            mag = cp.sqrt((b4.real ** 2 + b4.imag ** 2).sum(axis=1)) * sc
            return (m * (mag - amp) ** 2).sum(axis=(1, 2))
        return _frame_error(big, amp, m, sc, axis=(1, 2))

    def fourier_project(self, psi, amp, maskf, notmask, pbound, fbuf, absbuf, devbuf, modes=1):
        cp.copyto(fbuf, psi)
        return self._modulus(fbuf, amp, maskf, pbound, modes)
