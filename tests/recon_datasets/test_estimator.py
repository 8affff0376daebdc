"""Quality estimator: features from measured columns, a short training whose loss falls,
exact resume from its checkpoint, and the trained model used without ground truth."""
import json

import numpy as np
import pytest

from recon_datasets.estimator import EstimatorConfig, QualityEstimator, features, fit_baseline, train_estimator
from recon_datasets.reader import read, to_numpy

from .conftest import SMALL


def _columns(table):
    return {c: to_numpy(table, c) for c in ("phase", "amplitude", "fourier_error",
                                            "history_length", "model_error", "truth_phase_rms")}


def test_features_use_measured_columns(reference):
    columns = _columns(read(reference))
    inputs, target = features(columns)
    n = SMALL.scans
    assert inputs["images"].shape == (n, SMALL.crop, SMALL.crop, 2)
    assert inputs["curve"].shape == (n, SMALL.max_iterations, 2)
    assert np.array_equal(inputs["curve"][:, :, 1].sum(axis=1), columns["history_length"])
    assert np.allclose(target, np.log10(columns["truth_phase_rms"]))
    no_truth, none = features({k: v for k, v in columns.items() if k != "truth_phase_rms"})
    assert none is None and np.array_equal(no_truth["images"], inputs["images"])


def test_baseline_line_fit():
    x = np.array([-3.0, -2.0, -1.0])
    assert fit_baseline(x, 0.5 + 2 * x) == pytest.approx((0.5, 2.0))


def test_bad_config_is_named():
    with pytest.raises(ValueError, match="val_every"):
        EstimatorConfig(data="x", val_every=1).check()


def test_training_loss_falls_and_resumes(reference, tmp_path):
    config = EstimatorConfig(data=str(reference), out_dir=str(tmp_path / "est"), epochs=8,
                             batch_size=6, lr=3e-3)
    result = train_estimator(config)
    losses = result["epoch_losses"]
    assert len(losses) == 8 and losses[-1] < 0.5 * losses[0]
    assert result["val_scans"] == 2  # scans 0 and 5
    assert np.isfinite(result["val_mae"]) and np.isfinite(result["baseline_mae"])
    for name in ("model.keras", "result.json", "estimator_validation.png"):
        assert (tmp_path / "est" / name).exists()
    assert list((tmp_path / "est" / "tensorboard").rglob("events.out.tfevents.*"))
    recorded = json.loads((tmp_path / "est" / "result.json").read_text())["config"]
    with pytest.raises(ValueError, match=r"est already holds a run \(quality-estimator\); a new "
                                          r"run would mix with it: pass --resume"):
        train_estimator(EstimatorConfig(**recorded))  # issue 9: never mixed into an old run
    with pytest.raises(ValueError, match=r"other arguments \(differs in \['lr'\]\); use the "
                                          r"same arguments to resume it, or another folder"):
        train_estimator(EstimatorConfig(**{**recorded, "resume": True, "lr": 1e-2}))
    more = train_estimator(EstimatorConfig(**{**recorded, "epochs": 9, "resume": True}))
    assert more["first_epoch"] == 8 and len(more["epoch_losses"]) == 1

    estimator = QualityEstimator(tmp_path / "est" / "model.keras")
    table = read(reference)
    predicted = estimator.predict_phase_rms(_columns(table))
    assert predicted.shape == (SMALL.scans,) and (predicted > 0).all()

    from recon_env.engine import EngineConfig, Reconstructor
    from recon_env.simulate import simulate

    rec = Reconstructor(simulate(n_frames=16, frame_size=32, probe_diameter=10, photons=1e6, seed=1),
                        EngineConfig(seed=0))
    history = rec.step(10)["fourier_error"]
    assert 0 < estimator.from_reconstructor(rec, history, SMALL.max_iterations) < 10


def test_shards_cover_rows_once_and_empty_shard_is_named(reference):
    from recon_datasets.estimator import plan_shards

    shards = plan_shards(reference, 2)
    rows = sorted((g.path, g.index) for shard in shards for g in shard)
    assert len(rows) == len(set(rows)) == 5 and sum(g.num_rows for s in shards for g in s) == 8
    with pytest.raises(ValueError, match=r"ds: rank\(s\) \[5\] of 6 would get no data"):
        plan_shards(reference, 6)


def test_cli_train_estimator(reference, tmp_path, capsys):
    from .test_build import _cli

    rc = _cli(["dataset", "train-estimator", "--data", str(reference), "--out-dir",
               str(tmp_path / "cli"), "--epochs", "1", "--batch-size", "4"])
    out = capsys.readouterr().out
    assert rc == 0 and json.loads(out.strip().splitlines()[-1])["val_scans"] == 2
    assert _cli(["dataset", "train-estimator", "--data", str(tmp_path / "none")]) == 2
    assert "does not exist" in capsys.readouterr().err
