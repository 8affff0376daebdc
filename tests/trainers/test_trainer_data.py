"""Trainer inputs: Parquet row-group sharding, decoding errors, option validation (no TF)."""
from __future__ import annotations

import argparse

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from trainers import data
from trainers.config import TrainConfig, add_train_arguments, config_from_args


def _dataset(tmp_path, rows=50, rows_per_group=7, rows_per_file=20):
    images = np.arange(rows * 4 * 4, dtype=np.float32).reshape(rows, 4, 4, 1)
    labels = np.arange(rows) % 3
    data.write_parquet_dataset(tmp_path, images, labels, rows_per_group, rows_per_file)
    return images, labels


@pytest.mark.parametrize("size", [1, 2, 3, 5])
def test_every_row_read_exactly_once_across_ranks(tmp_path, size):
    images, _ = _dataset(tmp_path)
    shards = data.assign_row_groups(data.list_row_groups(tmp_path), size)
    seen = [data.read_shard(s, "image", "label", (4, 4, 1), 3) for s in shards]
    ids = np.concatenate([imgs[:, 0, 0, 0] for imgs, _ in seen]) / 16  # first pixel = 16*row
    assert sorted(ids.astype(int).tolist()) == list(range(len(images)))
    rows = [len(lbl) for _, lbl in seen]
    assert max(rows) - min(rows) <= 7  # balanced to within one row group
    for imgs, lbl in seen:  # labels stay with their images
        np.testing.assert_array_equal(lbl, (imgs[:, 0, 0, 0] / 16).astype(int) % 3)


def test_assignment_is_the_same_on_every_rank(tmp_path):
    _dataset(tmp_path)
    groups = data.list_row_groups(tmp_path)
    assert data.assign_row_groups(groups, 3) == data.assign_row_groups(list(groups), 3)


def test_empty_shard_is_a_clear_error(tmp_path):
    _dataset(tmp_path, rows=10, rows_per_group=10, rows_per_file=10)
    with pytest.raises(ValueError, match=r"rank\(s\) \[1\] of 2 would get no data.*1 non-empty row group"):
        data.assign_row_groups(data.list_row_groups(tmp_path), 2)


def test_missing_directory_and_no_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        data.list_row_groups(tmp_path / "nope")
    (tmp_path / "_SUCCESS").write_text("")
    with pytest.raises(ValueError, match="no \\*.parquet files"):
        data.list_row_groups(tmp_path)


def test_bad_files_columns_shapes_and_labels_are_named(tmp_path):
    (tmp_path / "broken.parquet").write_bytes(b"not parquet")
    with pytest.raises(ValueError, match="broken.parquet is not a readable Parquet file"):
        data.list_row_groups(tmp_path)
    (tmp_path / "broken.parquet").unlink()
    _dataset(tmp_path, rows=6, rows_per_group=6, rows_per_file=6)
    shard = data.list_row_groups(tmp_path)
    with pytest.raises(ValueError, match=r"column\(s\) \['pixels'\] not found"):
        data.read_shard(shard, "pixels", "label", (4, 4, 1), 3)
    with pytest.raises(ValueError, match="row 0 has 16 image values, expected 64"):
        data.read_shard(shard, "image", "label", (8, 8, 1), 3)
    with pytest.raises(ValueError, match=r"label 2 in row 2 is outside \[0, 2\)"):
        data.read_shard(shard, "image", "label", (4, 4, 1), 2)
    pq.write_table(pa.table({"image": ["x"], "label": [0]}), tmp_path / "part-00000.parquet")
    with pytest.raises(ValueError, match="image column has type string"):
        data.read_shard(data.list_row_groups(tmp_path), "image", "label", (4, 4, 1), 3)


def test_binary_uint8_images_are_scaled(tmp_path):
    raw = np.arange(32, dtype=np.uint8).reshape(2, 16)
    pq.write_table(pa.table({"image": [r.tobytes() for r in raw], "label": [0, 1]}),
                   tmp_path / "a.parquet")
    images, labels = data.read_shard(data.list_row_groups(tmp_path), "image", "label", (4, 4, 1), 2)
    np.testing.assert_allclose(images.reshape(2, 16), raw / 255.0, rtol=1e-6)
    assert labels.tolist() == [0, 1]


def test_synthetic_set_is_deterministic_per_rank():
    a = data.synthetic_images(64, (16, 16, 1), 4, seed=7, rank=0)
    b = data.synthetic_images(64, (16, 16, 1), 4, seed=7, rank=0)
    c = data.synthetic_images(64, (16, 16, 1), 4, seed=7, rank=1)
    np.testing.assert_array_equal(a[0], b[0])
    assert not np.array_equal(a[0], c[0])


def _parse(*argv):
    parser = argparse.ArgumentParser()
    add_train_arguments(parser)
    return config_from_args(parser.parse_args(list(argv)))


def test_options_are_validated_with_their_names():
    assert _parse("--synthetic", "--image-shape", "8,8,3").image_shape == (8, 8, 3)
    with pytest.raises(ValueError, match="exactly one of --data DIR or --synthetic"):
        _parse()
    with pytest.raises(ValueError, match="exactly one of --data DIR or --synthetic"):
        _parse("--synthetic", "--data", "x")
    with pytest.raises(ValueError, match="--batch-size must be >= 1, got 0"):
        _parse("--synthetic", "--batch-size", "0")
    with pytest.raises(ValueError, match="--lr must be > 0"):
        _parse("--synthetic", "--lr", "-1")
    with pytest.raises(SystemExit):
        _parse("--synthetic", "--image-shape", "8,8")
    with pytest.raises(ValueError, match="--steps-per-epoch must be >= 1"):
        TrainConfig(synthetic=True, steps_per_epoch=0).check()
