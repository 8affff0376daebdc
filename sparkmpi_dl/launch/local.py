"""The local launcher: an mpiexec stand-in built on the job service (no Spark).

Ranks run as threads of this process calling the same :func:`run_rank` a Spark task calls,
so this is the reference the Spark path must match.
"""
from __future__ import annotations

import threading
from typing import Any, Callable, Sequence

import cloudpickle

from sparkmpi_dl.errors import JobFailed, RankProcessFailed
from sparkmpi_dl.launch.output import print_prefixed
from sparkmpi_dl.launch.rank import RankSpec, exit_status, run_rank
from sparkmpi_dl.pmi import EnvProvider, JobOutcome, JobService, OutputSink

__all__ = ["JobFailed", "mpirun", "run_local"]  # JobFailed: sparkmpi_dl.errors, kept here for imports


def _run_ranks(spec: RankSpec, num_proc: int) -> tuple[list[Any], list[BaseException | None]]:
    results: list[Any] = [None] * num_proc
    errors: list[BaseException | None] = [None] * num_proc

    def one(rank: int) -> None:
        try:
            results[rank] = run_rank(spec, rank, epoch=0)
        except BaseException as err:  # noqa: BLE001 - reported per rank below
            errors[rank] = err

    threads = [threading.Thread(target=one, args=(r,), name=f"rank-{r}") for r in range(num_proc)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return results, errors


def _settled_outcome(service: JobService, timeout: float = 10.0) -> JobOutcome | None:
    """The epoch's outcome once the service has processed every rank's exit report.

    A task returns right after *sending* its exit status; reading the outcome before the
    service's event loop has handled that message would miss a failure.
    """
    return service.wait(timeout) or service.outcome()


def _service(num_proc: int, env_provider: EnvProvider | None, output: OutputSink | None,
             start_timeout: float, timeout: float | None) -> JobService:
    return JobService(num_proc, host="127.0.0.1", env_provider=env_provider,
                      output=output or print_prefixed, start_timeout=start_timeout,
                      timeout=timeout)


def mpirun(argv: Sequence[str], num_proc: int, *, env: dict[str, str] | None = None,
           env_provider: EnvProvider | None = None, output: OutputSink | None = None,
           start_timeout: float = 60.0, cwd: str | None = None,
           timeout: float | None = None) -> int:
    """Run ``argv`` as ``num_proc`` MPI ranks on this host; the first failing rank's exit code.

    Exit code conventions follow mpiexec: 0 when every rank exits 0, else the failing
    rank's code (128 + signal number for a rank killed by a signal; 1 for a rank that
    left without MPI_Finalize while others were still in MPI). ``timeout`` (seconds) ends
    the job, killing every rank, with exit code 124.
    """
    if not argv:
        raise ValueError("mpirun needs a command to run")
    with _service(num_proc, env_provider, output, start_timeout, timeout) as service:
        spec = RankSpec(service.address, service.secret, service.job_id, argv=tuple(argv),
                        env=dict(env or {}), cwd=cwd)
        try:
            _run_ranks(spec, num_proc)
        except KeyboardInterrupt:
            service.abort("interrupted by the user")
            raise
        outcome = _settled_outcome(service)
    if outcome is None or outcome.failure is None:
        return 0
    return exit_status(outcome.failure.exit_code)


def run_local(fn: Callable[..., Any], num_proc: int, *, args: Sequence[Any] = (),
              kwargs: dict[str, Any] | None = None, env: dict[str, str] | None = None,
              env_provider: EnvProvider | None = None, output: OutputSink | None = None,
              start_timeout: float = 60.0, timeout: float | None = None) -> list[Any]:
    """Call ``fn(*args, **kwargs)`` in ``num_proc`` local MPI ranks; results ordered by rank.

    Raises :class:`JobFailed` if a rank fails or the job runs past ``timeout`` seconds."""
    payload = cloudpickle.dumps((fn, tuple(args), dict(kwargs or {})))
    with _service(num_proc, env_provider, output, start_timeout, timeout) as service:
        spec = RankSpec(service.address, service.secret, service.job_id, payload=payload,
                        env=dict(env or {}))
        results, errors = _run_ranks(spec, num_proc)
        outcome = _settled_outcome(service)
        failure, processes = outcome.failure if outcome else None, service.rank_processes()
    if failure is not None or any(errors):
        first = next((e for e in errors if isinstance(e, RankProcessFailed)), None)
        raise JobFailed(failure, str(first or next(e for e in errors if e)), processes)
    return [cloudpickle.loads(r) for r in results]
