"""The dataset's columns (Arrow schema + descriptions) and its JSON schema file.

``_schema.json`` is written when a build starts (``status: "building"``, the generator
parameters a resume must match) and rewritten atomically when it ends (``"complete"``,
row counts per file). Names starting with ``_`` are skipped by Parquet readers (and by the
trainers' row-group listing), so neither it nor the ``_tmp/`` folder is read as data.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pyarrow as pa

from recon_datasets.config import BuildConfig

FORMAT = "sparkmpi-dl reconstructed-image dataset"
VERSION = 1
SCHEMA_FILE = "_schema.json"
TMP_DIR = "_tmp"


class DatasetError(ValueError):
    """A dataset directory that is missing, unfinished, corrupt or not what was expected."""


def part_name(partition: int) -> str:
    return f"part-{partition:05d}.parquet"


def arrow_schema(config: BuildConfig) -> pa.Schema:
    """Fixed-size lists for the arrays, so every row has the same shape."""
    crop, hist = config.crop * config.crop, config.max_iterations
    f32, f64, i64 = pa.float32(), pa.float64(), pa.int64()
    return pa.schema([
        ("scan_index", i64),
        ("phase", pa.list_(f32, crop)), ("amplitude", pa.list_(f32, crop)),
        ("fourier_error", pa.list_(f32, hist)), ("exit_change", pa.list_(f32, hist)),
        ("beta_history", pa.list_(f32, hist)), ("history_length", pa.int32()),
        ("model_error", f64), ("diverged", pa.bool_()),
        ("sim_n_frames", pa.int32()), ("sim_frame_size", pa.int32()),
        ("sim_object", pa.string()), ("sim_probe", pa.string()), ("sim_scan", pa.string()),
        ("sim_probe_diameter", f64), ("sim_overlap", f64), ("sim_photons", f64),
        ("sim_phase_max", f64), ("sim_seed", i64),
        ("algorithm", pa.string()), ("schedule", pa.string()), ("beta_start", f64),
        ("beta_end", f64), ("iterations", pa.int32()), ("engine_seed", i64),
        ("truth_phase_rms", f64), ("truth_phase_nrmse", f64), ("truth_amplitude_nrmse", f64),
        ("truth_complex_nrmse", f64), ("truth_shift_y", f64), ("truth_shift_x", f64),
        ("truth_region_pixels", i64), ("quality_class", pa.int32()),
    ])


DESCRIPTIONS = {
    "scan_index": "scan number 0..scans-1; its parameters are drawn from (seed, scan_index)",
    "phase": "reconstructed object phase (rad), crop x crop at the scan centre, global phase removed",
    "amplitude": "reconstructed object amplitude, same crop",
    "fourier_error": "measured relative Fourier error per iteration, zero-padded",
    "exit_change": "exit-wave change per iteration, zero-padded",
    "beta_history": "beta used in each iteration, zero-padded",
    "history_length": "iterations actually run (valid prefix of the history columns)",
    "model_error": "measured error of the final estimate |F(P O_j)| vs data",
    "diverged": "the engine diverged; the row holds the last sound estimate",
    "quality_class": "truth_phase_rms class: 0 < 0.1 rad, 1 < 0.25, 2 < 0.5, 3 otherwise",
}


def shapes(config: BuildConfig) -> dict[str, list[int]]:
    """Logical shape of each fixed-size list column (stored flattened, row-major)."""
    crop, hist = [config.crop, config.crop], [config.max_iterations]
    return {"phase": crop, "amplitude": crop, "fourier_error": hist, "exit_change": hist,
            "beta_history": hist}


def describe(config: BuildConfig, status: str, files: dict[str, int] | None = None) -> dict[str, Any]:
    """The content of ``_schema.json``."""
    shape = shapes(config)
    columns = []
    for field in arrow_schema(config):
        dtype = field.type.value_type if pa.types.is_fixed_size_list(field.type) else field.type
        columns.append({"name": field.name, "dtype": str(dtype),
                        "shape": shape.get(field.name, []),
                        "description": DESCRIPTIONS.get(field.name, _default_description(field.name))})
    return {
        "format": FORMAT, "version": VERSION, "status": status,
        "rows": sum(files.values()) if files is not None else None,
        "seed": config.seed, "partitions": config.num_partitions,
        "files": files, "generator": config.to_dict(), "columns": columns,
    }


def _default_description(name: str) -> str:
    if name.startswith("sim_"):
        return f"simulation parameter {name[4:]} (recon_env.simulate)"
    if name.startswith("truth_"):
        return f"ground-truth {name[6:]} from Reconstructor.quality()"
    return f"reconstruction parameter {name}"


def write_json_atomic(path: Path, content: dict[str, Any]) -> None:
    """Write to a temporary name in the same folder, then rename: never half a file."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(content, indent=2) + "\n")
    os.replace(tmp, path)


def read_schema_file(root: Path) -> dict[str, Any]:
    """The parsed ``_schema.json`` of a dataset folder, with errors naming the file."""
    path = root / SCHEMA_FILE
    if not root.is_dir():
        raise DatasetError(f"dataset directory {str(root)!r} does not exist")
    if not path.is_file():
        raise DatasetError(f"{path} is missing: {root} is not a dataset built by "
                           f"`sparkmpi-dl dataset build` (or its build never started)")
    try:
        content = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise DatasetError(f"{path} is not readable JSON: {err}") from err
    if not isinstance(content, dict) or content.get("format") != FORMAT:
        raise DatasetError(f"{path} does not describe a {FORMAT}")
    if content.get("version") != VERSION:
        raise DatasetError(f"{path}: format version {content.get('version')}, this reader "
                           f"knows version {VERSION}")
    return content
