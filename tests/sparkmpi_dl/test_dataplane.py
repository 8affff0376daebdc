"""The data plane on a local[4] Spark: ranks over a DataFrame's or an RDD's partitions."""
import os
import sys
import textwrap
import time

import numpy as np
import pyarrow as pa
import pytest

import sparkmpi_dl
from sparkmpi_dl.dataplane import UnsupportedColumn, column_as_array
from sparkmpi_dl.launch.spark import NotEnoughSlots

from .test_mpirun import Lines

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def frames(spark, rows=12, partitions=3):
    """A DataFrame of 2x3 float32 frames (array<float>), frame i filled with i."""
    return spark.range(0, rows, numPartitions=partitions).selectExpr(
        "id", "array_repeat(cast(id as float), 6) as frame")


def test_each_rank_gets_its_own_partition_as_an_arrow_table(spark):
    def reduce_frames(table, scale):
        import numpy as np
        from mpi4py import MPI
        from sparkmpi_dl.dataplane import column_as_array
        stack = column_as_array(table, "frame", shape=(2, 3), dtype=np.float32)
        total = MPI.COMM_WORLD.allreduce(float(stack.sum()) * scale)
        return {"rank": MPI.COMM_WORLD.rank, "ids": table["id"].to_pylist(), "shape": stack.shape,
                "first": stack[0].tolist(), "total": total, "type": type(table).__name__}

    df = frames(spark)
    expected = df.rdd.glom().map(lambda rows: [r.id for r in rows]).collect()
    results = sparkmpi_dl.run(reduce_frames, data=df, args=(2,), output=Lines())
    assert [r["rank"] for r in results] == [0, 1, 2]
    assert [r["ids"] for r in results] == expected          # rank r holds partition r
    assert [r["shape"] for r in results] == [(4, 2, 3)] * 3
    assert results[1]["first"] == [[4.0] * 3] * 2
    assert {r["total"] for r in results} == {2 * 6 * sum(range(12))}
    assert {r["type"] for r in results} == {"Table"}


def test_num_proc_coalesces_without_shuffle_and_says_so(spark, capsys):
    def rows(table):
        return table.num_rows

    assert sparkmpi_dl.run(rows, 2, data=frames(spark, partitions=4), output=Lines()) == [6, 6]
    assert "coalescing the data's 4 partitions to 2" in capsys.readouterr().out
    assert sum(sparkmpi_dl.run(rows, 3, data=frames(spark, partitions=1), output=Lines())) == 12
    assert "repartitioning the data's 1 partitions to 3" in capsys.readouterr().out


def test_rdd_partitions_arrive_as_lists_of_records(spark):
    def total(records):
        from mpi4py import MPI
        return records, MPI.COMM_WORLD.allreduce(sum(r["v"] for r in records))

    rdd = spark.sparkContext.parallelize([{"v": i} for i in range(6)], 2)
    results = sparkmpi_dl.run(total, data=rdd, output=Lines())
    assert results == [([{"v": 0}, {"v": 1}, {"v": 2}], 15), ([{"v": 3}, {"v": 4}, {"v": 5}], 15)]


READER = textwrap.dedent("""
    import json, os
    import pyarrow as pa, pyarrow.ipc as ipc
    path = os.environ["SPARKMPI_DATA"]
    table = ipc.open_file(pa.memory_map(path)).read_all()
    print(json.dumps({"rank": int(os.environ["SPARKMPI_RANK"]), "path": path,
                      "ids": table["id"].to_pylist()}))
""")


def test_a_program_finds_its_partition_in_sparkmpi_data(spark):
    out = Lines()
    sparkmpi_dl.run_command([sys.executable, "-c", READER], data=frames(spark, rows=4, partitions=2),
                            output=out)
    results = out.json_of()
    assert [r["ids"] for r in results] == [[0, 1], [2, 3]]
    assert all(r["path"].startswith("/dev/fd/") for r in results)


def test_a_failing_rank_fails_fast_and_no_partition_file_is_left(spark, tmp_path):
    def look_then_fail(table, directory):
        import os
        import time
        from mpi4py import MPI
        visible = os.listdir(directory)  # the partition file has no name, even while in use
        MPI.COMM_WORLD.Barrier()
        if MPI.COMM_WORLD.rank == 1:
            raise ValueError(f"bad frame in a partition of {table.num_rows} rows; saw {visible}")
        time.sleep(600)

    spark.conf.set("spark.sparkmpi.dataDir", str(tmp_path))
    try:
        start = time.monotonic()
        with pytest.raises(sparkmpi_dl.JobFailed) as info:
            sparkmpi_dl.run(look_then_fail, data=frames(spark), args=(str(tmp_path),), output=Lines())
        assert time.monotonic() - start < 60
    finally:
        spark.conf.unset("spark.sparkmpi.dataDir")
    assert info.value.failure.rank == 1
    assert "ValueError: bad frame in a partition of 4 rows; saw []" in str(info.value)
    assert os.listdir(tmp_path) == []
    assert not _shm_files_of_this_process()


def _shm_files_of_this_process():
    """Files in the data directory still open by this test's processes (the JVM's workers)."""
    leftover = []
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            for fd in os.listdir(f"/proc/{pid}/fd"):
                target = os.readlink(f"/proc/{pid}/fd/{fd}")
                if "sparkmpi" in target and "(deleted)" in target:
                    leftover.append(target)
        except OSError:
            continue
    return leftover


def test_more_partitions_than_slots_names_num_proc_as_the_fix(spark):
    with pytest.raises(NotEnoughSlots, match=r"the data has 6 partitions, one MPI rank each, but .* offers 4 "
                                             r"task slots: pass num_proc=4 \(or fewer\)"):
        sparkmpi_dl.run(len, data=frames(spark, partitions=6), slot_wait_s=0)


def test_an_empty_partition_is_an_empty_table_with_the_columns(spark):
    def describe(table):
        import numpy as np
        from sparkmpi_dl.dataplane import column_as_array
        return table.num_rows, table.column_names, column_as_array(table, "frame", (2, 3), np.float32).shape

    df = frames(spark).filter("id < 4")  # partitions 1 and 2 become empty
    results = sparkmpi_dl.run(describe, data=df, output=Lines())
    assert results == [(4, ["id", "frame"], (4, 2, 3)), (0, ["id", "frame"], (0, 2, 3)),
                       (0, ["id", "frame"], (0, 2, 3))]


def test_a_column_arrow_cannot_carry_is_named_before_anything_runs(spark):
    df = spark.range(2).selectExpr("id", "make_interval(0, 0, 0, id, 0, 0, 0) as wait")
    with pytest.raises(UnsupportedColumn, match=r"column 'wait' has type interval, which Arrow cannot carry"):
        sparkmpi_dl.run(len, data=df)


def test_column_as_array_views_list_and_binary_columns_without_copy():
    frames_ = np.arange(24, dtype=np.float32).reshape(4, 2, 3)
    listed = pa.table({"f": pa.array(list(frames_.reshape(4, 6)), pa.list_(pa.float32()))})
    view = column_as_array(listed, "f", (2, 3), np.float32)
    assert np.array_equal(view, frames_)
    assert np.shares_memory(view, np.frombuffer(listed["f"].chunks[0].values.buffers()[1], np.float32))
    binary = pa.table({"f": pa.array([f.tobytes() for f in frames_], pa.binary())})
    assert np.array_equal(column_as_array(binary, "f", (2, 3), np.float32), frames_)
    two_chunks = pa.concat_tables([listed.slice(0, 1), listed.slice(1)])
    assert np.array_equal(column_as_array(two_chunks, "f", (2, 3), np.float32), frames_)
    ragged = pa.table({"f": pa.array([[1.0], [1.0, 2.0]], pa.list_(pa.float32()))})
    with pytest.raises(ValueError, match=r"column 'f' holds 1\.\.2 values per row, shape asks for 1"):
        column_as_array(ragged, "f", (), np.float32)


def test_a_coalesced_or_unioned_dataframe_still_gets_one_rank_per_partition(spark, capsys):
    def rows(table):
        return table.num_rows

    coalesced = frames(spark, partitions=4).coalesce(2)
    assert rows_of(sparkmpi_dl.run(rows, data=coalesced, output=Lines())) == 12
    assert "local-checkpointing its 2 partitions first" in capsys.readouterr().out
    unioned = frames(spark, rows=4, partitions=1).union(frames(spark, rows=4, partitions=1))
    assert sparkmpi_dl.run(rows, data=unioned, output=Lines()) == [4, 4]
    rdd = spark.sparkContext.parallelize(range(8), 4).coalesce(2)
    assert sparkmpi_dl.run(len, data=rdd, output=Lines()) == [4, 4]


def rows_of(counts):
    assert len(counts) == 2
    return sum(counts)
