"""The Spark launcher: MPI ranks as Spark barrier tasks, wired up by the driver's job service.

``run(fn, num_proc)`` calls ``fn`` once per rank and returns the results ordered by rank;
``run_command(argv, num_proc)`` runs a program (a compiled MPI binary, a script) instead.
Each barrier task calls :func:`sparkmpi_dl.launch.rank.run_rank`, which starts the rank as a
subprocess of the task with ``PMI_FD``, ``PMI_RANK``, ``PMI_SIZE``, ``PMIX_RANK`` and the
``SPARKMPI_*`` variables set (see docs/ENVIRONMENT.md). A retried stage attempt is a new
epoch with a fresh key-value space (epoch = the attempt's smallest task attempt id).
"""
from __future__ import annotations

import sys
import time
import uuid
from typing import Any, Callable, Iterable, Iterator, Sequence

import cloudpickle
from pyspark import BarrierTaskContext, SparkContext, TaskContext
from pyspark.sql import SparkSession

from sparkmpi_dl.errors import FailureReport, JobFailed, SparkSetupError
from sparkmpi_dl.launch.output import print_prefixed
from sparkmpi_dl.launch.rank import RankSpec, run_rank
from sparkmpi_dl.launch.spark_setup import (BadMaster, InterpreterMismatch,  # noqa: F401 (API)
                                            adopt_interpreter, check_interpreter, check_master,
                                            choose_interpreter, first_line, keep_sigint_handler,
                                            quiet, quiet_startup)
from sparkmpi_dl.pmi import EnvProvider, JobService, OutputSink

DEFAULT_MASTER = "local[*]"


class NotEnoughSlots(SparkSetupError):
    """The cluster cannot run all ranks at once, which a barrier stage requires."""


def spark_context(spark: SparkSession | SparkContext | None = None, master: str | None = None,
                  app_name: str = "sparkmpi-dl", conf: dict[str, str] | None = None,
                  default_master: str = DEFAULT_MASTER) -> SparkContext:
    """The given context, the active one, or a new session.

    The new session's master is ``master``, else spark-submit's, else ``default_master``.
    Its executors run the interpreter meant (``PYSPARK_PYTHON``, else this one: see
    :mod:`sparkmpi_dl.launch.spark_setup`), and Spark logs errors only unless verbose.
    A ``master`` that differs from a running context's is refused, not ignored, and a bad
    or unreachable ``master`` fails in one line (:class:`BadMaster`) within seconds.
    """
    if master is not None:
        check_master(master)
    given = spark.sparkContext if isinstance(spark, SparkSession) else spark
    active = given or SparkContext._active_spark_context
    if active is not None:
        if master is not None and master != active.master:
            raise SparkSetupError(f"a Spark context with master {active.master} is already "
                                  f"running in this process, so master {master} cannot be "
                                  "used: stop it first, or leave the master unset")
        adopt_interpreter(active)
        return active
    quiet_startup()
    try:
        submitted = _submitted_conf()
    except Exception as err:
        raise SparkSetupError(f"cannot start Spark's JVM: {first_line(err)}") from None
    url = master or submitted.get("spark.master") or default_master
    builder = (SparkSession.builder.appName(app_name).master(url)
               .config("spark.ui.showConsoleProgress", "false"))
    for key, value in (conf or {}).items():
        builder = builder.config(key, value)
    choose_interpreter({**submitted, **(conf or {})})
    try:
        with keep_sigint_handler():
            sc = builder.getOrCreate().sparkContext
    except Exception as err:
        raise BadMaster(f"cannot start Spark with master {url}: {first_line(err)}") from None
    quiet(sc)
    return sc


def _submitted_conf() -> dict[str, str]:
    """Configuration spark-submit (or spark-defaults.conf) gave this driver's JVM."""
    from pyspark import SparkConf
    SparkContext._ensure_initialized()  # starts or joins the JVM gateway that holds them
    return dict(SparkConf().getAll())


def available_slots(sc: SparkContext) -> int:
    """How many tasks the cluster can run at once right now (what a barrier stage needs)."""
    jsc = sc._jsc.sc()
    profile = jsc.resourceProfileManager().defaultResourceProfile()
    return int(jsc.maxNumConcurrentTasks(profile))


def require_slots(sc: SparkContext, num_proc: int, wait_s: float = 15.0) -> int:
    """Fail fast, with advice, when fewer than ``num_proc`` slots exist.

    Executors of a fresh cluster register over a few seconds, so this waits up to
    ``wait_s`` (printing what it sees) before giving up; Spark itself would wait minutes.
    A ``local[N]`` master has all its slots from the start, so it does not wait. Then the
    executors' Python is checked once per context (:class:`InterpreterMismatch`).
    """
    master = sc.master or ""
    if master.startswith("local"):
        wait_s = 0.0  # no executor can join a local master
    deadline = time.monotonic() + wait_s
    slots = available_slots(sc)
    announced = False
    while slots < num_proc and time.monotonic() < deadline:
        if not announced:
            print(f"sparkmpi-dl: waiting up to {wait_s:.0f} s for executors: {slots} of "
                  f"{num_proc} task slots available", flush=True)
            announced = True
        time.sleep(0.5)
        slots = available_slots(sc)
    if slots < num_proc:
        hint = (f"use --master local[{num_proc}] (or more cores)" if master.startswith("local")
                else "add executors or cores (spark.executor.cores, spark.cores.max, "
                     "more workers), or lower spark.task.cpus")
        raise NotEnoughSlots(
            f"this job needs {num_proc} task slots at once (one per MPI rank) but the cluster "
            f"at {master} offers {slots}: {hint}, or run with fewer ranks")
    adopt_interpreter(sc)
    check_interpreter(sc, 1 if master.startswith("local") else slots)
    return slots


def _driver_host(sc: SparkContext, bind_host: str | None) -> str:
    return bind_host or sc.getConf().get("spark.driver.host", "127.0.0.1")


def _barrier_task(spec: RankSpec) -> Callable[[Iterable[Any]], Iterator[tuple[int, bytes | None]]]:
    def task(_partition: Iterable[Any]) -> Iterator[tuple[int, bytes | None]]:
        ctx = BarrierTaskContext.get()
        rank = ctx.partitionId()
        # PySpark does not expose the stage attempt number; the smallest task attempt id
        # of this stage attempt is as good: all its tasks agree on it, and a retry's is larger.
        epoch = min(int(task_id) for task_id in ctx.allGather(str(ctx.taskAttemptId())))
        yield rank, run_rank(spec, rank, epoch=epoch, extra_env=_gpu_env(ctx))
    return task


def _gpu_env(ctx: TaskContext) -> dict[str, str]:
    """CUDA_VISIBLE_DEVICES from the GPUs Spark assigned to this task, if it assigned any."""
    gpus = ctx.resources().get("gpu")
    if gpus is None or not gpus.addresses:
        return {}
    return {"CUDA_VISIBLE_DEVICES": ",".join(gpus.addresses)}


def _stage_retries(sc: SparkContext, stage_retries: int | None) -> int:
    if stage_retries is not None:
        return stage_retries
    return int(sc.getConf().get("spark.sparkmpi.stageRetries", "0"))


def _launch(sc: SparkContext, spec_for: Callable[[JobService], RankSpec], num_proc: int,
            env_provider: EnvProvider | None, output: OutputSink | None, bind_host: str | None,
            start_timeout: float, slot_wait_s: float, stage_retries: int | None,
            timeout: float | None = None, stage: Callable[[RankSpec], Any] | None = None) -> Any:
    """Run the barrier stage (``stage(spec)``; default: ``num_proc`` ranks over ``range``)
    while the job service lives; its value, or the per-rank results ordered by rank."""
    require_slots(sc, num_proc, slot_wait_s)
    group = f"sparkmpi-{uuid.uuid4().hex[:8]}"
    retries = _stage_retries(sc, stage_retries)
    failed_epochs: list[FailureReport] = []

    def on_failure(failure: FailureReport) -> None:
        # Spark resubmits a failed barrier stage up to spark.stage.maxConsecutiveAttempts
        # times; past the retries asked for, cancel so a deterministic failure fails fast.
        failed_epochs.append(failure)
        if len(failed_epochs) > retries or failure.rank < 0:  # rank -1: the job's timeout
            sc.cancelJobGroup(group)
        else:  # said whatever Spark's logging is: the job goes on, the failure must not vanish
            last = failure.stderr_tail[-1].strip() if failure.stderr_tail else ""
            print(f"sparkmpi-dl: attempt {len(failed_epochs)} failed: rank {failure.rank} "
                  f"{failure.reason}{f' ({last})' if last else ''}; Spark runs the ranks again "
                  f"(retry {len(failed_epochs)} of {retries})", file=sys.stderr, flush=True)

    service = JobService(num_proc, host=_driver_host(sc, bind_host), env_provider=env_provider,
                         output=output or print_prefixed, start_timeout=start_timeout,
                         on_failure=on_failure, timeout=timeout)
    with service:
        spec = spec_for(service)
        sc.setJobGroup(group, f"sparkmpi-dl job {service.job_id} ({num_proc} ranks)", True)
        try:
            if stage is not None:  # the data plane's stage over the data's own partitions
                return stage(spec)
            ranks = sc.parallelize(range(num_proc), num_proc).barrier().mapPartitions(_barrier_task(spec))
            # Spark retries a failed barrier stage only when it is a shuffle-map stage, so the
            # ranks' (tiny) results go through a one-partition shuffle before collect().
            pairs = ranks.repartition(1).collect()
        except Exception as err:
            service.wait(timeout=5)  # let the service finish recording the failing rank's report
            raise JobFailed(service.failure_of(), f"Spark job failed: {str(err).splitlines()[0]}",
                            service.rank_processes()) from None
        finally:
            sc.setLocalProperty("spark.jobGroup.id", None)  # type: ignore[arg-type]  # None unsets it
    return [result for _, result in sorted(pairs, key=lambda pair: pair[0])]


def run(fn: Callable[..., Any], num_proc: int | None = None, *, args: Sequence[Any] = (),
        kwargs: dict[str, Any] | None = None, spark: SparkSession | SparkContext | None = None,
        master: str | None = None, env: dict[str, str] | None = None,
        env_provider: EnvProvider | None = None, output: OutputSink | None = None,
        bind_host: str | None = None, start_timeout: float = 60.0,
        slot_wait_s: float = 15.0, stage_retries: int | None = None,
        timeout: float | None = None) -> list[Any]:
    """Call ``fn(*args, **kwargs)`` in ``num_proc`` Spark barrier tasks as MPI ranks.

    Returns the per-rank results ordered by rank. Raises :class:`NotEnoughSlots` before
    starting anything if the cluster is too small, and :class:`JobFailed` (naming the rank
    and carrying its traceback) if a rank fails. ``stage_retries`` (default: the Spark conf
    ``spark.sparkmpi.stageRetries``, else 0) lets Spark retry the whole stage that many
    times after a failure, each attempt a fresh PMI epoch. ``timeout`` (seconds, counted
    from when the job service starts) ends the job, killing every rank, with JobFailed.
    One rank per partition of a DataFrame is :func:`sparkmpi_dl.run` with ``data=``
    (:mod:`sparkmpi_dl.api`, which hands it to the data plane).
    """
    if num_proc is None:
        raise ValueError("run needs num_proc (the number of ranks), or data= for one rank per partition")
    sc = spark_context(spark, master)
    payload = cloudpickle.dumps((fn, tuple(args), dict(kwargs or {})))
    results = _launch(sc, lambda s: RankSpec(s.address, s.secret, s.job_id, payload=payload,
                                             env=dict(env or {})),
                      num_proc, env_provider, output, bind_host, start_timeout, slot_wait_s,
                      stage_retries, timeout=timeout)
    return [cloudpickle.loads(r) for r in results]


def run_command(argv: Sequence[str], num_proc: int | None = None, *,
                spark: SparkSession | SparkContext | None = None,
                master: str | None = None, env: dict[str, str] | None = None,
                env_provider: EnvProvider | None = None, output: OutputSink | None = None,
                cwd: str | None = None, bind_host: str | None = None, start_timeout: float = 60.0,
                slot_wait_s: float = 15.0, stage_retries: int | None = None,
                timeout: float | None = None) -> None:
    """Run ``argv`` as ``num_proc`` MPI ranks in Spark barrier tasks; raises on failure.
    (With ``data=``, one rank per partition: :func:`sparkmpi_dl.run_command`.)"""
    if not argv:
        raise ValueError("run_command needs a command to run")
    if num_proc is None:
        raise ValueError("run_command needs num_proc (the number of ranks), or data= for one rank per partition")
    sc = spark_context(spark, master)
    _launch(sc, lambda s: RankSpec(s.address, s.secret, s.job_id, argv=tuple(argv),
                                   env=dict(env or {}), cwd=cwd),
            num_proc, env_provider, output, bind_host, start_timeout, slot_wait_s, stage_retries,
            timeout=timeout)
