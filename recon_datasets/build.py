"""The dataset build: one Spark task per partition simulates and reconstructs its scans.

The driver decides what to build (partitions without a sound final file), runs the Spark
job in a background thread, and prints progress from the tasks' progress files meanwhile.
``DIR`` must be on a file system every executor sees (local disk for ``local[*]``).

Each ``build()`` call is an attempt with its own id (see ``recon_datasets.store``): it takes
over the folder before listing what to build, and a failed attempt is fenced before
``build()`` raises, so tasks of a failed job that Spark has not killed yet (it takes 2-4 s)
can neither land files in the dataset nor disturb the next attempt. A failed ``build()``
also cancels its attempt's job group and returns only after those tasks have ended.
"""
from __future__ import annotations

import re
import shutil
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from recon_datasets.config import BuildConfig
from recon_datasets.schema import (
    SCHEMA_FILE,
    TMP_DIR,
    DatasetError,
    arrow_schema,
    describe,
    part_name,
    read_schema_file,
    write_json_atomic,
)
from recon_datasets.store import (
    check_partition,
    end_attempt,
    read_progress,
    start_attempt,
)


class BuildFailed(RuntimeError):
    """A Spark task failed; complete partitions are kept and a rerun resumes."""


def build_partition(config: BuildConfig, root: str, attempt: str, partition: int,
                    fail_partition: int | None = None) -> tuple[int, int, float]:
    """Spark task body: all scans of one partition -> its committed Parquet file.

    Commits only while ``attempt`` is the folder's current attempt (else StaleAttempt).
    Returns (partition, rows, CPU seconds of this task)."""
    from recon_datasets.scan import reconstruct_scan
    from recon_datasets.store import commit_partition, rows_to_table, write_progress

    cpu = time.process_time()
    folder = Path(root)
    rows = []
    for scan in config.partition_scans(partition):
        rows.append(reconstruct_scan(config, scan))
        write_progress(folder, attempt, partition, len(rows))
    table = rows_to_table(rows, arrow_schema(config))
    commit_partition(folder, attempt, partition, table, config.rows_per_group,
                     crash_before_commit=partition == fail_partition)
    return partition, len(rows), time.process_time() - cpu


def _start_or_resume(root: Path, config: BuildConfig,
                     log: Callable[[str], None]) -> tuple[str, list[int]]:
    """Write/compare the schema file, start a new attempt (fencing any earlier one), then
    list the partitions still to build; returns (attempt id, partitions to build)."""
    root.mkdir(parents=True, exist_ok=True)
    if (root / SCHEMA_FILE).exists():
        previous = read_schema_file(root)
        if previous.get("generator") != config.to_dict():
            old = previous.get("generator") or {}
            diff = sorted(k for k in set(old) | set(config.to_dict())
                          if old.get(k) != config.to_dict().get(k))
            raise DatasetError(f"{root} holds a dataset built with other parameters "
                               f"(differs in {diff}); use the same arguments to resume it, "
                               f"or another --out")
    else:
        write_json_atomic(root / SCHEMA_FILE, describe(config, "building"))
    attempt = start_attempt(root)  # from here no task of an earlier attempt can commit
    todo = []
    for partition in range(config.num_partitions):
        path = root / part_name(partition)
        if not path.exists():
            todo.append(partition)
            continue
        try:
            check_partition(path, config, partition)
        except DatasetError as err:
            log(f"dataset: rebuilding partition {partition}: {err}")
            path.unlink()
            todo.append(partition)
    for leftover in (root / TMP_DIR).iterdir():  # earlier attempts' temporary files
        if leftover.name == attempt:
            continue
        if leftover.is_dir():
            shutil.rmtree(leftover, ignore_errors=True)
        else:
            leftover.unlink(missing_ok=True)
    return attempt, todo


def _progress_line(root: Path, config: BuildConfig, attempt: str, todo: list[int],
                   start: float) -> str:
    done = 0
    for partition in todo:
        if (root / part_name(partition)).exists():
            done += len(config.partition_scans(partition))
        else:
            done += read_progress(root, attempt, partition)
    total = sum(len(config.partition_scans(p)) for p in todo)
    minutes = (time.monotonic() - start) / 60
    rate = done / minutes if minutes > 0 else 0.0
    return f"dataset: {done}/{total} scans, {rate:.1f} scans/min"


def build(config: BuildConfig, out: str | Path, *, spark: Any = None, master: str | None = None,
          progress_s: float = 10.0, fail_partition: int | None = None,
          log: Callable[[str], None] = lambda line: print(line, flush=True)) -> dict[str, Any]:
    """Build (or resume) the dataset in ``out``; returns figures of this run.

    ``fail_partition`` injects a crash after that partition's file is written but before
    its commit (tests of the resume path).
    """
    from recon_datasets.reader import validate
    from sparkmpi_dl.launch.spark import spark_context

    config.check()
    root = Path(out).resolve()
    attempt, todo = _start_or_resume(root, config, log)
    partitions = config.num_partitions
    scans_todo = sum(len(config.partition_scans(p)) for p in todo)
    log(f"dataset: {config.scans} scans in {partitions} partitions -> {root}; "
        f"{partitions - len(todo)} partition(s) already complete, building {len(todo)} "
        f"({scans_todo} scans)")
    start = time.monotonic()
    cpu_s = 0.0
    if todo:
        sc = spark_context(spark, master, app_name="sparkmpi-dl dataset build")
        start = time.monotonic()  # throughput of the job itself, not of starting Spark
        outcome: dict[str, Any] = {}

        def job() -> None:
            try:
                sc.setJobGroup(job_group(attempt), "sparkmpi-dl dataset build",
                               interruptOnCancel=True)
                rdd = sc.parallelize(todo, len(todo))
                outcome["result"] = rdd.map(
                    lambda p: build_partition(config, str(root), attempt, p,
                                              fail_partition)).collect()
            except Exception as err:  # noqa: BLE001 - re-raised below in the driver thread
                outcome["error"] = err

        thread = threading.Thread(target=job, name="dataset-build", daemon=True)
        thread.start()
        while thread.is_alive():
            thread.join(progress_s)
            if thread.is_alive():
                log(_progress_line(root, config, attempt, todo, start))
        if "error" in outcome:
            end_attempt(root, attempt)  # its still-running tasks can no longer commit
            if not _wait_for_tasks(sc, job_group(attempt), TASKS_GONE_TIMEOUT_S):
                log(f"dataset: tasks of the failed build still run after "
                    f"{TASKS_GONE_TIMEOUT_S:.0f} s; they cannot commit (attempt fenced)")
            missing = [p for p in todo if not (root / part_name(p)).exists()]
            raise BuildFailed(f"dataset build failed; partition(s) {missing} not written "
                              f"(the others are kept: rerun the same command to resume): "
                              f"{_task_error(outcome['error'])}") from None
        cpu_s = sum(result[2] for result in outcome["result"])
    seconds = time.monotonic() - start
    files = {part_name(p): len(config.partition_scans(p)) for p in range(partitions)}
    end_attempt(root, attempt)
    write_json_atomic(root / SCHEMA_FILE, describe(config, "complete", files))
    summary = validate(root)  # the row-count check: every scan exactly once
    shutil.rmtree(root / TMP_DIR, ignore_errors=True)
    rate = scans_todo / (seconds / 60) if scans_todo and seconds > 0 else None
    log(_progress_line(root, config, attempt, todo, start) if todo
        else "dataset: nothing to build")
    log(f"dataset: complete, {summary['rows']} rows = {config.scans} scans in {partitions} "
        f"files, checked; built {scans_todo} scans in {seconds:.1f} s"
        + (f" ({rate:.1f} scans/min)" if rate else ""))
    return {"out": str(root), "rows": summary["rows"], "partitions": partitions,
            "built_partitions": len(todo), "built_scans": scans_todo, "seconds": seconds,
            "scans_per_min": rate, "task_cpu_s": cpu_s}


TASKS_GONE_TIMEOUT_S = 30.0


def job_group(attempt: str) -> str:
    """The Spark job group of one build attempt."""
    return f"sparkmpi-dl-dataset-{attempt}"


def _wait_for_tasks(sc: Any, group: str, timeout_s: float) -> bool:
    """Cancel the group's jobs and wait until none of their tasks runs; False on timeout.

    Spark kills the other tasks of a failed job only seconds later; build() returns after
    they have ended, so a resume does not share the slots (or the folder) with them.
    """
    sc.cancelJobGroup(group)
    tracker = sc.statusTracker()
    deadline = time.monotonic() + timeout_s
    while True:
        active = 0
        for job_id in tracker.getJobIdsForGroup(group):
            info = tracker.getJobInfo(job_id)
            for stage_id in info.stageIds if info else []:
                stage = tracker.getStageInfo(stage_id)
                active += stage.numActiveTasks if stage else 0
        if active == 0:
            return True
        if time.monotonic() > deadline:
            return False
        time.sleep(0.1)


def _task_error(err: BaseException) -> str:
    """The Python exception line from a Spark task failure (not the JVM stack)."""
    lines = [line.strip() for line in str(err).splitlines()]
    python = [line for line in lines if re.match(r"^[A-Za-z_.]*(Error|Exception|Failed|Diverged): ", line)]
    return python[-1] if python else (lines[0] if lines else type(err).__name__)
