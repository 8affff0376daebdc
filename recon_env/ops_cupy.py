"""CuPy kernels of the engine: batched cuFFT plus fused elementwise / raw kernels.

No Python loop over frames: every kernel covers a whole block of frames (by default all
of this rank's frames). Results repeat bit for bit: object sums add 64-bit fixed-point
integers atomically (integer addition is associative, so the thread order cannot change
the result; the scale comes from the block's largest value, ~2^-42 of it per term), and
the probe sums reduce per-chunk partials in a fixed order.
Imported only when backend="cupy" is asked for.

``probe`` arguments are one (n, n) probe or one per view (views, n, n): the kernels read
probe[j * ps + p] with ps = 0 or n * n (sub-pixel shifted probes, probe modes).
"""
from __future__ import annotations

import cupy as cp
import cupyx
import cupyx.scipy.fft as cufft
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

_gather_product = cp.ElementwiseKernel(
    "raw complex64 obj, raw complex64 probe, raw int32 iy, raw int32 ix, int32 n, int32 W, "
    "int32 ps", "complex64 out", _INDEX + "out = probe[j * ps + p] * obj[o];",
    "recon_gather_product")

_FIXED = """
    const double sc = scale[0];
    const unsigned long long qr = (unsigned long long)__double2ll_rn((double)v.real() * sc);
    const unsigned long long qi = (unsigned long long)__double2ll_rn((double)v.imag() * sc);
    atomicAdd(&acc[2 * o], qr);
    atomicAdd(&acc[2 * o + 1], qi);
"""

_scatter_conj = cp.ElementwiseKernel(
    "raw complex64 psi, raw complex64 probe, raw int32 iy, raw int32 ix, int32 n, int32 W, "
    "int32 ps, raw float64 scale", "raw uint64 acc",
    _INDEX + "const complex<float> v = conj(probe[j * ps + p]) * psi[i];" + _FIXED,
    "recon_scatter_conj_fixed")

_scatter_power = cp.ElementwiseKernel(
    "raw complex64 probe, raw int32 iy, raw int32 ix, int32 n, int32 W, int32 ps, "
    "raw float64 scale",
    "raw uint64 acc",
    _INDEX + """
    const complex<float> P = probe[j * ps + p];
    const complex<float> v(P.real() * P.real() + P.imag() * P.imag(), 0.f);
    """ + _FIXED, "recon_scatter_power_fixed")

# float atomics: faster by a little, but the thread order changes the last bits of the sums
_scatter_conj_atomic = cp.ElementwiseKernel(
    "raw complex64 psi, raw complex64 probe, raw int32 iy, raw int32 ix, int32 n, int32 W, "
    "int32 ps", "raw float32 target",
    _INDEX + """
    const complex<float> v = conj(probe[j * ps + p]) * psi[i];
    atomicAdd(&target[2 * o], v.real());
    atomicAdd(&target[2 * o + 1], v.imag());
    """, "recon_scatter_conj")

_max_abs2 = cp.ReductionKernel(
    "complex64 x", "float32 y", "x.real() * x.real() + x.imag() * x.imag()", "max(a, b)",
    "y = a", "0", "recon_max_abs2")

_TERM_BITS = 41  # one term <= 2^41: 2^22 terms per object pixel before int64 overflows

# One thread per (pixel, chunk of frames): reads O_j (from L2: the object is small) and
# accumulates the eq. 5 sums for its chunk in registers, then one atomic add per pixel/chunk.
_probe_sums = cp.RawKernel(r"""
#include <cupy/complex.cuh>
extern "C" __global__ void recon_probe_sums(
    const complex<float>* obj, const complex<float>* psi, const int* iy, const int* ix,
    float* num, float* den, int frames, int n, int W, int chunk) {
  // num, den: one (n, n) partial per chunk of frames, summed afterwards in a fixed order
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
    const complex<float> s = conj(o) * psi[(long long)j * nn + p];
    ar += s.real(); ai += s.imag();
    d += o.real() * o.real() + o.imag() * o.imag();
  }
  num[2 * ((long long)c * nn + p)] = ar;
  num[2 * ((long long)c * nn + p) + 1] = ai;
  den[(long long)c * nn + p] = d;
}
""", "recon_probe_sums")

# Exit waves P * O_j are never stored: both kernels below recompute them from the object
# (read through L2) and the probe, which saves a full write + read of the frames.
_mix = cp.ElementwiseKernel(
    "raw complex64 obj, raw complex64 pr, raw int32 iy, raw int32 ix, int32 n, int32 W, "
    "int32 ps, complex64 psi, float32 a, float32 b", "complex64 f",
    _INDEX + "f = a * (pr[j * ps + p] * obj[o]) + b * psi;", "recon_mix")

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
    "complex64 fp, raw complex64 obj, raw complex64 xobj, raw complex64 pr, raw int32 iy, "
    "raw int32 ix, int32 n, int32 W, int32 ps, float32 d, float32 e, float32 c1, float32 g",
    "complex64 psi, float32 change",
    _INDEX + """
    const complex<float> P = pr[j * ps + p];
    const complex<float> delta = d * fp + e * (P * obj[o]) + c1 * psi + g * (P * xobj[o]);
    psi = psi + delta;
    change = delta.real() * delta.real() + delta.imag() * delta.imag();
    """, "recon_update")


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

extern "C" __global__ void recon_modulus(complex<float>* f, const float* amp, const float* m,
                                         float* partial, int nn, int chunks) {
  const int frame = blockIdx.x / chunks, chunk = blockIdx.x - frame * chunks;
  const int per = (nn + chunks - 1) / chunks;
  const int start = chunk * per, stop = min(nn, start + per);
  float acc = 0.f;
  for (int p = start + threadIdx.x; p < stop; p += blockDim.x) {
    const long long i = (long long)frame * nn + p;
    const complex<float> v = f[i];
    const float a = amp[i], mk = m[p];
    const float mag = abs(v);
    const float dev = mag - a;
    acc += mk * dev * dev;
    f[i] = v * (mk > 0.f ? a / max(mag, 1e-30f) : 1.f);
  }
  const float total = block_sum(acc);
  if (threadIdx.x == 0) partial[blockIdx.x] = total;
}

extern "C" __global__ void recon_update(
    const complex<float>* fp, const complex<float>* obj, const complex<float>* xobj,
    const complex<float>* pr, const int* iy, const int* ix, int n, int W, int ps,
    float d, float e, float c1, float g, complex<float>* psi, float* partial, int chunks) {
  const int nn = n * n;
  const int j = blockIdx.x / chunks, chunk = blockIdx.x - j * chunks;
  const int per = (nn + chunks - 1) / chunks;
  const int start = chunk * per, stop = min(nn, start + per);
  float acc = 0.f;
  for (int p = start + threadIdx.x; p < stop; p += blockDim.x) {
    const long long i = (long long)j * nn + p;
    const int y = p / n, x = p - y * n;
    const long long o = (long long)(iy[j] + y) * W + ix[j] + x;
    const complex<float> P = pr[(long long)j * ps + p];
    const complex<float> delta = d * fp[i] + e * (P * obj[o]) + c1 * psi[i] + g * (P * xobj[o]);
    psi[i] = psi[i] + delta;
    acc += delta.real() * delta.real() + delta.imag() * delta.imag();
  }
  const float total = block_sum(acc);
  if (threadIdx.x == 0) partial[blockIdx.x] = total;
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

    def __init__(self, deterministic: bool = True) -> None:
        self._ones = {}
        self.deterministic = bool(deterministic)
        # bound on |psi| entries (set by the engine from the measured frame norms: the
        # modulus projection keeps ||psi_j|| near ||A_j||); saves a pass over the frames
        self.psi_bound: float | None = None

    # ------------------------------------------------------------ memory
    def asarray(self, a, dtype=None):
        return cp.ascontiguousarray(cp.asarray(a, dtype=dtype))

    def to_host(self, a) -> np.ndarray:
        return cp.asnumpy(a)

    def synchronize(self) -> None:
        cp.cuda.get_current_stream().synchronize()

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

    @staticmethod
    def _fixed_scale(peak2):
        """Fixed-point scale (a device scalar: no host sync) for terms up to sqrt(peak2):
        the largest maps to 2^_TERM_BITS."""
        return (2.0 ** _TERM_BITS / cp.maximum(cp.sqrt(peak2.astype(cp.float64)), 1e-30)).reshape(1)

    @staticmethod
    def _add_fixed(target, acc, scale: float) -> None:
        vals = acc.view(cp.int64).astype(cp.float64) / scale
        if target.dtype == cp.complex64:
            target += (vals[..., 0] + 1j * vals[..., 1]).astype(cp.complex64)
        else:
            target += vals[..., 0].astype(target.dtype)

    def scatter_conj_probe(self, target, psi, probe, iy, ix, buf) -> None:
        """target += sum_j window_j(conj(P_j) psi_j), bit-reproducible (fixed point)."""
        n, w = self._dims(target, psi)
        if not self.deterministic:
            _scatter_conj_atomic(psi, probe, iy, ix, n, w, self._ps(probe),
                                 target.view(cp.float32), size=psi.size)
            return
        psi_peak2 = _max_abs2(psi) if self.psi_bound is None else self.psi_bound ** 2
        scale = self._fixed_scale(psi_peak2 * _max_abs2(probe))
        acc = cp.zeros(target.shape + (2,), dtype=cp.uint64)
        _scatter_conj(psi, probe, iy, ix, n, w, self._ps(probe), scale, acc, size=psi.size)
        self._add_fixed(target, acc, scale)

    def scatter_power(self, target, probe, iy, ix) -> None:
        """target += sum_j window_j(|P|^2), as a float64 FFT convolution of the scan
        positions with |P|^2 (a few object-sized FFTs instead of frames x N^2 atomics);
        per-view probes are scattered directly."""
        if probe.ndim == 3:
            n, w = self._dims(target, probe)
            scale = self._fixed_scale(_max_abs2(probe) ** 2)
            acc = cp.zeros(target.shape + (2,), dtype=cp.uint64)
            _scatter_power(probe, iy, ix, n, w, self._ps(probe), scale, acc, size=probe.size)
            self._add_fixed(target, acc, scale)
            return
        h, w = target.shape
        n = probe.shape[0]
        comb = cp.zeros((h, w), dtype=cp.float64)
        cp.add.at(comb, (iy, ix), 1.0)
        kernel = cp.zeros((h, w), dtype=cp.float64)
        kernel[:n, :n] = cp.abs(probe.astype(cp.complex128)) ** 2
        den = cp.fft.irfft2(cp.fft.rfft2(comb) * cp.fft.rfft2(kernel), s=(h, w))
        target += cp.maximum(den, 0.0).astype(target.dtype)

    def probe_sums(self, obj, psi, iy, ix, num, den, buf, rbuf) -> None:
        frames, n = psi.shape[0], psi.shape[-1]
        chunk = 16
        chunks = (frames + chunk - 1) // chunk
        threads = n * n * chunks
        pnum = cp.empty((chunks, n, n), dtype=cp.complex64)
        pden = cp.empty((chunks, n, n), dtype=cp.float32)
        _probe_sums(((threads + 255) // 256,), (256,),
                    (obj, psi, iy, ix, pnum.view(cp.float32), pden, np.int32(frames),
                     np.int32(n), np.int32(obj.shape[1]), np.int32(chunk)))
        num += pnum.sum(axis=0)  # CuPy's reductions run in a fixed order
        den += pden.sum(axis=0)

    # ------------------------------------------------------------ Fourier
    def _maskf(self, maskf, n):
        if maskf is not None:
            return maskf
        if n not in self._ones:
            self._ones[n] = cp.ones((n, n), dtype=cp.float32)
        return self._ones[n]

    def _modulus(self, f, amp, maskf, pbound, modes=1):
        """Returns (P_F(f), per-frame errors); f is transformed in place when cuFFT can.
        With ``modes`` > 1, f holds that many views per frame whose intensities add."""
        n = f.shape[-1]
        m = self._maskf(maskf, n)
        big = cufft.fft2(f, axes=(-2, -1), norm="ortho", overwrite_x=True)
        if modes > 1:
            return self._modulus_modes(big, amp, m, pbound, modes)
        if pbound is None:  # one fused pass: error and projection
            frames, nn = big.shape[0], n * n
            chunks = _chunks(nn)
            partial = cp.empty(frames * chunks, dtype=cp.float32)
            _fused.get_function("recon_modulus")(
                (frames * chunks,), (256,), (big, amp, m, partial, np.int32(nn), np.int32(chunks)))
            err = partial.reshape(frames, chunks).sum(axis=1)
            return cufft.ifft2(big, axes=(-2, -1), norm="ortho", overwrite_x=True), err
        err = _frame_error(big, amp, m, axis=(1, 2))
        if pbound is None:
            r = cp.zeros(big.shape[0], dtype=cp.float32)
        else:
            lim = pbound * float(m.sum())
            r = cp.where(err > lim, cp.sqrt(lim / cp.maximum(err, 1e-30)), 1.0).astype(cp.float32)
        _project(amp, m, r, np.int32(n * n), big)
        return cufft.ifft2(big, axes=(-2, -1), norm="ortho", overwrite_x=True), err

    @staticmethod
    def _modulus_modes(big, amp, m, pbound, modes):
        """Mixed-state modulus projection: one factor sqrt(I)/sqrt(sum_k |F_k|^2) per pixel."""
        frames, n = big.shape[0] // modes, big.shape[-1]
        b4 = big.reshape(frames, modes, n, n)
        mag = cp.sqrt((b4.real ** 2 + b4.imag ** 2).sum(axis=1))
        err = (m * (mag - amp) ** 2).sum(axis=(1, 2))
        if pbound is None:
            r = cp.zeros((frames, 1, 1), dtype=cp.float32)
        else:
            lim = pbound * float(m.sum())
            r = cp.where(err > lim, cp.sqrt(lim / cp.maximum(err, 1e-30)), 1.0)
            r = r.astype(cp.float32)[:, None, None]
        factor = cp.where(m > 0, (1 - r) * amp / cp.maximum(mag, 1e-30) + r, 1.0)
        b4 *= factor.astype(cp.float32)[:, None]
        return cufft.ifft2(big, axes=(-2, -1), norm="ortho", overwrite_x=True), err

    def fourier_update(self, psi, po, amp, maskf, notmask, coef, pbound, fbuf, absbuf, devbuf,
                       extra=None, modes=1):
        """psi <- c psi + d P_F(a PO + b psi) + e PO + g extra; PO, extra are _ExitWaves."""
        a, b, c, d, e, g = (np.float32(v) for v in coef)
        n, w = np.int32(psi.shape[-1]), np.int32(po.obj.shape[1])
        ps = self._ps(po.probe)
        _mix(po.obj, po.probe, po.iy, po.ix, n, w, ps, psi, a, b, fbuf)
        proj, err = self._modulus(fbuf, amp, maskf, pbound, modes)
        xobj = po.obj if extra is None else extra.obj
        if extra is None:
            g = np.float32(0.0)
        frames, nn = psi.shape[0], int(n) * int(n)
        chunks = _chunks(nn)
        partial = cp.empty(frames * chunks, dtype=cp.float32)
        _fused.get_function("recon_update")(
            (frames * chunks,), (256,),
            (proj, po.obj, xobj, po.probe, po.iy, po.ix, n, w, ps, d, e, np.float32(c - 1.0), g,
             psi, partial, np.int32(chunks)))
        return err, float(partial.sum(dtype=cp.float64))

    def fourier_error(self, waves, amp, maskf, absbuf, devbuf, modes=1):
        """Per-frame sum over valid pixels of (|FFT(waves)| - A)^2; waves is overwritten."""
        big = cufft.fft2(waves, axes=(-2, -1), norm="ortho", overwrite_x=True)
        m = self._maskf(maskf, waves.shape[-1])
        if modes > 1:
            n = big.shape[-1]
            b4 = big.reshape(-1, modes, n, n)
            mag = cp.sqrt((b4.real ** 2 + b4.imag ** 2).sum(axis=1))
            return (m * (mag - amp) ** 2).sum(axis=(1, 2))
        return _frame_error(big, amp, m, axis=(1, 2))

    def fourier_project(self, psi, amp, maskf, notmask, pbound, fbuf, absbuf, devbuf, modes=1):
        cp.copyto(fbuf, psi)
        return self._modulus(fbuf, amp, maskf, pbound, modes)
