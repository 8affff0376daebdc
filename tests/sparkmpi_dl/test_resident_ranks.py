"""Resident ranks on local[4]: one MPI job fed by many Spark jobs, keeping its memory."""
import time

import pytest

from sparkmpi_dl.dataplane.persistent import ResidentRanks, ResidentRanksFailed
from sparkmpi_dl.launch.spark import NotEnoughSlots

from .test_mpirun import Lines


def _accumulate(feed, scale):
    """Each rank keeps a running sum of the ids it was given, across feeds."""
    import os

    from mpi4py import MPI

    world = MPI.COMM_WORLD
    mine, pid = [], os.getpid()
    for delivery in feed:
        if delivery.message == "boom" and world.rank == 1:
            raise RuntimeError("rank 1 was told to fail")
        ids = [] if delivery.table is None else (
            delivery.table["id"].to_pylist() if hasattr(delivery.table, "column_names")
            else list(delivery.table))
        mine.extend(ids)
        delivery.reply({"rank": world.rank, "ids": ids, "pid": pid, "message": delivery.message,
                        "total": world.allreduce(sum(ids) * scale)})
    return {"rank": world.rank, "kept": sorted(mine)}


def test_partitions_go_to_rank_p_mod_n_and_state_survives_between_feeds(spark):
    with ResidentRanks(_accumulate, 2, args=(10,), spark=spark) as ranks:
        first = ranks.feed(spark.range(0, 8, numPartitions=4), "a")
        second = ranks.feed(spark.range(100, 103, numPartitions=1), "b")
        message_only = ranks.feed(None, "c")
        records = ranks.feed(spark.sparkContext.parallelize([7, 8, 9], 3), "d")
    # partitions 0 and 2 to rank 0, 1 and 3 to rank 1, concatenated in partition order
    assert [r["ids"] for r in first] == [[0, 1, 4, 5], [2, 3, 6, 7]]
    assert all(r["total"] == 280 for r in first)
    assert [r["ids"] for r in second] == [[100, 101, 102], []]   # an empty share, not None
    assert [r["message"] for r in message_only] == ["c", "c"]
    assert [r["ids"] for r in message_only] == [[], []]
    assert [r["ids"] for r in records] == [[7, 9], [8]]
    # the same two processes served every feed: nothing was relaunched
    pids = {r["rank"]: r["pid"] for feed in (first, second, message_only, records) for r in feed}
    assert len(set(pids.values())) == 2
    assert all(r["pid"] == pids[r["rank"]] for r in first + second + records)
    assert ranks.results == [{"rank": 0, "kept": [0, 1, 4, 5, 7, 9, 100, 101, 102]},
                             {"rank": 1, "kept": [2, 3, 6, 7, 8]}]


def test_a_failing_rank_fails_the_next_feed_in_seconds_naming_it(spark):
    ranks = ResidentRanks(_accumulate, 2, args=(1,), spark=spark, kwargs={})
    try:
        assert len(ranks.feed(spark.range(4, numPartitions=2), "fine")) == 2
        t0 = time.monotonic()
        with pytest.raises(ResidentRanksFailed, match="rank 1") as info:
            ranks.feed(None, "boom")
        assert time.monotonic() - t0 < 30
        assert "resident ranks failed" in str(info.value)
    finally:
        ranks.__exit__(RuntimeError, None, None)


def test_too_few_slots_for_ranks_and_feeds_is_refused_before_anything_starts(spark):
    with pytest.raises(NotEnoughSlots, match=r"4 resident ranks need 5 task slots"):
        ResidentRanks(_accumulate, 4, args=(1,), spark=spark, placement="tasks")


def test_on_a_small_local_master_the_ranks_run_as_local_processes(spark, capsys):
    """local[4] cannot hold 4 ranks and a feed job: 'auto' places the ranks beside Spark."""
    with ResidentRanks(_accumulate, 4, args=(1,), spark=spark) as ranks:
        assert ranks.placement == "local"
        replies = ranks.feed(spark.range(0, 8, numPartitions=4), "x")
    assert "the ranks run as local MPI processes beside Spark" in capsys.readouterr().out
    assert [r["ids"] for r in replies] == [[0, 1], [2, 3], [4, 5], [6, 7]]
    assert all(r["total"] == 28 for r in replies)


def test_output_of_resident_ranks_is_prefixed(spark):
    def shout(feed):
        from mpi4py import MPI
        for delivery in feed:
            print(f"got {delivery.message}", flush=True)
            delivery.reply(MPI.COMM_WORLD.rank)
        return None

    lines = Lines()
    ranks = ResidentRanks(shout, 1, spark=spark, output=lines)
    assert ranks.feed(None, "hello") == [0]
    assert ranks.close() == [None]
    assert (0, "stdout", "got hello") in lines.lines


def test_closing_before_any_feed_ends_the_ranks_at_once(spark):
    ranks = ResidentRanks(_accumulate, 2, args=(1,), spark=spark)
    t0 = time.monotonic()
    results = ranks.close(timeout=120)
    assert time.monotonic() - t0 < 60
    # a rank that had connected ends its (empty) feed; one still starting finds the driver
    # closed and returns None: either way no rank waits for orders that never come
    assert all(r is None or r == {"rank": i, "kept": []} for i, r in enumerate(results))
