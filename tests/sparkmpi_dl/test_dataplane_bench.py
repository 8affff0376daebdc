"""`sparkmpi-dl bench dataplane` at a toy size: every method delivers every row to the ranks."""
from sparkmpi_dl.bench.dataplane import measure


def test_the_three_deliveries_agree_and_the_figures_are_reported(spark):
    result = measure(spark, ranks=2, mb=1, repeat=1)  # each method checks the ranks' sum
    assert result["ranks"] == 2 and result["bytes"] == 2**20
    for key in ("dataplane_s", "collect_s", "parquet_s", "dataplane_peak_rss_mb", "arrow_floor_s",
                "launch_s", "source_s", "handoff_write_s", "handoff_read_s", "handoff_mb_s_per_rank"):
        assert result[key] > 0, key
    phases = result["dataplane_phases"]
    assert list(phases) == ["rank_started", "written", "fn_entered", "fn_done", "returned"]
    # the ranks' clocks: the table is opened after it was written, and the call returns last
    assert 0 < phases["written"] <= phases["fn_entered"] <= phases["fn_done"] <= phases["returned"]
