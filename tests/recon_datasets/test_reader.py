"""Bad datasets: each fails validate()/read() with an error naming the file or partition."""
import json
import shutil

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from recon_datasets.reader import read, to_numpy, validate
from recon_datasets.schema import DatasetError


@pytest.fixture
def copy(reference, tmp_path):
    out = tmp_path / "ds"
    shutil.copytree(reference, out)
    return out


def _rewrite(path, change):
    table = change(pq.read_table(path))
    pq.write_table(table, path)


def test_reference_validates(reference):
    assert validate(reference)["rows"] == 8


def test_missing_directory_and_schema_file(tmp_path, copy):
    with pytest.raises(DatasetError, match="does not exist"):
        validate(tmp_path / "nowhere")
    (copy / "_schema.json").unlink()
    with pytest.raises(DatasetError, match=r"_schema.json is missing"):
        read(copy)


def test_missing_partition_file(copy):
    (copy / "part-00001.parquet").unlink()
    with pytest.raises(DatasetError, match=r"missing partition file .*part-00001.parquet "
                                           r"\(partition 1 of 3\)"):
        read(copy)


def test_corrupt_partition_file(copy):
    path = copy / "part-00002.parquet"
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])  # truncated
    with pytest.raises(DatasetError, match=r"corrupt Parquet file .*part-00002.parquet \(partition 2"):
        validate(copy)


def test_schema_mismatch_type(copy):
    _rewrite(copy / "part-00000.parquet",
             lambda t: t.set_column(t.schema.get_field_index("model_error"), "model_error",
                                    t.column("model_error").cast(pa.float32())))
    with pytest.raises(DatasetError, match=r"schema mismatch in .*part-00000.parquet.*"
                                           r"'model_error' has type float, expected double"):
        validate(copy)


def test_schema_mismatch_missing_column(copy):
    _rewrite(copy / "part-00001.parquet", lambda t: t.drop(["truth_phase_rms"]))
    with pytest.raises(DatasetError, match=r"part-00001.parquet.*missing column\(s\) \['truth_phase_rms'\]"):
        validate(copy)


def test_duplicated_rows(copy):
    _rewrite(copy / "part-00001.parquet", lambda t: pa.concat_tables([t.slice(0, 1), t.slice(0, 2)]))
    with pytest.raises(DatasetError, match=r"part-00001.parquet.*duplicated scan_index \[2\]"):
        validate(copy)


def test_wrong_row_count(copy):
    _rewrite(copy / "part-00002.parquet", lambda t: t.slice(0, 1))
    with pytest.raises(DatasetError, match=r"part-00002.parquet \(partition 2 of 3\) has 1 rows, expected 3"):
        validate(copy)


def test_stray_parquet_file_is_reported(copy):
    shutil.copy(copy / "part-00000.parquet", copy / "part-00007.parquet")
    with pytest.raises(DatasetError, match=r"unexpected Parquet file\(s\) \['part-00007.parquet'\]"):
        validate(copy)


def test_unfinished_temporary_partition_is_not_complete(copy):
    """A build killed mid-commit: status building, one partition only as a temporary file."""
    final = copy / "part-00002.parquet"
    (copy / "_tmp").mkdir()
    final.rename(copy / "_tmp" / "part-00002.abc.parquet.tmp")
    schema = json.loads((copy / "_schema.json").read_text())
    (copy / "_schema.json").write_text(json.dumps({**schema, "status": "building", "rows": None}))
    with pytest.raises(DatasetError, match=r"not finished.*2 of 3 partitions complete.*"
                                           r"part-00002.abc.parquet.tmp"):
        validate(copy)


def test_trainer_row_groups_skip_schema_and_temporary_files(copy):
    """The Horovod trainer's sharding sees exactly the committed rows."""
    from trainers.data import list_row_groups

    (copy / "_tmp").mkdir()
    shutil.copy(copy / "part-00000.parquet", copy / "_tmp" / "part-00000.x.parquet.tmp")
    groups = list_row_groups(copy)
    assert sum(g.num_rows for g in groups) == 8 and len(groups) == 5  # 2 + 3 + 3 rows, 2 per group


def test_image_trainer_reads_a_dataset_as_is(reference):
    """phase crops + quality_class work as the image classifier's image/label columns."""
    from trainers.data import assign_row_groups, list_row_groups, read_shard

    shards = assign_row_groups(list_row_groups(reference), 2)
    parts = [read_shard(s, "phase", "quality_class", (24, 24, 1), 4) for s in shards]
    images = np.concatenate([p[0] for p in parts])
    labels = np.concatenate([p[1] for p in parts])
    table = read(reference)
    assert images.shape == (8, 24, 24, 1) and sorted(labels) == sorted(to_numpy(table, "quality_class"))
    assert np.isclose(np.sort(images.sum(axis=(1, 2, 3))), np.sort(to_numpy(table, "phase").sum(axis=(1, 2)))).all()


def _flip_in_column_pages(path, column: str, count: int = 32) -> None:
    """Flip ``count`` bytes in the middle of one column chunk's pages (first row group)."""
    meta = pq.ParquetFile(path).metadata.row_group(0)
    chunk = next(meta.column(i) for i in range(meta.num_columns)
                 if meta.column(i).path_in_schema.split(".")[0] == column)
    start = chunk.dictionary_page_offset or chunk.data_page_offset
    middle = start + chunk.total_compressed_size // 2
    data = bytearray(path.read_bytes())
    for i in range(middle, middle + count):
        data[i] ^= 0xFF
    path.write_bytes(bytes(data))


def test_flipped_bytes_in_the_phase_column_are_found(copy, capsys):
    """Issue 9 item 4: 32 flipped bytes inside the phase column's pages passed validate and
    read() returned changed values. Now validate names the file and read() raises."""
    from .test_build import _cli

    path = copy / "part-00001.parquet"
    _flip_in_column_pages(path, "phase")
    with pytest.raises(DatasetError, match=r"corrupt data in .*part-00001.parquet \(partition 1"):
        validate(copy)
    with pytest.raises(DatasetError, match=r"part-00001.parquet"):
        read(copy, columns=["phase"])
    assert _cli(["dataset", "validate", str(copy)]) == 2
    err = capsys.readouterr().err
    assert "part-00001.parquet" in err and len(err.strip().splitlines()) == 1


def test_changed_values_with_sound_pages_fail_the_content_hash(copy):
    """A file rewritten with other values (valid Parquet, the old metadata kept)."""
    def change(table):
        phase = table.column("phase").combine_chunks()
        flat = phase.flatten().to_numpy().copy()
        flat[7] += 1e-3
        return table.set_column(table.schema.get_field_index("phase"), table.schema.field("phase"),
                                pa.FixedSizeListArray.from_arrays(pa.array(flat), phase.type.list_size))
    _rewrite(copy / "part-00002.parquet", change)
    with pytest.raises(DatasetError, match=r"part-00002.parquet.*do not match the content hash"):
        validate(copy)


def test_rows_not_drawn_from_the_recorded_seed_are_found(copy):
    """Rows must be reproducible from the recorded seed: a row from another seed's draw is
    refused even with a matching content hash."""
    from recon_datasets.store import HASH_KEY, content_hash

    def other_photons(table):
        photons = table.column("sim_photons").to_numpy().copy()
        photons[0] *= 2
        table = table.set_column(table.schema.get_field_index("sim_photons"), "sim_photons",
                                 pa.array(photons))
        return table.replace_schema_metadata({HASH_KEY: content_hash(table).encode()})
    _rewrite(copy / "part-00000.parquet", other_photons)
    with pytest.raises(DatasetError, match=r"part-00000.parquet.*scan 0 has parameters "
                                           r"\['sim_photons'\] other than seed 7 draws"):
        validate(copy)


def test_reproduce_rebuilds_scans_from_the_seed(copy):
    """--reproduce N: stored rows equal rows rebuilt from the recorded seed; a row whose
    measured values were swapped (hash and parameters made consistent) is caught."""
    from recon_datasets.store import HASH_KEY, content_hash

    assert validate(copy, reproduce=2)["reproduced_scans"] == [0, 7]

    def swap_errors(table):
        values = table.column("model_error").to_numpy().copy()
        values[0], values[1] = values[1], values[0]
        table = table.set_column(table.schema.get_field_index("model_error"), "model_error",
                                 pa.array(values))
        return table.replace_schema_metadata({HASH_KEY: content_hash(table).encode()})
    _rewrite(copy / "part-00000.parquet", swap_errors)
    validate(copy)  # consistent on its own ...
    with pytest.raises(DatasetError, match=r"part-00000.parquet \(partition 0\): scan 0 rebuilt "
                                           r"from seed 7 differs in \['model_error'\]"):
        validate(copy, reproduce=2)  # ... but not what the seed gives
