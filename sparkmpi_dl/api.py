"""The public launch functions, ``sparkmpi_dl.run`` and ``sparkmpi_dl.run_command``.

Each has one signature for both kinds of job: without ``data`` the ranks are plain Spark
barrier tasks (:mod:`sparkmpi_dl.launch.spark`); with ``data`` (a DataFrame or RDD) there is
one rank per partition and the partition travels through the data plane
(:mod:`sparkmpi_dl.dataplane`). Dispatching here keeps the launcher and the data plane
from importing each other (the data plane builds on the launcher).
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable, Sequence

from sparkmpi_dl.dataplane.driver import run_on_data
from sparkmpi_dl.launch import spark as launcher

if TYPE_CHECKING:
    from pyspark import RDD, SparkContext
    from pyspark.sql import DataFrame, SparkSession

    from sparkmpi_dl.pmi import EnvProvider, OutputSink

__all__ = ["run", "run_command"]


def run(fn: Callable[..., Any], num_proc: int | None = None, *, data: DataFrame | RDD[Any] | None = None,
        args: Sequence[Any] = (), kwargs: dict[str, Any] | None = None,
        spark: SparkSession | SparkContext | None = None, master: str | None = None,
        env: dict[str, str] | None = None, env_provider: EnvProvider | None = None,
        output: OutputSink | None = None, bind_host: str | None = None, start_timeout: float = 60.0,
        slot_wait_s: float = 15.0, stage_retries: int | None = None,
        timeout: float | None = None) -> list[Any]:
    """Call ``fn(*args, **kwargs)`` in ``num_proc`` Spark barrier tasks as MPI ranks and
    return the per-rank results ordered by rank (see :func:`sparkmpi_dl.launch.spark.run`
    for failures, retries and ``timeout``).

    ``data`` (a DataFrame or RDD) runs one rank per partition (``num_proc`` ranks if given,
    coalescing or repartitioning), calling ``fn(partition, *args, **kwargs)`` with a
    ``pyarrow.Table`` or a list of records: see :mod:`sparkmpi_dl.dataplane`.
    """
    if data is not None:
        results = run_on_data(fn, None, data, num_proc, args=args, kwargs=kwargs, spark=spark,
                              master=master, env=env, env_provider=env_provider, output=output,
                              bind_host=bind_host, start_timeout=start_timeout,
                              slot_wait_s=slot_wait_s, stage_retries=stage_retries, timeout=timeout)
        return list(results or [])
    return launcher.run(fn, num_proc, args=args, kwargs=kwargs, spark=spark, master=master, env=env,
                        env_provider=env_provider, output=output, bind_host=bind_host,
                        start_timeout=start_timeout, slot_wait_s=slot_wait_s,
                        stage_retries=stage_retries, timeout=timeout)


def run_command(argv: Sequence[str], num_proc: int | None = None, *,
                data: DataFrame | RDD[Any] | None = None,
                spark: SparkSession | SparkContext | None = None, master: str | None = None,
                env: dict[str, str] | None = None, env_provider: EnvProvider | None = None,
                output: OutputSink | None = None, cwd: str | None = None, bind_host: str | None = None,
                start_timeout: float = 60.0, slot_wait_s: float = 15.0,
                stage_retries: int | None = None, timeout: float | None = None) -> None:
    """Run ``argv`` as ``num_proc`` MPI ranks in Spark barrier tasks; raises on failure.

    With ``data`` (a DataFrame or RDD), one rank per partition, each finding its partition
    at ``$SPARKMPI_DATA`` (an Arrow IPC file; docs/ENVIRONMENT.md).
    """
    if data is not None:
        if not argv:
            raise ValueError("run_command needs a command to run")
        run_on_data(None, argv, data, num_proc, spark=spark, master=master, env=env,
                    env_provider=env_provider, output=output, cwd=cwd, bind_host=bind_host,
                    start_timeout=start_timeout, slot_wait_s=slot_wait_s,
                    stage_retries=stage_retries, timeout=timeout)
        return
    launcher.run_command(argv, num_proc, spark=spark, master=master, env=env,
                         env_provider=env_provider, output=output, cwd=cwd, bind_host=bind_host,
                         start_timeout=start_timeout, slot_wait_s=slot_wait_s,
                         stage_retries=stage_retries, timeout=timeout)
