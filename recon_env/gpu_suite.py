"""Everything the GPU machine has to check and measure, in one call (device time is scarce).

    python -m recon_env.gpu_suite OUT_DIR [--quick]

1. CuPy kernels against NumPy (tests/recon_env/test_cupy.py) and the CPU tests under this
   machine's numpy 2.x, and the per-pass GPU profile (gpu_profile.py); 2. one-GPU timings (512x128^2 and 4096x256^2, 100 DM iterations,
   kernels warm); 3. 16384x256^2 strong scaling on 1, 2, 4 GPUs (NCCL sums); 4. the quality
   target on the GPU. Each step has its own time limit, so one failure still leaves the
   others' results in OUT_DIR/results.jsonl; a table is printed last.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

PY = sys.executable
BENCH = [PY, "-m", "recon_env.cli", "bench", "recon", "--backend", "cupy", "--gpu-simulation",
         "--json"]


def _text(output: str | bytes | None) -> str:
    """A timed-out child's partial output (bytes even with text=True, or None)."""
    return output.decode(errors="replace") if isinstance(output, bytes) else (output or "")


def _run(name: str, cmd: list[str], out: Path, timeout: int, env: dict | None = None) -> str:
    t0 = time.time()
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout,
                              env={**os.environ, **(env or {})})
        text, code = proc.stdout + proc.stderr, proc.returncode
    except subprocess.TimeoutExpired as err:
        text = f"TIMEOUT after {timeout}s\n{_text(err.stdout)}{_text(err.stderr)}"
        code = 124
    with open(out / "log.txt", "a") as log:
        log.write(f"\n===== {name} (rc={code}, {time.time() - t0:.1f}s): {' '.join(cmd)}\n{text}")
    print(f"[{name}] rc={code} {time.time() - t0:.1f}s", flush=True)
    return text if code == 0 else ""


def _mpi(n: int) -> list[str]:
    launcher = shutil.which("mpiexec") or "mpiexec"
    return [launcher, "--allow-run-as-root", "--bind-to", "none", "-n", str(n),
            "-x", "NCCL_NVLS_ENABLE", "-x", "PYTHONPATH", "-x", "PATH"]


def _record(out: Path, name: str, text: str) -> dict | None:
    for line in reversed(text.strip().splitlines()):
        if line.startswith("{"):
            rec = {"name": name, **json.loads(line)}
            with open(out / "results.jsonl", "a") as f:
                f.write(json.dumps(rec) + "\n")
            return rec
    return None


def main(argv: list[str]) -> int:
    out = Path(argv[0])
    out.mkdir(parents=True, exist_ok=True)
    quick = "--quick" in argv
    os.environ.setdefault("NCCL_NVLS_ENABLE", "0")
    os.environ["PYTHONPATH"] = str(Path.cwd()) + os.pathsep + os.environ.get("PYTHONPATH", "")
    env_root = {"OMPI_ALLOW_RUN_AS_ROOT": "1", "OMPI_ALLOW_RUN_AS_ROOT_CONFIRM": "1",
                "RECON_ENV_LAUNCHER": "mpiexec", "PYTHONUNBUFFERED": "1"}
    os.environ.update(env_root)
    _run("env", ["bash", "-c", "nvidia-smi --query-gpu=name,memory.total,clocks.sm --format=csv;"
                 f"{PY} -c 'import numpy, cupy, scipy, h5py, mpi4py; print(numpy.__version__, "
                 "cupy.__version__, scipy.__version__, h5py.__version__, mpi4py.__version__)'"],
         out, 60)
    _run("test_cupy", [PY, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests/recon_env/test_cupy.py"],
         out, 150)
    for frames, shape in (("4096", "256"), ("512", "128")):  # GPU time of each pass
        _run(f"profile_{frames}x{shape}", [PY, "-m", "recon_env.gpu_profile", frames, shape],
             out, 90)
    rows = []
    cases = [("1gpu_512x128", ["--frames", "512", "--shape", "128", "--iterations", "100",
                               "--warmup", "5"], 1),
             ("1gpu_4096x256", ["--frames", "4096", "--shape", "256", "--iterations", "100",
                                "--warmup", "3"], 1),
             ("1gpu_4096x256_again", ["--frames", "4096", "--shape", "256", "--iterations",
                                      "100", "--warmup", "3"], 1),
             ("1gpu_4096x256_raar", ["--frames", "4096", "--shape", "256", "--iterations",
                                     "100", "--warmup", "3", "--algorithm", "raar"], 1),
             ("1gpu_4096x256_streamed", ["--frames", "4096", "--shape", "256", "--iterations",
                                         "10", "--warmup", "1", "--host-frames"], 1)]
    iters = "10" if quick else "30"
    for n in (1, 2, 4):
        cases.append((f"{n}gpu_16384x256", ["--frames", "16384", "--shape", "256",
                                            "--iterations", iters, "--warmup", "2"], n))
    cases.append(("4gpu_16384x256_hostmpi", ["--frames", "16384", "--shape", "256",
                                             "--iterations", iters, "--warmup", "2",
                                             "--comm", "mpi"], 4))
    for name, args, n in cases:
        cmd = (BENCH + args) if n == 1 else (_mpi(n) + BENCH + args)
        rec = _record(out, name, _run(name, cmd, out, 120 if n == 1 else 150))
        if rec:
            rows.append(rec)
    qtext = _run("quality_512x128_200it", [PY, "-m", "recon_env.cli", "recon", "--simulate",
                                           "--backend", "cupy", "--frames", "512", "--shape",
                                           "128", "--photons", "1e8", "--iterations", "200",
                                           "--report-every", "50", "--out", str(out / "q")],
                 out, 90)
    if not quick:
        _run("cpu_tests_numpy2", [PY, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider",
                                  "tests/recon_env", "-k", "not cupy and not sparkmpi"], out, 120)
    print("\nname                      ranks  s/iteration  total s   comm  block streaming")
    for r in rows:
        print(f"{r['name']:<26}{r['ranks']:>5}  {r['seconds_per_iteration']:>11.5f}"
              f"  {r['seconds_total']:>7.3f}   {r.get('comm')} {r.get('block_frames')} "
              f"{r.get('streaming')}")
    base = {r["name"]: r for r in rows}
    one = base.get("1gpu_16384x256")
    for n in (2, 4):
        many = base.get(f"{n}gpu_16384x256")
        if one and many:
            print(f"strong scaling efficiency at {n} GPUs: "
                  f"{one['seconds_per_iteration'] / (n * many['seconds_per_iteration']):.2%}")
    print(qtext[-400:])
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
