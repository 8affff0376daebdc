"""Where one GPU iteration's time goes (run on the GPU machine).

    python -m recon_env.gpu_profile FRAMES SHAPE [--atomics]

Times each kernel of a plain DM iteration on the engine's own arrays (cupyx.profiler
median GPU time of repeated launches), next to the floors: a device copy of the frame
array and the batched FFT pair; then whole iterations in GPU time (CUDA events) and in wall
clock (iteration_wall_ms: host launch overhead and read-backs included). Prints one JSON
line.
"""
from __future__ import annotations

import json
import sys
import time
from typing import Any

import numpy as np


def profile(frames: int, shape: int, deterministic: bool = True, repeat: int = 20) -> dict:
    """Milliseconds per step (GPU time) for a resident whole-pixel single-mode scan."""
    import cupy as cp
    import cupyx.scipy.fft as cufft
    from cupyx.profiler import benchmark

    from . import ops_cupy as k
    from .engine import EngineConfig, Reconstructor
    from .simulate import SimulationConfig, simulate

    data = simulate(SimulationConfig(n_frames=frames, frame_size=shape,
                                     probe_diameter=shape * 40 / 128), gpu=True)
    rec = Reconstructor(data, EngineConfig(deterministic=deterministic), backend="cupy")
    rec.step(3)
    ops: Any = rec.ops  # CupyOps: its kernels one by one, beyond what ArrayOps promises
    n = rec.n
    obj, probe, psi, amp, iy, ix = rec.object, rec.probe, rec.psi, rec.amp, rec.iy, rec.ix
    f = cp.empty_like(psi)
    nn, w = n * n, np.int32(obj.shape[1])
    chunks = k._chunks(nn)
    partial = cp.empty(frames * chunks, dtype=cp.float32)
    ones = ops._maskf(None, n)
    one, sc = np.float32(1.0), np.float32(1.0 / n)

    def gpu_ms(fn) -> float:
        return float(np.median(benchmark(fn, n_repeat=repeat, n_warmup=3).gpu_times) * 1e3)

    def modulus():
        k._fused.get_function("recon_modulus")(
            (frames * chunks,), (256,),
            (f, amp, ones, partial, np.int32(nn), np.int32(chunks), sc))

    pnum = cp.zeros((n, n), cp.complex64)
    pden = cp.zeros((n, n), cp.float32)

    def update(sums):
        po = ops.exit_waves(obj, probe, iy, ix)
        coef = (1.0, 0.0, 1.0, 0.0, 0.0, 0.0)  # psi unchanged: the kernel's full traffic
        ops.fourier_update(psi, po, amp, None, None, coef, None, f, None, None,
                           probe_sums=(pnum, pden) if sums else None)

    num = cp.zeros_like(obj)
    den = cp.zeros(obj.shape, cp.float32)
    unscaled = {"axes": (-2, -1), "overwrite_x": True}
    steps = {
        "copy_frames": lambda: cp.copyto(f, psi),
        "fft_pair": lambda: cufft.ifft2(cufft.fft2(f, norm="backward", **unscaled),
                                        norm="forward", **unscaled),
        "fft_pair_ortho": lambda: cufft.ifft2(cufft.fft2(f, norm="ortho", **unscaled),
                                              norm="ortho", **unscaled),
        "mix": lambda: k._fused.get_function("recon_mix")(
            (frames * chunks,), (256,),
            (obj, probe, iy, ix, np.int32(n), w, np.int32(0), psi, one, -one, f,
             np.int32(chunks))),
        "modulus": modulus,
        "fourier_update": lambda: update(False),
        "fourier_update_probe_sums": lambda: update(True),
        "probe_sums": lambda: ops.probe_sums(obj, psi, iy, ix, pnum, pden, None, None),
        "object_sums": lambda: ops.scatter_conj_probe(num, psi, probe, iy, ix, None),
        "object_power": lambda: ops.scatter_power(den, probe, iy, ix),
        "object_sums_with_power": lambda: ops.scatter_conj_probe(num, psi, probe, iy, ix, None,
                                                                 power=den),
    }
    out: dict[str, Any] = {"frames": frames, "shape": shape, "deterministic": deterministic,
           "object_shape": list(obj.shape)}
    for name, fn in steps.items():
        out[name + "_ms"] = gpu_ms(fn)
    for count in (4, 12):  # whole iterations: slope over iteration counts
        cp.cuda.Device().synchronize()
        start, stop = cp.cuda.Event(), cp.cuda.Event()
        start.record()
        rec.step(count)
        stop.record()
        stop.synchronize()
        out[f"step{count}_ms"] = cp.cuda.get_elapsed_time(start, stop)
    out["iteration_ms"] = (out["step12_ms"] - out["step4_ms"]) / 8
    # wall clock, host included: at small frames launch overhead and host reads decide it
    for count in (8, 40):
        cp.cuda.Device().synchronize()
        t = time.perf_counter()
        rec.step(count, model_error=False)
        cp.cuda.Device().synchronize()
        out[f"wall{count}_ms"] = (time.perf_counter() - t) * 1e3
    out["iteration_wall_ms"] = (out["wall40_ms"] - out["wall8_ms"]) / 32
    return out


def main(argv: list[str]) -> int:
    frames, shape = int(argv[0]), int(argv[1])
    print(json.dumps(profile(frames, shape, deterministic="--atomics" not in argv)), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
