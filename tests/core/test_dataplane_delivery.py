"""How the data plane delivers a partition: the rank starts while the partition is being
written, and the JVM's Arrow batches are capped (issue 11's performance work)."""
import os
import time

import pyarrow as pa
import pyarrow.ipc as ipc
import pytest

import sparkmpi_dl
from sparkmpi_dl.dataplane.driver import ARROW_BATCH_BYTES, ARROW_BATCH_CONF
from sparkmpi_dl.dataplane.files import READY_VAR
from sparkmpi_dl.dataplane.partition import PartitionNotDelivered, read_partition

from .test_mpirun import Lines

GUARD_S = 30.0


def started_marker(directory):
    """An argument whose unpickling (in the rank process, as it starts, before it reads its
    partition) leaves a file ``started-<rank>`` in ``directory``."""
    class StartedMarker:
        def __init__(self, where):
            self.where = where

        def __setstate__(self, state):
            self.__dict__.update(state)
            open(os.path.join(self.where, f"started-{os.environ['SPARKMPI_RANK']}"), "w").close()

    return StartedMarker(str(directory))


def wait_for_rank(directory, index):
    deadline = time.monotonic() + GUARD_S
    while not os.path.exists(os.path.join(directory, f"started-{index}")):
        if time.monotonic() > deadline:
            raise TimeoutError(f"rank {index} did not start while its partition was being written")
        time.sleep(0.05)


def test_a_function_rank_starts_while_its_partition_is_still_being_written(spark, tmp_path):
    directory = str(tmp_path)

    def hold_back_the_last_record(index, records):
        yield from records
        wait_for_rank(directory, index)  # without the overlap the rank starts only after this
        yield f"last of {index}"

    def count(records, marker):
        return len(records), records[-1]

    rdd = spark.sparkContext.parallelize(range(4), 2).mapPartitionsWithIndex(hold_back_the_last_record)
    results = sparkmpi_dl.run(count, data=rdd, args=(started_marker(directory),), output=Lines())
    assert results == [(3, "last of 0"), (3, "last of 1")]


def test_a_source_failing_mid_partition_fails_the_job_and_stops_the_early_rank(spark, tmp_path):
    directory = str(tmp_path)

    def break_after_the_rank_started(index, records):
        yield from records
        wait_for_rank(directory, index)
        raise ValueError(f"the source broke in partition {index}")

    def count(records, marker):
        return len(records)

    rdd = spark.sparkContext.parallelize(range(4), 2).mapPartitionsWithIndex(break_after_the_rank_started)
    out = Lines()
    start = time.monotonic()
    with pytest.raises(sparkmpi_dl.JobFailed) as info:
        sparkmpi_dl.run(count, data=rdd, args=(started_marker(directory),), output=out,
                        env={"DATAPLANE_TEST_TAG": directory})
    assert time.monotonic() - start < 60
    assert "the source broke in partition" in str(info.value) + "\n".join(line for _, _, line in out.lines)
    deadline = time.monotonic() + GUARD_S
    while _processes_tagged(directory) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not _processes_tagged(directory)


def _processes_tagged(tag):
    """Live processes with ``DATAPLANE_TEST_TAG=tag`` in their environment: this test's ranks."""
    needle = f"DATAPLANE_TEST_TAG={tag}".encode() + b"\0"
    alive = []
    for pid in os.listdir("/proc"):
        try:
            with open(f"/proc/{pid}/environ", "rb") as f:
                environ = f.read()
        except OSError:
            continue
        if needle in environ:
            alive.append(pid)
    return alive


def test_arrow_batches_are_capped_unless_the_session_sets_the_cap(spark):
    def batch_rows(table):
        return [batch.num_rows for batch in table.to_batches()]

    row_bytes = 256 * 1024
    df = spark.range(0, 48, numPartitions=2).selectExpr("id", f"array_repeat(cast(id as float), {row_bytes // 4}) as frame")
    assert spark.conf.get(ARROW_BATCH_CONF, None) is None
    capped = sparkmpi_dl.run(batch_rows, data=df, output=Lines())
    assert [sum(rows) for rows in capped] == [24, 24]
    assert all(len(rows) >= 2 and max(rows) <= ARROW_BATCH_BYTES // row_bytes + 1 for rows in capped), capped
    assert spark.conf.get(ARROW_BATCH_CONF, None) is None  # the session's conf is left as it was
    spark.conf.set(ARROW_BATCH_CONF, str(2**20))
    try:
        own = sparkmpi_dl.run(batch_rows, data=df, output=Lines())
        assert spark.conf.get(ARROW_BATCH_CONF) == str(2**20)
    finally:
        spark.conf.unset(ARROW_BATCH_CONF)
    assert all(max(rows) <= 5 for rows in own), own


def _arrow_file(path):
    table = pa.table({"id": pa.array([1, 2, 3], pa.int64())})
    with pa.OSFile(str(path), "wb") as sink, ipc.new_file(sink, table.schema) as writer:
        writer.write_table(table)


def test_read_partition_waits_for_the_ready_byte_and_fails_clearly_without_it(tmp_path, monkeypatch):
    _arrow_file(tmp_path / "part.arrow")
    ready_read, ready_write = os.pipe()
    os.write(ready_write, b"1")
    os.close(ready_write)
    monkeypatch.setenv(READY_VAR, str(ready_read))
    assert read_partition(str(tmp_path / "part.arrow"))["id"].to_pylist() == [1, 2, 3]
    assert READY_VAR not in os.environ  # a second read does not wait again
    assert read_partition(str(tmp_path / "part.arrow")).num_rows == 3

    ready_read, ready_write = os.pipe()
    os.close(ready_write)  # the task failed before it had written the partition
    monkeypatch.setenv(READY_VAR, str(ready_read))
    monkeypatch.setenv("SPARKMPI_RANK", "3")
    with pytest.raises(PartitionNotDelivered, match=r"rank 3: the Spark task stopped before it had written "
                                              r"this rank.s partition: the task ended"):
        read_partition(str(tmp_path / "part.arrow"))
