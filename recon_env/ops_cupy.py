"""CuPy kernels of the engine: batched cuFFT plus fused elementwise / raw kernels.

No Python loop over frames: every kernel covers a whole block of frames (by default all
of this rank's frames). Object sums use float atomics, so the summation order (and the
last bits of the result) can vary from run to run; NumPy is the bitwise-deterministic path.
Imported only when backend="cupy" is asked for.
"""
from __future__ import annotations

import cupy as cp
import numpy as np

from .errors import DeviceMemoryError

_INDEX = """
    const int nn = n * n;
    const long long j = i / nn;
    const int p = i - j * nn;
    const int y = p / n;
    const int x = p - y * n;
    const long long o = (long long)(iy[j] + y) * W + ix[j] + x;
"""

_gather = cp.ElementwiseKernel(
    "raw complex64 obj, raw int32 iy, raw int32 ix, int32 n, int32 W", "complex64 out",
    _INDEX + "out = obj[o];", "recon_gather")

_gather_product = cp.ElementwiseKernel(
    "raw complex64 obj, raw complex64 probe, raw int32 iy, raw int32 ix, int32 n, int32 W",
    "complex64 out", _INDEX + "out = probe[p] * obj[o];", "recon_gather_product")

_scatter_conj = cp.ElementwiseKernel(
    "raw complex64 psi, raw complex64 probe, raw int32 iy, raw int32 ix, int32 n, int32 W",
    "raw float32 target",
    _INDEX + """
    const complex<float> v = conj(probe[p]) * psi[i];
    atomicAdd(&target[2 * o], v.real());
    atomicAdd(&target[2 * o + 1], v.imag());
    """, "recon_scatter_conj")

_scatter_power = cp.ElementwiseKernel(
    "raw complex64 probe, raw int32 iy, raw int32 ix, int32 n, int32 W", "raw float32 target",
    _INDEX + """
    const complex<float> v = probe[p];
    atomicAdd(&target[o], v.real() * v.real() + v.imag() * v.imag());
    """, "recon_scatter_power")

# One thread per (pixel, chunk of frames): gathers O_j into views and accumulates the eq. 5
# sums for its chunk in registers, then one atomic add per pixel and chunk.
_probe_sums = cp.RawKernel(r"""
#include <cupy/complex.cuh>
extern "C" __global__ void recon_probe_sums(
    const complex<float>* obj, const complex<float>* psi, const int* iy, const int* ix,
    complex<float>* views, float* num, float* den, int frames, int n, int W, int chunk) {
  const int nn = n * n;
  const long long t = (long long)blockIdx.x * blockDim.x + threadIdx.x;
  const int p = t % nn;
  const int c = t / nn;
  const int j0 = c * chunk;
  if (j0 >= frames) return;
  const int j1 = min(frames, j0 + chunk);
  const int y = p / n, x = p - (p / n) * n;
  float ar = 0.f, ai = 0.f, d = 0.f;
  for (int j = j0; j < j1; ++j) {
    const complex<float> o = obj[(long long)(iy[j] + y) * W + ix[j] + x];
    const long long q = (long long)j * nn + p;
    views[q] = o;
    const complex<float> s = conj(o) * psi[q];
    ar += s.real(); ai += s.imag();
    d += o.real() * o.real() + o.imag() * o.imag();
  }
  atomicAdd(&num[2 * p], ar);
  atomicAdd(&num[2 * p + 1], ai);
  atomicAdd(&den[p], d);
}
""", "recon_probe_sums")

# Exit waves P * O_j are never stored: both kernels below recompute them from the object
# views and the (broadcast) probe, which saves a full write + read of the frames.
_mix = cp.ElementwiseKernel(
    "complex64 ov, complex64 pr, complex64 psi, float32 a, float32 b", "complex64 f",
    "f = a * (ov * pr) + b * psi;", "recon_mix")

_frame_error = cp.ReductionKernel(
    "complex64 f, float32 amp, float32 m", "float32 err",
    "m * (abs(f) - amp) * (abs(f) - amp)", "a + b", "err = a", "0", "recon_frame_error")

_project = cp.ElementwiseKernel(
    "float32 amp, float32 m, raw float32 r, int32 nn", "complex64 f",
    """
    const float rj = r[i / nn];
    const float mag = max(abs(f), 1e-30f);
    const float factor = m > 0.f ? (1.f - rj) * amp / mag + rj : 1.f;
    f = f * factor;
    """, "recon_project")

_update = cp.ElementwiseKernel(
    "complex64 fp, complex64 ov, complex64 pr, complex64 extra, float32 d, float32 e, "
    "float32 c1, float32 g", "complex64 psi, float32 change",
    """
    const complex<float> delta = d * fp + e * (ov * pr) + c1 * psi + g * extra;
    psi = psi + delta;
    change = delta.real() * delta.real() + delta.imag() * delta.imag();
    """, "recon_update")


class _ExitWaves:
    """P * O_j left unevaluated: (object views, probe) read by the Fourier kernels."""

    __slots__ = ("views", "probe")

    def __init__(self, views, probe) -> None:
        self.views, self.probe = views, probe


class CupyOps:
    """Same interface as NumpyOps; arrays live on the current CUDA device."""

    name = "cupy"
    xp = cp

    def __init__(self) -> None:
        self._ones = {}
        self._unit = {}

    # ------------------------------------------------------------ memory
    def asarray(self, a, dtype=None):
        return cp.ascontiguousarray(cp.asarray(a, dtype=dtype))

    def to_host(self, a) -> np.ndarray:
        return cp.asnumpy(a)

    def synchronize(self) -> None:
        cp.cuda.get_current_stream().synchronize()

    def default_block(self, n: int, n_frames: int) -> int:
        """All frames in one block when the temporaries fit next to the resident arrays."""
        free, _ = cp.cuda.runtime.memGetInfo()
        free += cp.get_default_memory_pool().free_bytes()  # cached by CuPy, reusable
        per_frame_resident = n * n * (8 + 8 + 4)       # psi, object views, amplitudes
        per_frame_block = n * n * (8 * 3 + 4 * 2)      # complex + float block buffers
        fft_work = n * n * 8                            # cuFFT work area per frame (about)
        budget = free * 0.9 - n_frames * per_frame_resident
        block = int(budget // (per_frame_block + fft_work))
        if block < 1:
            need = n_frames * per_frame_resident + per_frame_block + fft_work
            raise DeviceMemoryError(
                f"{n_frames} frames of {n}x{n} need {need / 2**30:.1f} GiB on the GPU "
                f"(exit waves, object views, amplitudes + one frame of work space) but only "
                f"{free / 2**30:.1f} GiB are free: use more ranks/GPUs or fewer frames")
        return max(1, min(n_frames, block))

    # ------------------------------------------------------------ overlap
    @staticmethod
    def _dims(obj, frames):
        return np.int32(frames.shape[-1]), np.int32(obj.shape[1])

    def gather(self, obj, iy, ix, n, out):
        _gather(obj, iy, ix, np.int32(n), np.int32(obj.shape[1]), out)
        return out

    def gather_product(self, obj, probe, iy, ix, out):
        n, w = self._dims(obj, out)
        _gather_product(obj, probe, iy, ix, n, w, out)
        return out

    def multiply(self, views, probe, out):
        return _ExitWaves(views, probe)

    def scatter_conj_probe(self, target, psi, probe, iy, ix, buf) -> None:
        n, w = self._dims(target, psi)
        _scatter_conj(psi, probe, iy, ix, n, w, target.view(cp.float32), size=psi.size)

    def scatter_power(self, target, probe, iy, ix) -> None:
        n = np.int32(probe.shape[0])
        _scatter_power(probe, iy, ix, n, np.int32(target.shape[1]), target,
                       size=int(len(iy)) * probe.size)

    def probe_sums(self, obj, psi, iy, ix, num, den, views, buf, rbuf) -> None:
        frames, n = psi.shape[0], psi.shape[-1]
        chunk = 16
        threads = n * n * ((frames + chunk - 1) // chunk)
        _probe_sums(((threads + 255) // 256,), (256,),
                    (obj, psi, iy, ix, views, num.view(cp.float32), den, np.int32(frames),
                     np.int32(n), np.int32(obj.shape[1]), np.int32(chunk)))

    # ------------------------------------------------------------ Fourier
    def _maskf(self, maskf, n):
        if maskf is not None:
            return maskf
        if n not in self._ones:
            self._ones[n] = cp.ones((n, n), dtype=cp.float32)
        return self._ones[n]

    def _modulus(self, f, amp, maskf, pbound):
        """Returns (P_F(f), per-frame errors); f is transformed in place when cuFFT can."""
        n = f.shape[-1]
        m = self._maskf(maskf, n)
        big = cp.fft.fft2(f, axes=(-2, -1), norm="ortho", overwrite_x=True)
        err = _frame_error(big, amp, m, axis=(1, 2))
        if pbound is None:
            r = cp.zeros(big.shape[0], dtype=cp.float32)
        else:
            lim = pbound * float(m.sum())
            r = cp.where(err > lim, cp.sqrt(lim / cp.maximum(err, 1e-30)), 1.0).astype(cp.float32)
        _project(amp, m, r, np.int32(n * n), big)
        return cp.fft.ifft2(big, axes=(-2, -1), norm="ortho", overwrite_x=True), err

    def fourier_update(self, psi, po, amp, maskf, notmask, coef, pbound, fbuf, absbuf, devbuf,
                       extra=None):
        a, b, c, d, e, g = (np.float32(v) for v in coef)
        if isinstance(po, _ExitWaves):
            ov, pr = po.views, po.probe
        else:  # already multiplied: use a unit probe
            n = po.shape[-1]
            if n not in self._unit:
                self._unit[n] = cp.ones((n, n), dtype=cp.complex64)
            ov, pr = po, self._unit[n]
        _mix(ov, pr, psi, a, b, fbuf)
        proj, err = self._modulus(fbuf, amp, maskf, pbound)
        if extra is None:
            extra, g = ov, np.float32(0.0)  # any input of the right shape (not psi: outputs
            # that alias inputs make CuPy copy); weight 0
        _update(proj, ov, pr, extra, d, e, np.float32(c - 1.0), g, psi, devbuf)
        return err, float(devbuf.sum(dtype=cp.float64))

    def fourier_project(self, psi, amp, maskf, notmask, pbound, fbuf, absbuf, devbuf):
        cp.copyto(fbuf, psi)
        return self._modulus(fbuf, amp, maskf, pbound)

    def norm2(self, a) -> float:
        return float(cp.vdot(a.ravel(), a.ravel()).real)
