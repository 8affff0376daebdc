"""The driver's side of the data plane: one barrier task (one MPI rank) per partition.

A DataFrame goes through ``df.mapInArrow(task, ..., barrier=True)``: the JVM hands each
barrier task its partition as Arrow record batches, the task streams them into an
anonymous file (:mod:`sparkmpi_dl.dataplane.files`) and starts its rank with the file's
descriptor. An RDD goes through ``rdd.barrier().mapPartitions`` the same way, its records
pickled. Nothing goes through the driver, and no shuffle happens when the partition count
is already the number of ranks.

``num_proc`` smaller than the partition count coalesces the data (no shuffle) and local-
checkpoints it first, because Spark refuses a barrier stage over a coalesce; a larger one
repartitions it (a shuffle). Either is logged.

Where the time goes: the JVM converting rows to Arrow dominates (per element for
``array<float>``, a memory copy per row for ``binary``), so the stage caps Arrow batches at
:data:`ARROW_BATCH_BYTES` (Spark's default builds a whole partition of large rows as one
batch, regrowing its buffers by copying, with nothing pipelined). Every partition is written
before any rank starts (the all-gather after the write), so a task whose source fails stops
the job before any rank runs, and the job's error is that task's.
"""
from __future__ import annotations

import os
from contextlib import contextmanager
from typing import Any, Callable, Iterable, Iterator, Sequence

import cloudpickle
import pyarrow as pa
from pyspark import BarrierTaskContext, RDD, SparkContext
from pyspark.sql import DataFrame, SparkSession

from sparkmpi_dl.dataplane.files import (DATA_DIR_CONF, DATA_VAR, RESULT_VAR, anonymous_file, data_dir,
                                         fd_path, read_batches, write_batches, write_records)
from sparkmpi_dl.dataplane.partition import MapPartition, WithPartition
from sparkmpi_dl.launch.rank import RankSpec, run_rank
from sparkmpi_dl.launch.spark import (NotEnoughSlots, _gpu_env, _launch, available_slots,
                                      require_slots, spark_context)
from sparkmpi_dl.pmi import EnvProvider, JobService, OutputSink

RUN_SCHEMA = pa.schema([("rank", pa.int64()), ("result", pa.binary())])

ARROW_BATCH_CONF = "spark.sql.execution.arrow.maxBytesPerBatch"
ARROW_BATCH_BYTES = 4 * 2**20
"""The Arrow batch size of the data plane's stage unless the session sets ``ARROW_BATCH_CONF``:
small enough that the JVM fills each batch without regrowing and the Python side writes one
while the next is converted (measured 2-3x faster than Spark's 256 MB default on 64 KB rows)."""


class UnsupportedColumn(TypeError):
    """A DataFrame column whose Spark type has no Arrow form, so no rank could receive it."""


class PartitionCountChanged(RuntimeError):
    """The data has a different partition count at run time than when it was planned."""


def arrow_schema(df: DataFrame) -> pa.Schema:
    """The Arrow schema the ranks will see; names the first column Arrow cannot carry."""
    from pyspark.sql.pandas.types import to_arrow_type

    fields = []
    for field in df.schema.fields:
        try:
            fields.append(pa.field(field.name, to_arrow_type(field.dataType), nullable=field.nullable))
        except Exception:
            raise UnsupportedColumn(
                f"column {field.name!r} has type {field.dataType.simpleString()}, which Arrow cannot "
                "carry to the MPI ranks: cast it (e.g. to string) or drop it first") from None
    return pa.schema(fields)


def context_of(data: DataFrame | RDD[Any], spark: SparkSession | SparkContext | None,
               master: str | None) -> SparkContext:
    if spark is None and master is None:
        return data.sparkSession.sparkContext if isinstance(data, DataFrame) else data.context
    return spark_context(spark, master)


class Placed:
    """The data laid out as one partition per rank, and how to release what that took."""

    def __init__(self, data: DataFrame | RDD[Any], num_proc: int, checkpoint: Any = None) -> None:
        self.data, self.num_proc, self._checkpoint = data, num_proc, checkpoint

    def release(self) -> None:
        """Drop the blocks of a coalescing local checkpoint, if one was made."""
        if self._checkpoint is not None:
            try:
                self._checkpoint.unpersist(False)
            except Exception:
                pass
            self._checkpoint = None


def place(sc: SparkContext, data: DataFrame | RDD[Any], num_proc: int | None, slot_wait_s: float) -> Placed:
    """One partition per rank: check the slots first, then coalesce or repartition if asked."""
    if not isinstance(data, (DataFrame, RDD)):
        raise TypeError(f"data must be a pyspark DataFrame or RDD, not {type(data).__name__}")
    if isinstance(data, DataFrame):
        arrow_schema(data)  # an unsupported column fails here, before anything runs
    parts = data.rdd.getNumPartitions() if isinstance(data, DataFrame) else data.getNumPartitions()
    wanted = parts if num_proc is None else num_proc
    if wanted < 1:
        raise ValueError(f"num_proc must be >= 1, got {wanted}" if num_proc is not None else
                         "the data has no partitions: there is nothing to give the MPI ranks")
    try:
        require_slots(sc, wanted, slot_wait_s)
    except NotEnoughSlots:
        slots = available_slots(sc)
        what = (f"the data has {parts} partitions, one MPI rank each," if num_proc is None
                else f"num_proc={num_proc} asks for {num_proc} MPI ranks,")
        raise NotEnoughSlots(
            f"{what} but the cluster at {sc.master} offers {slots} task slots: pass "
            f"num_proc={slots} (or fewer) to coalesce the data, or add executors or cores") from None
    if wanted == parts and _barrier_refuses(data):
        print(f"sparkmpi-dl: the data's plan coalesces or unions partitions, which a barrier stage "
              f"refuses; local-checkpointing its {parts} partitions first", flush=True)
        return _checkpointed(data, wanted)
    if wanted == parts:
        return Placed(data, wanted)
    if wanted < parts:
        print(f"sparkmpi-dl: coalescing the data's {parts} partitions to {wanted} (one per rank; "
              "no shuffle, local-checkpointed for the barrier stage)", flush=True)
        return _checkpointed(data.coalesce(wanted), wanted)
    print(f"sparkmpi-dl: repartitioning the data's {parts} partitions to {wanted} (one per rank; "
          "a shuffle)", flush=True)
    return Placed(data.repartition(wanted), wanted)


_REFUSED_IN_BARRIER = ("Coalesce", "Union", "PartitionPruning", "CoalescedRDD", "UnionRDD")
"""Plan nodes / RDDs whose ancestors have another partition count: Spark refuses a barrier
stage over them (SPARK-24820), so such data is local-checkpointed first."""


def _barrier_refuses(data: DataFrame | RDD[Any]) -> bool:
    try:
        if isinstance(data, DataFrame):
            plan = data._jdf.queryExecution().executedPlan().toString()
        else:
            plan = (data.toDebugString() or b"").decode()
    except Exception:
        return False
    return any(name in plan for name in _REFUSED_IN_BARRIER)


def _checkpointed(data: DataFrame | RDD[Any], num_proc: int) -> Placed:
    if isinstance(data, DataFrame):
        placed = data.localCheckpoint(eager=True)
        return Placed(placed, num_proc, _checkpoint_rdd(placed))
    data.localCheckpoint()
    data.count()
    return Placed(data, num_proc, data)


def _checkpoint_rdd(df: DataFrame) -> Any:
    """The JVM RDD holding a local checkpoint's blocks (so they can be dropped after)."""
    try:
        return df._jdf.queryExecution().logical().rdd()
    except Exception:
        return None


def _check_size(ctx: BarrierTaskContext, size: int) -> None:
    actual = len(ctx.getTaskInfos())
    if actual != size:
        raise PartitionCountChanged(
            f"the data has {actual} partitions at run time but {size} when planned (adaptive "
            f"query execution changed a shuffle's partition count): pass num_proc={size}")


def _epoch(ctx: BarrierTaskContext) -> int:
    # as in launch.spark: all tasks agree on the smallest attempt id; a retry's is larger
    return min(int(task_id) for task_id in ctx.allGather(str(ctx.taskAttemptId())))


def dataframe_task(spec: RankSpec, size: int, schema: pa.Schema, directory: str | None,
                   map_result: bool) -> Callable[[Iterable[pa.RecordBatch]], Iterable[pa.RecordBatch]]:
    """The barrier task over a DataFrame partition (a ``mapInArrow`` function)."""
    schema_bytes = schema.serialize().to_pybytes()

    def task(batches: Iterable[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        import pyarrow.ipc as ipc

        ctx = BarrierTaskContext.get()
        rank = ctx.partitionId()
        _check_size(ctx, size)
        fds: list[int] = []
        try:
            where = data_dir(directory)
            fds.append(anonymous_file(where))
            write_batches(fds[0], batches, ipc.read_schema(pa.py_buffer(schema_bytes)))
            env = {DATA_VAR: fd_path(fds[0])}
            if map_result:
                fds.append(anonymous_file(where))
                env[RESULT_VAR] = fd_path(fds[1])
            epoch = _epoch(ctx)  # also a barrier: every partition is written before any rank starts
            result = run_rank(spec, rank, epoch=epoch, extra_env={**_gpu_env(ctx), **env},
                              pass_fds=tuple(fds))
            if map_result:
                yield from read_batches(fds[1])
            else:
                yield pa.RecordBatch.from_arrays([pa.array([rank], pa.int64()), pa.array([result], pa.binary())],
                                                 schema=RUN_SCHEMA)
        finally:
            for fd in fds:
                os.close(fd)
    return task


def rdd_task(spec: RankSpec, size: int,
             directory: str | None) -> Callable[[Iterable[Any]], Iterable[tuple[int, Any]]]:
    """The barrier task over an RDD partition: its records, pickled as one list."""
    def task(records: Iterable[Any]) -> Iterator[tuple[int, Any]]:
        ctx = BarrierTaskContext.get()
        rank = ctx.partitionId()
        _check_size(ctx, size)
        fd = anonymous_file(data_dir(directory))
        try:
            write_records(fd, records)
            epoch = _epoch(ctx)
            yield rank, run_rank(spec, rank, epoch=epoch, extra_env={**_gpu_env(ctx), DATA_VAR: fd_path(fd)},
                                 pass_fds=(fd,))
        finally:
            os.close(fd)
    return task


@contextmanager
def arrow_batch_limit(session: SparkSession, limit: int = ARROW_BATCH_BYTES) -> Iterator[None]:
    """Cap the stage's Arrow batches at ``limit`` bytes unless the session sets its own cap."""
    if session.conf.get(ARROW_BATCH_CONF, None) is not None:
        yield
        return
    session.conf.set(ARROW_BATCH_CONF, str(limit))
    try:
        yield
    finally:
        session.conf.unset(ARROW_BATCH_CONF)


def _configured_dir(sc: SparkContext, data: DataFrame | RDD[Any]) -> str | None:
    if isinstance(data, DataFrame):
        value = data.sparkSession.conf.get(DATA_DIR_CONF, None)
        if value:
            return value
    return sc.getConf().get(DATA_DIR_CONF, None)


def _results_stage(sc: SparkContext, placed: Placed, directory: str | None) -> Callable[[RankSpec], list[bytes | None]]:
    """The barrier stage of ``run``/``run_command``; results ordered by rank.

    The ranks' (small) results go through a one-partition shuffle so that the barrier stage
    is a shuffle-map stage, the kind Spark retries (as in ``launch.spark``).
    """
    def stage(spec: RankSpec) -> list[bytes | None]:
        data = placed.data
        if isinstance(data, DataFrame):
            task = dataframe_task(spec, placed.num_proc, arrow_schema(data), directory, map_result=False)
            with arrow_batch_limit(data.sparkSession):
                rows = data.mapInArrow(task, "rank long, result binary", barrier=True).repartition(1).collect()
            pairs = [(row["rank"], None if row["result"] is None else bytes(row["result"])) for row in rows]
        else:
            pairs = data.barrier().mapPartitions(rdd_task(spec, placed.num_proc, directory)).repartition(1).collect()
        return [result for _, result in sorted(pairs, key=lambda pair: pair[0])]
    return stage


def run_on_data(fn: Callable[..., Any] | None, argv: Sequence[str] | None, data: DataFrame | RDD[Any],
                num_proc: int | None, *, args: Sequence[Any] = (), kwargs: dict[str, Any] | None = None,
                spark: SparkSession | SparkContext | None = None, master: str | None = None,
                env: dict[str, str] | None = None, env_provider: EnvProvider | None = None,
                output: OutputSink | None = None, cwd: str | None = None, bind_host: str | None = None,
                start_timeout: float = 60.0, slot_wait_s: float = 15.0,
                stage_retries: int | None = None, timeout: float | None = None) -> list[Any] | None:
    """``run(fn, data=...)`` (``fn`` given) or ``run_command(argv, data=...)`` (``argv``)."""
    sc = context_of(data, spark, master)
    placed = place(sc, data, num_proc, slot_wait_s)
    directory = _configured_dir(sc, data)
    if fn is not None:
        payload = cloudpickle.dumps((WithPartition(fn), tuple(args), dict(kwargs or {})))

        def spec_for(s: JobService) -> RankSpec:
            return RankSpec(s.address, s.secret, s.job_id, payload=payload, env=dict(env or {}))
    else:
        def spec_for(s: JobService) -> RankSpec:
            return RankSpec(s.address, s.secret, s.job_id, argv=tuple(argv or ()), env=dict(env or {}), cwd=cwd)
    try:
        results = _launch(sc, spec_for, placed.num_proc, env_provider, output, bind_host, start_timeout,
                          slot_wait_s, stage_retries, timeout=timeout,
                          stage=_results_stage(sc, placed, directory))
    finally:
        placed.release()
    return [cloudpickle.loads(r) for r in results] if fn is not None else None


def map_in_mpi(df: DataFrame, fn: Callable[..., Any], schema: Any, *, num_proc: int | None = None,
               args: Sequence[Any] = (), kwargs: dict[str, Any] | None = None,
               env: dict[str, str] | None = None, env_provider: EnvProvider | None = None,
               output: OutputSink | None = None, bind_host: str | None = None,
               start_timeout: float = 60.0, slot_wait_s: float = 15.0,
               timeout: float | None = None) -> DataFrame:
    """MPI as a DataFrame operator: rank r's ``fn(table, *args, **kwargs)`` becomes partition r.

    ``fn`` gets its partition as a ``pyarrow.Table`` and returns a ``pyarrow.Table``, a
    ``RecordBatch`` or an iterator of them with ``schema`` (a Spark DDL string or
    ``StructType``). Unlike ``mapInArrow`` this runs the MPI job now (the ranks need the
    driver's job service while they run) and returns a DataFrame over the results, local-
    checkpointed in the executors' memory: no driver round trip, and later actions do
    not run the ranks again.
    """
    if not isinstance(df, DataFrame):
        raise TypeError(f"map_in_mpi needs a pyspark DataFrame, not {type(df).__name__}")
    sc = df.sparkSession.sparkContext
    out_schema = arrow_schema(df.sparkSession.createDataFrame([], schema))
    placed = place(sc, df, num_proc, slot_wait_s)
    directory = _configured_dir(sc, df)
    payload = cloudpickle.dumps((MapPartition(fn, out_schema), tuple(args), dict(kwargs or {})))

    def stage(spec: RankSpec) -> DataFrame:
        data = placed.data
        assert isinstance(data, DataFrame)  # placing a DataFrame gives a DataFrame
        task = dataframe_task(spec, placed.num_proc, arrow_schema(data), directory, map_result=True)
        with arrow_batch_limit(data.sparkSession):
            return data.mapInArrow(task, schema, barrier=True).localCheckpoint(eager=True)

    try:
        result: DataFrame = _launch(sc, lambda s: RankSpec(s.address, s.secret, s.job_id, payload=payload, env=dict(env or {})),
                       placed.num_proc, env_provider, output, bind_host, start_timeout, slot_wait_s,
                       0, timeout=timeout, stage=stage)
    finally:
        placed.release()
    return result
