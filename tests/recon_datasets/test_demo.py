"""The demo stage builds, validates and plots a small dataset."""
from recon_datasets import demo


def test_demo_stage(spark, tmp_path, monkeypatch):
    monkeypatch.setattr(demo, "DEMO_SCANS", 3)
    figures = demo.dataset_stage(spark, tmp_path)
    assert figures["rows"] == 3 and figures["partitions"] == 2
    assert 0 < figures["truth_phase_rms_min"] <= figures["truth_phase_rms_max"]
    for png in ("dataset_phase_crops.png", "dataset_error_vs_truth.png"):
        assert (tmp_path / png).stat().st_size > 1000
    stages = demo.demo_stages()
    assert [s for _, s in stages] == [demo.dataset_stage, demo.estimator_stage]
