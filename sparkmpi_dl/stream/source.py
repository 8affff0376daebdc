"""``spark.readStream.format("sparkmpi-redis")``: Redis Streams as a Spark streaming source.

Offsets are ``{stream: last entry id}``; a micro-batch reads, per stream, the entries after
the start offset up to and including the end offset (one Spark partition per stream, in
stream order), so Spark's offset log and checkpoint give exactly-once input. The end
offsets of all streams are read in one MULTI/EXEC transaction: a consistent snapshot, so
a batch holding a frame also holds the start record the publisher added before it.

When Spark commits a batch, the entries it read are trimmed from the broker (``XTRIM
MINID``): the stream length is then exactly the unconsumed backlog, which is what the
publisher bounds. Options:

* ``url`` (required): ``redis://HOST:PORT``
* ``streams``: comma-separated stream keys, or
* ``prefix``: find the keys in ``{prefix}:config`` (written by ``stream publish``)
* ``trim`` (default ``true``): trim committed entries
* ``payload`` (default ``inline``): ``inline`` puts every entry in the batch as a row;
  ``reference`` puts one ``range`` row per stream (see :mod:`sparkmpi_dl.stream.records`),
  and the consumer reads the entries from the broker itself: the frame bytes skip the
  JVM's Arrow -> rows -> Arrow round trip, which costs ~2 ms per 64 KiB frame on a small box

Executors and the driver's Python workers need the ``redis`` package importable.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, Iterator

from pyspark.sql.datasource import DataSource, DataSourceReader, DataSourceStreamReader, InputPartition

from .records import COLUMNS, SCHEMA, config_key, id_pair, range_row, read_range, stream_keys

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession
    from pyspark.sql.types import StructType

NAME = "sparkmpi-redis"
ZERO = "0-0"
PAYLOADS = ("inline", "reference")


def next_id(entry_id: str) -> str:
    ms, seq = id_pair(entry_id)
    return f"{ms}-{seq + 1}"


class StreamRange(InputPartition):
    """Entries of one stream with ``start < id <= end``."""

    def __init__(self, stream: str, start: str, end: str) -> None:
        super().__init__((stream, start, end))
        self.stream, self.start, self.end = stream, start, end


def resolve_streams(url: str, prefix: str) -> list[str]:
    """The stream keys a publisher recorded under ``prefix``; ValueError if none yet."""
    from .broker import connect

    count = connect(url).hget(config_key(prefix), "streams")
    if count is None:
        raise ValueError(f"no streams recorded under prefix {prefix!r} at {url} "
                         f"(nothing published yet?); give option 'streams' instead")
    return stream_keys(prefix, int(count))


class _RedisEntries:
    """What both readers share: the options, the streams' last ids, reading a range."""

    def __init__(self, options: dict[str, str]) -> None:
        url = options.get("url")
        if not url:
            raise ValueError(f"{NAME}: option 'url' (redis://HOST:PORT) is required")
        self.url: str = url
        keys = options.get("streams")
        if keys:
            self.keys = [k.strip() for k in keys.split(",") if k.strip()]
        elif options.get("prefix"):
            self.keys = resolve_streams(self.url, options["prefix"])
        else:
            raise ValueError(f"{NAME}: give option 'streams' (comma-separated keys) or 'prefix'")
        self.trim = str(options.get("trim", "true")).lower() != "false"
        self.payload = str(options.get("payload", "inline")).lower()
        if self.payload not in PAYLOADS:
            raise ValueError(f"{NAME}: option 'payload' must be one of {PAYLOADS}, "
                             f"got {options['payload']!r}")
        self._client: Any = None  # a redis.Redis once used

    def _redis(self) -> Any:
        if self._client is None:
            from .broker import connect

            self._client = connect(self.url)
        return self._client

    def last_ids(self) -> dict[str, str]:
        """Last generated id of every stream, read atomically (trimming never lowers it)."""
        pipe = self._redis().pipeline(transaction=True)
        for key in self.keys:
            pipe.xinfo_stream(key)
        out: dict[str, str] = {}
        for key, info in zip(self.keys, pipe.execute(raise_on_error=False)):
            if isinstance(info, Exception):  # the stream does not exist yet
                out[key] = ZERO
            else:
                last = info["last-generated-id"]
                out[key] = last.decode() if isinstance(last, bytes) else str(last)
        return out

    def read_entries(self, partition: StreamRange) -> Iterator[Any]:
        import pyarrow as pa

        from .broker import connect

        schema = arrow_schema()

        def batch(rows: list[tuple[Any, ...]]) -> Any:
            return pa.RecordBatch.from_arrays(
                [pa.array([row[i] for row in rows], type=schema.field(i).type)
                 for i in range(len(COLUMNS))], schema=schema)

        if id_pair(partition.end) <= id_pair(partition.start):
            return
        if self.payload == "reference":
            yield batch([range_row(partition.stream, partition.start, partition.end, self.url)])
            return
        for rows in read_range(connect(self.url), partition.stream, partition.start, partition.end):
            yield batch(rows)

    def __getstate__(self) -> dict[str, Any]:
        """Shipped to the tasks without the planner's broker connection."""
        return {**self.__dict__, "_client": None}


class RedisStreamReader(_RedisEntries, DataSourceStreamReader):
    """Micro-batches: the entries that came since the last batch, once."""

    def initialOffset(self) -> dict[str, str]:
        return {key: ZERO for key in self.keys}

    def latestOffset(self) -> dict[str, str]:
        return self.last_ids()

    def partitions(self, start: dict[str, str], end: dict[str, str]) -> list[StreamRange]:
        return [StreamRange(key, start.get(key, ZERO), end.get(key, ZERO)) for key in self.keys]

    # Spark hands back the partitions that partitions() made: narrower than InputPartition
    def read(self, partition: StreamRange) -> Iterator[Any]:  # type: ignore[override]
        return self.read_entries(partition)

    def commit(self, end: dict[str, str]) -> None:
        """Spark will never ask for entries up to ``end`` again: drop them from the broker."""
        if not self.trim:
            return
        pipe = self._redis().pipeline(transaction=False)
        for key, last in end.items():
            if last != ZERO:
                pipe.xtrim(key, minid=next_id(last), approximate=False)
        pipe.execute()

    def stop(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None


class RedisBatchReader(_RedisEntries, DataSourceReader):
    """``spark.read``: what the streams hold now (one partition per stream); nothing is
    trimmed. With ``payload=reference`` it is a cheap look at the backlog."""

    def partitions(self) -> list[StreamRange]:
        return [StreamRange(key, ZERO, last) for key, last in self.last_ids().items()]

    def read(self, partition: StreamRange) -> Iterator[Any]:  # type: ignore[override]
        return self.read_entries(partition)


def arrow_schema() -> Any:
    """The Arrow schema Spark expects for :data:`SCHEMA`."""
    import pyarrow as pa

    return pa.schema([("stream", pa.string()), ("entry_id", pa.string()), ("kind", pa.string()),
                      ("scan", pa.string()), ("frame_index", pa.int64()), ("pos_y", pa.float64()),
                      ("pos_x", pa.float64()), ("shape", pa.list_(pa.int32())),
                      ("dtype", pa.string()), ("data", pa.binary()), ("meta", pa.string())])


class RedisStreamSource(DataSource):
    """The data source Spark instantiates for ``format("sparkmpi-redis")``."""

    @classmethod
    def name(cls) -> str:
        return NAME

    def schema(self) -> str:
        return SCHEMA

    def streamReader(self, schema: StructType) -> RedisStreamReader:
        return RedisStreamReader(dict(self.options))

    def reader(self, schema: StructType) -> RedisBatchReader:
        return RedisBatchReader(dict(self.options))


def empty_batch(spark: SparkSession, partitions: int) -> DataFrame:
    """A micro-batch without rows in :data:`SCHEMA`, one partition per rank, made in the JVM
    (a Python-list DataFrame would add a Python job and a shuffle of its own)."""
    return spark.range(0, 0, numPartitions=partitions).selectExpr(
        *[f"cast(null as {kind}) as {name}" for name, kind in
          (column.split(" ", 1) for column in SCHEMA.split(", "))])


def register(spark: SparkSession) -> None:
    """Make ``spark.readStream.format("sparkmpi-redis")`` available in this session."""
    spark.dataSource.register(RedisStreamSource)
