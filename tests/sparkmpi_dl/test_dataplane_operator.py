"""map_in_mpi: MPI ranks as a DataFrame operator, inside a Spark pipeline and a stream."""
import os
import subprocess
import sys
import textwrap

import pytest

import sparkmpi_dl

from .test_mpirun import Lines

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def centre(table):
    """Each row's value minus the global mean (an MPI_Allreduce over all ranks)."""
    import pyarrow as pa
    import pyarrow.compute as pc
    from mpi4py import MPI
    comm = MPI.COMM_WORLD
    total = comm.allreduce(pc.sum(table["v"]).as_py() or 0.0)
    count = comm.allreduce(table.num_rows)
    return pa.table({"id": table["id"], "centred": pc.subtract(table["v"], total / count),
                     "rank": pa.array([comm.rank] * table.num_rows, pa.int32())})


def test_filter_then_mpi_then_parquet(spark, tmp_path):
    df = spark.range(0, 40, numPartitions=2).selectExpr("id", "cast(id as double) as v")
    out = sparkmpi_dl.map_in_mpi(df.filter("id % 4 = 0"), centre, "id long, centred double, rank int",
                                 output=Lines())
    out.write.parquet(str(tmp_path / "centred"))
    back = spark.read.parquet(str(tmp_path / "centred")).orderBy("id").collect()
    assert [r.id for r in back] == list(range(0, 40, 4))
    assert [r.centred for r in back] == [i - 18.0 for i in range(0, 40, 4)]
    assert {r.rank for r in back} == {0, 1}


def test_a_result_that_does_not_match_the_schema_names_rank_and_column(spark):
    def wrong_on_rank_1(table):
        import pyarrow as pa
        from mpi4py import MPI
        kind = pa.int64() if MPI.COMM_WORLD.rank == 1 else pa.int32()
        return pa.table({"id": pa.array([1], kind)})

    df = spark.range(0, 4, numPartitions=2)
    with pytest.raises(sparkmpi_dl.JobFailed) as info:
        sparkmpi_dl.map_in_mpi(df, wrong_on_rank_1, "id int", output=Lines())
    assert info.value.failure.rank == 1
    assert "map_in_mpi: rank 1's column 'id' is int64, schema says int32" in str(info.value)


STREAM_JOB = textwrap.dedent("""
    import json, sys
    from pyspark.sql import SparkSession
    import sparkmpi_dl

    incoming, out = sys.argv[1], sys.argv[2]
    spark = (SparkSession.builder.master("local[2]").config("spark.ui.enabled", "false")
             .config("spark.sql.shuffle.partitions", "2").getOrCreate())
    spark.sparkContext.setLogLevel("OFF")

    def double_on_ranks(table):
        import pyarrow.compute as pc
        from mpi4py import MPI
        return table.set_column(1, "v", pc.multiply(table["v"], MPI.COMM_WORLD.size))

    def each_batch(batch, batch_id):
        rows = batch.repartition(2)
        sparkmpi_dl.map_in_mpi(rows, double_on_ranks, "id long, v double",
                               output=lambda *a: None).write.mode("append").parquet(out)

    stream = spark.readStream.schema("id long, v double").json(incoming)
    stream.writeStream.foreachBatch(each_batch).trigger(availableNow=True).start().awaitTermination()
    print("RESULT " + json.dumps(sorted(tuple(r) for r in spark.read.parquet(out).collect())))
""")


def test_map_in_mpi_on_micro_batches_in_foreach_batch(tmp_path):
    incoming = tmp_path / "incoming"
    incoming.mkdir()
    (incoming / "a.json").write_text("".join(f'{{"id": {i}, "v": {i}.5}}\n' for i in range(5)))
    script = tmp_path / "stream_job.py"
    script.write_text(STREAM_JOB)
    env = {**os.environ, "PYTHONPATH": REPO, "PYSPARK_PYTHON": sys.executable}
    proc = subprocess.run([sys.executable, str(script), str(incoming), str(tmp_path / "out")],
                          capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    line = next(l for l in proc.stdout.splitlines() if l.startswith("RESULT "))
    assert line == "RESULT " + str([[i, (i + 0.5) * 2] for i in range(5)]).replace("'", '"')


RETRY_JOB = textwrap.dedent("""
    import json, os, sys
    from pyspark.sql import SparkSession
    import sparkmpi_dl

    marker = sys.argv[1]
    spark = (SparkSession.builder.master("local[2,2]").config("spark.ui.enabled", "false")
             .getOrCreate())
    spark.sparkContext.setLogLevel("OFF")

    def flaky(table):
        import os
        from mpi4py import MPI
        if MPI.COMM_WORLD.rank == 0 and not os.path.exists(marker):
            open(marker, "w").close()
            raise RuntimeError("transient detector glitch")
        return MPI.COMM_WORLD.allreduce(table.num_rows), os.environ["SPARKMPI_EPOCH"]

    df = spark.range(0, 10, numPartitions=2)
    print("RESULT " + json.dumps(sparkmpi_dl.run(flaky, data=df, stage_retries=1,
                                                 output=lambda *a: None)))
""")


def test_a_retried_stage_is_a_fresh_epoch_over_the_same_partitions(tmp_path):
    script = tmp_path / "retry_job.py"
    script.write_text(RETRY_JOB)
    env = {**os.environ, "PYTHONPATH": REPO, "PYSPARK_PYTHON": sys.executable}
    proc = subprocess.run([sys.executable, str(script), str(tmp_path / "failed-once")],
                          capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (tmp_path / "failed-once").exists()
    line = next(l for l in proc.stdout.splitlines() if l.startswith("RESULT "))
    (rows0, epoch0), (rows1, epoch1) = __import__("json").loads(line[len("RESULT "):])
    assert rows0 == rows1 == 10
    assert epoch0 == epoch1 and int(epoch0) > 0
