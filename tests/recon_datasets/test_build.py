"""The Spark build: content, reproducibility, interrupted builds resumed without duplicates."""
import argparse
import json
import os
import shutil
import threading

import numpy as np
import pytest

from recon_datasets.build import BuildFailed, build, job_group
from recon_datasets.config import BuildConfig
from recon_datasets.reader import read, to_numpy, validate
from recon_datasets.schema import DatasetError, arrow_schema
from recon_datasets.store import (
    StaleAttempt,
    commit_partition,
    end_attempt,
    rows_to_table,
    start_attempt,
    write_progress,
)

from .conftest import SMALL


def test_reference_content(reference):
    table = read(reference)
    assert table.num_rows == SMALL.scans
    assert table.column("scan_index").to_pylist() == list(range(SMALL.scans))
    phase = to_numpy(table, "phase")
    assert phase.shape == (SMALL.scans, SMALL.crop, SMALL.crop) and phase.dtype == np.float32
    assert np.isfinite(phase).all() and phase.std() > 0
    history = to_numpy(table, "fourier_error")
    lengths = to_numpy(table, "history_length")
    assert history.shape == (SMALL.scans, SMALL.max_iterations)
    for row, n in zip(history, lengths):  # measured prefix, zero padding after it
        assert (row[:n] > 0).all() and (row[n:] == 0).all()
    assert set(to_numpy(table, "algorithm")) <= {"dm", "raar"}
    rms = to_numpy(table, "truth_phase_rms")
    assert np.isfinite(rms).all() and rms.max() > 2 * rms.min()  # quality varies
    schema = json.loads((reference / "_schema.json").read_text())
    assert schema["status"] == "complete" and schema["rows"] == SMALL.scans
    assert schema["seed"] == SMALL.seed and schema["generator"]["scans"] == SMALL.scans
    columns = {c["name"]: c for c in schema["columns"]}
    assert columns["phase"]["shape"] == [SMALL.crop, SMALL.crop]
    assert columns["phase"]["dtype"] == "float"
    assert not (reference / "_tmp").exists()


def test_same_seed_same_dataset_other_seed_differs(spark, reference, tmp_path):
    build(SMALL, tmp_path / "again", spark=spark, progress_s=60)
    assert read(tmp_path / "again").equals(read(reference))
    other = BuildConfig(**{**SMALL.to_dict(), "seed": SMALL.seed + 1, "scans": 3, "partitions": 1})
    build(other, tmp_path / "other", spark=spark, progress_s=60)
    assert not np.array_equal(to_numpy(read(tmp_path / "other"), "phase"),
                              to_numpy(read(reference), "phase")[:3])


def test_interrupted_build_resumes_without_duplicates(spark, reference, tmp_path, capsys):
    out = tmp_path / "ds"
    with pytest.raises(BuildFailed, match=r"partition\(s\) \[.*1.*\] not written") as err:
        build(SMALL, out, spark=spark, progress_s=60, fail_partition=1)
    assert "injected failure in partition 1" in str(err.value)
    # build() returned only after the failed job's other tasks had ended (Spark kills them
    # seconds later: partition 2 was still computing when partition 1 failed)
    (attempt,) = [d.name for d in (out / "_tmp").iterdir()]
    tracker = spark.statusTracker()
    jobs = tracker.getJobIdsForGroup(job_group(attempt))
    assert jobs, "the build's job was not in its attempt's job group"
    stages = [tracker.getStageInfo(s) for j in jobs for s in tracker.getJobInfo(j).stageIds]
    assert sum(s.numActiveTasks for s in stages if s) == 0
    # the crashed task's file exists only under its temporary name, never as complete
    assert list((out / "_tmp").rglob("part-00001.*.parquet.tmp"))
    assert not (out / "part-00001.parquet").exists()
    with pytest.raises(DatasetError, match="build is not finished.*part-00001"):
        validate(out)
    kept = {p.name: p.stat().st_mtime_ns for p in out.glob("part-*.parquet")}
    capsys.readouterr()
    summary = build(SMALL, out, spark=spark, progress_s=60)
    assert f"{len(kept)} partition(s) already complete" in capsys.readouterr().out
    assert summary["built_partitions"] == 3 - len(kept)
    for name, mtime in kept.items():  # complete partitions were skipped, not rewritten
        assert (out / name).stat().st_mtime_ns == mtime
    table = read(out)
    assert table.column("scan_index").to_pylist() == list(range(SMALL.scans))
    assert table.equals(read(reference))
    assert not (out / "_tmp").exists()


def test_late_task_of_a_failed_build_cannot_land_after_the_resume_listed(spark, reference,
                                                                         tmp_path):
    """The interleaving of issue 9 item 3, forced: a task of the failed build (Spark kills
    them 2-4 s after build() raised) commits just after the resume made its to-do list.
    Its commit is refused, the resume neither crashes nor gets a stranger's file."""
    from recon_datasets.scan import reconstruct_scan

    out = tmp_path / "ds"
    with pytest.raises(BuildFailed):
        build(SMALL, out, spark=spark, progress_s=60, fail_partition=1)
    (failed_attempt,) = [d.name for d in (out / "_tmp").iterdir()]
    # the late task has its rows and waits, right before its commit, for the resume's list
    listed, committed = threading.Event(), threading.Event()
    late: dict = {}

    def late_task() -> None:
        rows = [reconstruct_scan(SMALL, i) for i in SMALL.partition_scans(1)]
        table = rows_to_table(rows, arrow_schema(SMALL))
        assert listed.wait(120), "the resume never listed its work"
        try:
            write_progress(out, failed_attempt, 1, len(rows))
            late["path"] = commit_partition(out, failed_attempt, 1, table, SMALL.rows_per_group)
        except StaleAttempt as err:
            late["refused"] = str(err)
        finally:
            late["part1_after_late_commit"] = (out / "part-00001.parquet").exists()
            committed.set()

    thread = threading.Thread(target=late_task, daemon=True)
    thread.start()
    lines: list[str] = []

    def log(line: str) -> None:
        lines.append(line)
        if "already complete, building" in line:  # the to-do list is made, no task started
            listed.set()
            assert committed.wait(120), "the late task never tried its commit"

    summary = build(SMALL, out, spark=spark, progress_s=60, log=log)
    thread.join(10)
    assert "refused" in late, f"a task of the failed attempt committed: {late}"
    assert f"attempt {failed_attempt} has ended; partition 1" in late["refused"]
    assert late["part1_after_late_commit"] is False
    assert summary["built_partitions"] >= 1
    table = read(out)
    assert table.column("scan_index").to_pylist() == list(range(SMALL.scans))
    assert table.equals(read(reference))
    assert not (out / "_tmp").exists() and not (out / "_attempt").exists()


def test_stale_attempt_never_commits_nor_recreates_folders(tmp_path):
    """Attempt-level fencing without Spark: a superseded attempt's commit and progress
    writes are refused or dropped, and leave nothing behind."""
    root = tmp_path / "ds"
    root.mkdir()
    old = start_attempt(root)
    table = rows_to_table([], arrow_schema(SMALL))
    new = start_attempt(root)  # a resume takes over while `old` still has a written file
    with pytest.raises(StaleAttempt, match=f"attempt {old} has ended"):
        commit_partition(root, old, 0, table, 2)
    assert not (root / "part-00000.parquet").exists()
    assert not list((root / "_tmp" / old).iterdir())  # its temporary file removed
    shutil.rmtree(root / "_tmp" / old)  # the resume clears the old attempt's folder
    write_progress(root, old, 0, 3)
    with pytest.raises(StaleAttempt):
        commit_partition(root, old, 0, table, 2)
    assert not (root / "_tmp" / old).exists()  # never recreated: no mkdir race with a resume
    assert commit_partition(root, new, 0, table, 2).exists()
    end_attempt(root, new)
    with pytest.raises(StaleAttempt):  # a failed build is fenced before build() raises
        commit_partition(root, new, 1, table, 2)


def test_resume_rebuilds_a_damaged_partition(spark, reference, tmp_path, capsys):
    out = tmp_path / "ds"
    shutil.copytree(reference, out)
    (out / "part-00002.parquet").write_bytes(b"PAR1 not really")
    capsys.readouterr()
    summary = build(SMALL, out, spark=spark, progress_s=60)
    assert "rebuilding partition 2: corrupt Parquet file" in capsys.readouterr().out
    assert summary["built_partitions"] == 1
    assert read(out).equals(read(reference))


def test_resume_with_other_parameters_is_refused(spark, reference, tmp_path):
    out = tmp_path / "ds"
    shutil.copytree(reference, out)
    changed = BuildConfig(**{**SMALL.to_dict(), "crop": 16})
    with pytest.raises(DatasetError, match=r"other parameters \(differs in \['crop'\]\)"):
        build(changed, out, spark=spark)


def _cli(argv):
    from recon_datasets.cli import register

    parser = argparse.ArgumentParser()
    commands = parser.add_subparsers(dest="command", required=True)
    bench = commands.add_parser("bench").add_subparsers()
    register(commands, bench)
    args = parser.parse_args(argv)
    return args.func(args)


def test_cli_build_and_validate(spark, tmp_path, capsys):
    out = tmp_path / "cli"
    rc = _cli(["dataset", "build", "--scans", "2", "--partitions", "2", "--out", str(out),
               "--frames", "16", "--frame-size", "32", "--crop", "16", "--iterations", "5,5",
               "--seed", "11"])
    captured = capsys.readouterr()
    assert rc == 0, captured.err
    assert "2/2 scans" in captured.out and "complete, 2 rows = 2 scans" in captured.out
    assert json.loads(captured.out.strip().splitlines()[-1])["rows"] == 2
    assert _cli(["dataset", "validate", str(out)]) == 0
    os.remove(out / "part-00001.parquet")
    assert _cli(["dataset", "validate", str(out)]) == 2
    assert "missing partition file" in capsys.readouterr().err
    assert _cli(["dataset", "build", "--scans", "2", "--crop", "99", "--out", str(out)]) == 2
    assert "--crop must be in" in capsys.readouterr().err
