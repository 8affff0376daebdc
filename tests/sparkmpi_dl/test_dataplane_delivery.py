"""How the data plane delivers a partition: the JVM's Arrow batches are capped (issue 11's
performance work)."""
import sparkmpi_dl
from sparkmpi_dl.dataplane.driver import ARROW_BATCH_BYTES, ARROW_BATCH_CONF

from .test_mpirun import Lines


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
