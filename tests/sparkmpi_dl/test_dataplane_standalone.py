"""The data plane on the standalone cluster the core tests start (master + 2 workers)."""
import json
import subprocess
import sys
import textwrap

from tests.sparkmpi_dl.test_spark_standalone import standalone_cluster  # noqa: F401 (the fixture)

JOB = textwrap.dedent("""
    import json, sys
    import sparkmpi_dl
    from pyspark.sql import SparkSession

    spark = (SparkSession.builder.master(sys.argv[1]).config("spark.driver.host", "127.0.0.1")
             .config("spark.ui.enabled", "false").getOrCreate())
    spark.sparkContext.setLogLevel("OFF")

    def mine(table):
        import os
        from mpi4py import MPI
        return (table["id"].to_pylist(), MPI.COMM_WORLD.allreduce(sum(table["id"].to_pylist())),
                os.environ["SPARKMPI_DATA"].startswith("/dev/fd/"))

    df = spark.range(0, 8, numPartitions=2).selectExpr("id", "array(id, id) as pair")
    centred = sparkmpi_dl.map_in_mpi(df, lambda t: t.select(["id"]), "id long", bind_host="127.0.0.1",
                                     output=lambda *a: None)
    print("RESULT " + json.dumps([sparkmpi_dl.run(mine, data=df, bind_host="127.0.0.1",
                                                  output=lambda *a: None),
                                  sorted(r.id for r in centred.collect())]))
""")


def _run_job(text, cluster, script):
    """Run a driver script against the cluster; what it printed after ``RESULT ``."""
    url, env = cluster
    script.write_text(text)
    proc = subprocess.run([sys.executable, str(script), url], capture_output=True, text=True,
                          timeout=300, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    line = next(l for l in proc.stdout.splitlines() if l.startswith("RESULT "))
    return json.loads(line[len("RESULT "):])


def test_ranks_over_partitions_on_two_standalone_workers(standalone_cluster, tmp_path):  # noqa: F811
    ranks, ids = _run_job(JOB, standalone_cluster, tmp_path / "job.py")
    assert ranks == [[[0, 1, 2, 3], 28, True], [[4, 5, 6, 7], 28, True]]
    assert ids == list(range(8))


RESIDENT_JOB = textwrap.dedent("""
    import json, sys
    import sparkmpi_dl
    from pyspark.sql import SparkSession

    spark = (SparkSession.builder.master(sys.argv[1]).config("spark.driver.host", "127.0.0.1")
             .config("spark.ui.enabled", "false").getOrCreate())
    spark.sparkContext.setLogLevel("OFF")

    def serve(feed):
        import socket
        seen = []
        for delivery in feed:
            seen += delivery.table["id"].to_pylist()
            delivery.reply(sorted(seen))
        return socket.gethostname(), len(seen)

    try:
        sparkmpi_dl.ResidentRanks(serve, 2, spark=spark)
        refused = None
    except sparkmpi_dl.NotEnoughSlots as err:   # 2 slots: no room for 2 ranks and a feed job
        refused = str(err)
    ranks = sparkmpi_dl.ResidentRanks(serve, 1, spark=spark, bind_host="127.0.0.1",
                                      output=lambda *a: None)
    first = ranks.feed(spark.range(0, 4, numPartitions=2))
    second = ranks.feed(spark.range(10, 12, numPartitions=2))
    print("RESULT " + json.dumps([refused, first, second, ranks.placement, ranks.close()]))
""")


def test_resident_ranks_on_the_standalone_cluster(standalone_cluster, tmp_path):  # noqa: F811
    """One resident rank in a worker's slot, fed twice by tasks on the workers; two ranks
    on two slots are refused (no local fallback on a cluster)."""
    refused, first, second, placement, results = _run_job(RESIDENT_JOB, standalone_cluster,
                                                          tmp_path / "resident.py")
    assert "2 resident ranks need 3 task slots" in refused
    assert first == [[0, 1, 2, 3]] and second == [[0, 1, 2, 3, 10, 11]]
    assert placement == "tasks" and results[0][1] == 6
