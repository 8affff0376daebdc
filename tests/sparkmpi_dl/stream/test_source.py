"""spark.readStream.format("sparkmpi-redis"): one partition per stream, exactly-once across
restarts of the query (Spark's checkpoint holds the entry ids), committed entries trimmed."""
from __future__ import annotations

import io

from sparkmpi_dl.stream.publish import PublishOptions, publish, simulated_scan
from sparkmpi_dl.stream.records import COLUMNS, stream_keys
from sparkmpi_dl.stream.source import register

SIM = {"frame_size": 32, "probe_diameter": 10.0, "photons": 1e6}


def _drain(spark, url: str, checkpoint: str) -> list[tuple[int, list]]:
    """Run the query until the streams are drained; [(batch id, rows)]."""
    batches = []

    def keep(df, batch_id):
        assert df.columns == list(COLUMNS) and df.rdd.getNumPartitions() == 2
        batches.append((batch_id, df.select("kind", "scan", "frame_index", "stream").collect()))

    query = (spark.readStream.format("sparkmpi-redis").option("url", url)
             .option("prefix", "sparkmpi").load()
             .writeStream.foreachBatch(keep).option("checkpointLocation", checkpoint)
             .trigger(availableNow=True).start())
    query.awaitTermination(240)
    assert query.exception() is None
    return batches


def test_source_reads_each_entry_once_across_restarts(broker, spark, tmp_path):
    register(spark)
    client = broker.client()
    publish(client, simulated_scan({**SIM, "n_frames": 40}, "scan-1"),
            PublishOptions(streams=2), out=io.StringIO())
    first = _drain(spark, broker.url, str(tmp_path / "cp"))
    rows = [r for _, batch in first for r in batch]
    frames = sorted(r.frame_index for r in rows if r.kind == "frame")
    assert frames == list(range(40)) and [r.kind for r in rows].count("start") == 1
    assert all(r.stream == stream_keys("sparkmpi", 2)[r.frame_index % 2]
               for r in rows if r.kind == "frame")

    # a new query on the same checkpoint reads only what came after
    publish(client, simulated_scan({**SIM, "n_frames": 10}, "scan-2"),
            PublishOptions(streams=2), out=io.StringIO())
    second = _drain(spark, broker.url, str(tmp_path / "cp"))
    rows = [r for _, batch in second for r in batch]
    assert {r.scan for r in rows} == {"scan-2"} and len(rows) == 12
    assert second[0][0] == first[-1][0] + 1  # batch ids continue from the checkpoint
    # the first query's batches were committed: their entries are gone from the broker
    left = [f[b"scan"] for key in stream_keys("sparkmpi", 2) for _, f in client.xrange(key)]
    assert b"scan-1" not in left


def test_reference_payload_carries_ranges_that_read_back_as_the_inline_rows(broker, spark, tmp_path):
    """payload=reference: one ``range`` row per stream and batch, no frame bytes through the
    JVM; the rank-side reader turns it into exactly the rows payload=inline gives."""
    import pyarrow as pa
    import pytest

    from sparkmpi_dl.stream.online import columns
    from sparkmpi_dl.stream.source import arrow_schema

    register(spark)
    publish(broker.client(), simulated_scan({**SIM, "n_frames": 30}, "scan-r"),
            PublishOptions(streams=2), out=io.StringIO())
    tables: dict[str, list] = {"inline": [], "reference": []}
    for payload, found in tables.items():
        def keep(df, batch_id, found=found):
            found.append(pa.Table.from_pylist([row.asDict() for row in df.collect()],
                                              schema=arrow_schema()))

        query = (spark.readStream.format("sparkmpi-redis").option("url", broker.url)
                 .option("prefix", "sparkmpi").option("trim", "false")
                 .option("payload", payload).load()
                 .writeStream.foreachBatch(keep)
                 .option("checkpointLocation", str(tmp_path / payload))
                 .trigger(availableNow=True).start())
        query.awaitTermination(240)
        assert query.exception() is None
    references = pa.concat_tables(tables["reference"])
    assert set(references.column("kind").to_pylist()) == {"range"}
    assert references.num_rows == 2 and references.column("data").null_count == 2
    inline = columns(pa.concat_tables(tables["inline"]))
    expanded = columns(references)
    assert expanded == inline and inline["frame_index"].count(None) == 2  # start and end
    assert sorted(i for i in inline["frame_index"] if i is not None) == list(range(30))

    # a batch read is a look at the backlog: the same references, nothing trimmed
    backlog = (spark.read.format("sparkmpi-redis").option("url", broker.url)
               .option("prefix", "sparkmpi").option("payload", "reference").load().collect())
    assert sorted((r.stream, r.entry_id, r.kind) for r in backlog) == sorted(
        zip(references.column("stream").to_pylist(), references.column("entry_id").to_pylist(),
            references.column("kind").to_pylist()))

    with pytest.raises(Exception, match="payload"):
        (spark.readStream.format("sparkmpi-redis").option("url", broker.url)
         .option("prefix", "sparkmpi").option("payload", "bytes").load()
         .writeStream.foreachBatch(lambda df, i: None)
         .option("checkpointLocation", str(tmp_path / "bad")).start().awaitTermination(60))
