"""The driver of ``sparkmpi-dl stream recon``: a Spark streaming query whose ``foreachBatch``
hands each micro-batch to the MPI ranks, then shows and commits what they did.

Layout of ``--out DIR``::

    run.json                 the run's arguments (a restart must use the same ones)
    checkpoint/query/        Spark's offset and commit logs (exactly-once input)
    checkpoint/recon/        the reconstruction state (sparkmpi_dl.stream.state)
    batches/batch-00007.png  phase after each batch; phase.png is the latest
    tb/                      TensorBoard: phase image, frames so far, errors, latency
    recon.cxi, object.png, errors.png, summary.json   after the end of the scan

Restarting the same command after a crash resumes: Spark re-plans the batch it had not
committed from its offset log, and the reconstruction continues from the last committed
state (a batch whose state was already committed is not applied twice).
"""
from __future__ import annotations

import os
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Literal, TypeVar

import numpy as np

from .records import DEFAULT_PREFIX, RANGE, config_key, parse_range, stream_keys
from .state import StateDir, write_json

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession
    from pyspark.sql.streaming import StreamingQuery

    from sparkmpi_dl.dataplane.persistent import ResidentRanks

    from .outputs import TensorBoard

_T = TypeVar("_T")

RUN_KIND = "stream-recon"
FAULT_ENV = "SPARKMPI_STREAM_FAULT"
"""Testing hook: ``after-commit:<batch>`` makes the driver write ``<out>/fault-reached`` and
hang after committing that batch's state but before returning to Spark (so a test can
kill -9 it at exactly that point); ``in-batch:<batch>`` does the same before the ranks run."""


class StreamReconError(RuntimeError):
    """The online reconstruction cannot go on; the message is one line for the user."""


@dataclass
class ReconOptions:
    """What ``sparkmpi-dl stream recon`` is asked to do (its flags, via sparkmpi_dl.config)."""

    out: Path
    """output folder; it also holds the checkpoint a restart resumes from"""
    ranks: int = 2
    """MPI ranks"""
    trigger: float = 2.0
    """micro-batch interval, seconds"""
    broker: str | None = None
    """a running Redis (redis://HOST:PORT); default: the one 'stream publish' recorded"""
    prefix: str = DEFAULT_PREFIX
    """stream name prefix: streams PREFIX:frames:K"""
    backend: Literal["numpy", "cupy"] = "numpy"
    """array library (cupy: NVIDIA GPU)"""
    agent: str | None = None
    """a trained tuning agent ('agent train' run folder, or 'pretrained') picks algorithm and
    beta for each batch's iterations"""
    agent_every: int | None = None
    """iterations between the agent's decisions (default: its training's)"""
    iterations_per_batch: int = 5
    """iterations run on each micro-batch's frames (after the batch is committed, while
    Spark delivers the next one)"""
    final_iterations: int = 50
    """iterations after the end-of-scan record"""
    end_timeout: float = 120.0
    """give up (saving the partial result) when no data came for this many seconds and no
    end-of-scan record"""
    start_fraction: float = 0.5
    """iterate once this fraction of the scan's frames is in (a few frames give an
    ill-posed start that later frames do not repair)"""
    algorithm: Literal["dm", "raar"] = "dm"
    """without an agent: the algorithm of every iteration"""
    beta: float | None = None
    """without an agent: the relaxation beta"""
    threads: int = 1
    """threads per rank (numpy)"""
    master: str | None = None
    """Spark master (default local[max(ranks + 2, cores)])"""
    engine: dict[str, Any] = field(default_factory=dict)
    """further EngineConfig fields for the ranks' reconstructor"""
    quiet: bool = False
    """no line per batch (benchmarks)"""

    def run_config(self) -> dict[str, Any]:
        """The arguments a restart must repeat (others may change between runs)."""
        return {"ranks": self.ranks, "prefix": self.prefix, "backend": self.backend,
                "agent": self.agent, "iterations_per_batch": self.iterations_per_batch,
                "start_fraction": self.start_fraction,
                "algorithm": self.algorithm, "beta": self.beta, "engine": self.engine}


class OnlineReconstruction:
    """One streaming reconstruction of one scan into ``options.out``."""

    def __init__(self, options: ReconOptions, url: str, spark: SparkSession | None = None) -> None:
        self.opts = options
        self.url = url
        self.out = Path(options.out)
        self.sd = StateDir(self.out / "checkpoint" / "recon")
        self.state = self.sd.load(options.ranks)
        self.spark = spark
        self.error: BaseException | None = None
        self.done = threading.Event()
        self.ready = threading.Event()  # the query runs and every rank is connected
        self.result: dict[str, Any] | None = None
        self.last_data = time.monotonic()
        self.busy = False
        self.tb: TensorBoard | None = None
        self.batch_seconds: list[float] = []
        self.batch_log: list[dict[str, Any]] = []  # per batch: frames, where the time went
        self.ranks: ResidentRanks | None = None
        self.final_image_at: float | None = None  # wall clock when phase.png and recon.cxi were out
        self.keys: list[str] = []  # the streams read, in order: stream k goes to rank k % ranks

    def resident_ranks(self) -> ResidentRanks:
        """The MPI ranks, started once and fed every micro-batch (``stream.rank.serve``)."""
        if self.ranks is None:
            from sparkmpi_dl.dataplane.persistent import ResidentRanks

            from .rank import serve

            self.ranks = ResidentRanks(serve, self.opts.ranks, spark=self.spark,
                                       args=(str(self.sd.root), self.opts.backend))
        return self.ranks

    def stop_ranks(self) -> None:
        if self.ranks is not None:
            ranks, self.ranks = self.ranks, None
            if self.error is None:
                ranks.close()
            else:  # a failed batch: end the feed without waiting for the ranks' results
                ranks.__exit__(type(self.error), self.error, None)

    # ------------------------------------------------------------ output helpers
    def say(self, text: str) -> None:
        if not self.opts.quiet:
            print(text, flush=True)

    def _tensorboard(self) -> TensorBoard:
        if self.tb is None:
            from .outputs import TensorBoard

            self.tb = TensorBoard(self.out / "tb")
        return self.tb

    def _ctx(self, batch_id: int, iterations: int) -> dict[str, Any]:
        return {"root": str(self.sd.root), "batch": batch_id, "state": self.state.to_json(),
                "iterations": iterations, "final_iterations": self.opts.final_iterations,
                "start_fraction": self.opts.start_fraction,
                "backend": self.opts.backend,
                "threads": self.opts.threads, "algorithm": self.opts.algorithm,
                "beta": self.opts.beta, "agent": self.opts.agent,
                "agent_every": self.opts.agent_every, "engine": dict(self.opts.engine),
                # a batch's model error would cost one more pass over every frame: the
                # final result reports it
                "model_error": False}

    def _fault(self, phase: str, batch_id: int) -> None:
        if os.environ.get(FAULT_ENV) == f"{phase}:{batch_id}":
            (self.out / "fault-reached").write_text(f"{phase}:{batch_id}\n")
            while True:  # wait to be killed
                time.sleep(1)

    # ------------------------------------------------------------ one micro-batch
    def handle_batch(self, df: DataFrame, batch_id: int) -> None:
        """foreachBatch: ranks apply the batch, then the driver commits and shows it."""
        self.busy = True
        try:
            self._handle(df, batch_id)
        except BaseException as err:  # noqa: BLE001 - reported by run() in one line
            self.error = err
            self.done.set()
            raise
        finally:
            self.busy = False
            self.last_data = time.monotonic()

    def _handle(self, df: DataFrame, batch_id: int) -> None:
        if self.done.is_set():
            return
        if self.state.applied(batch_id):  # committed before a crash; Spark re-runs it
            self.say(f"batch {batch_id}: already applied before the restart")
            self._maybe_finish()
            return
        t0 = time.monotonic()
        self._fault("in-batch", batch_id)
        self.sd.prepare(batch_id)
        ctx = self._ctx(batch_id, self.opts.iterations_per_batch)
        reports, deliver_s = self._deliver(df, ctx)
        metrics = self._merge(reports, batch_id)
        self.sd.commit(self.state)
        # the batch is applied for good: free its entries now, not when Spark commits it at
        # the next batch's start, which a publisher waiting at the backlog bound would never
        # let come (a re-run of this batch after a crash reads nothing and is skipped)
        self._trim_read()
        seconds = time.monotonic() - t0
        self._show(batch_id, reports, metrics, seconds)
        self.batch_log.append({"batch": batch_id, "seconds": seconds,
                               "frames": sum(rep["accepted"] for rep in reports),
                               **self.resident_ranks().last_feed, "deliver_s": deliver_s,
                               "intake_s": max(rep.get("intake_s", 0.0) for rep in reports),
                               "iterate_s": (metrics or {}).get("iterate_s", 0.0)})
        self._fault("after-commit", batch_id)
        final = next((rep["final"] for rep in reports if rep.get("final")), None)
        if final is not None:  # the ranks finished the scan in this batch's job
            # the iterations run after the end record came: this batch's and the final ones
            after_end = final["metrics"]["iterate_s"] + (
                metrics["iterate_s"] if metrics and metrics.get("batch") == batch_id else 0.0)
            self._finish(final, complete=True, reason=None, t0=t0, after_end_s=after_end)
            self.done.set()
            return
        self._maybe_finish()

    def _deliver(self, df: DataFrame, ctx: dict[str, Any]) -> tuple[list[dict[str, Any]], float]:
        """Hand the micro-batch to the resident ranks (stream k's entries to rank k % ranks);
        their reports and the seconds the hand-over took.

        The query's own source sends references (``payload=reference``): a few rows,
        collected here and sent with the order, and each rank reads its entries from the
        broker. Any other DataFrame goes through the data plane as it is."""
        t0 = time.monotonic()
        if not self.keys:
            reports = self.resident_ranks().feed(df, {"op": "batch", **ctx})
            return reports, self.resident_ranks().last_feed.get("deliver_s", 0.0)
        ranges: dict[int, list[tuple[str, str, str]]] = {}
        for row in df.select("stream", "entry_id", "kind", "meta").collect():
            if row.kind != RANGE:
                raise StreamReconError(f"the source sent a {row.kind!r} row where references "
                                       f"were asked for (option payload=reference)")
            stream, after, to, _ = parse_range(row.stream, row.entry_id, row.meta)
            ranges.setdefault(self.keys.index(stream) % self.opts.ranks, []).append((stream, after, to))
        deliver_s = time.monotonic() - t0
        reports = self.resident_ranks().feed(None, {"op": "batch", **ctx, "ranges": ranges,
                                                    "url": self.url})
        return reports, deliver_s

    def _merge(self, reports: list[dict[str, Any]], batch_id: int) -> dict[str, Any] | None:
        """Fold the ranks' reports into the state (committed by the caller)."""
        st = self.state
        c = st.counts
        metrics = None
        for rep in reports:
            c["received"] += rep["received"]
            c["frames_used"] += rep["accepted"]
            c["duplicates"] += rep["duplicates"]
            c["other_scans"] += rep["other_scans"]
            for reason, n in rep["rejected"].items():
                c["rejected"] += n
                c["rejected_reasons"][reason] = c["rejected_reasons"].get(reason, 0) + n
            if rep["start"] is not None and st.start is None:
                st.start, st.scan = rep["start"], rep["start"]["scan"]
            for end in rep["ends"]:
                if st.end is None and (st.scan is None or end.get("scan") == st.scan):
                    st.end = {**end, "seen_at": time.time()}
            if rep["chunk"]:
                st.chunks.setdefault(str(rep["rank"]), []).append(rep["chunk"])
            if rep.get("shared"):
                st.shared = rep["shared"]
            if rep.get("used"):
                st.used = rep["used"]
            if rep.get("metrics"):  # the latest iterations finished (this batch's or earlier)
                metrics = rep["metrics"]
            for done in rep.get("schedules") or []:
                st.schedule.extend({**entry, "batch": done["batch"]} for entry in done["schedule"])
            for stream, eid in (rep.get("last_ids") or {}).items():
                st.read_to[stream] = eid
        st.batch = batch_id
        if any(rep["accepted"] for rep in reports):
            st.batches_with_frames += 1
        return metrics

    def _show(self, batch_id: int, reports: list[dict[str, Any]], metrics: dict[str, Any] | None,
              seconds: float) -> None:
        st = self.state
        total = st.start["n_frames"] if st.start else "?"
        used = st.counts["frames_used"]
        new = sum(rep["accepted"] for rep in reports)
        self.batch_seconds.append(seconds)
        if metrics is None:
            extra = ("waiting for the start record" if st.start is None else
                     f"iterations start at {self.opts.start_fraction:.0%} of the frames"
                     if any(rep.get("waiting") for rep in reports) else
                     "iterating" if new else "no new frames")
            self.say(f"batch {batch_id}: {used}/{total} frames ({extra}), {seconds:.1f} s")
            return
        self.say(f"batch {batch_id}: {used}/{total} frames, fourier_error "
                 f"{metrics['fourier_error'] if metrics['fourier_error'] is not None else float('nan'):.3g}, "
                 f"{seconds:.1f} s")
        stamps = [rep["oldest_ms"] for rep in reports if rep.get("oldest_ms")]
        latency = time.time() - min(stamps) / 1000 if stamps else None
        self._images(batch_id, {"frames": used, "new_frames": new,
                                "frame_latency_seconds": latency,
                                "fourier_error": metrics["fourier_error"],
                                "model_error": metrics["model_error"],
                                "batch_seconds": seconds,
                                "iterate_seconds": metrics["iterate_s"]})

    def _images(self, step: int, scalars: dict[str, Any]) -> None:
        from .outputs import phase_png_bytes, write_atomic

        assert self.state.shared is not None  # came with the batch's metrics (see _merge)
        with np.load(self.sd.path(self.state.shared)) as z:
            png, size = phase_png_bytes(z["object"], z["illumination"])
        folder = self.out / "batches"
        folder.mkdir(parents=True, exist_ok=True)
        write_atomic(folder / f"batch-{step:05d}.png", png)
        write_atomic(self.out / "phase.png", png)
        self._tensorboard().write(step, scalars, {"phase": (png, size)})

    # ------------------------------------------------------------ the end
    def _maybe_finish(self) -> None:
        st = self.state
        if st.end is not None and st.final is None:
            self.finalize(complete=True)
        if st.final is not None:
            self.done.set()

    def finalize(self, complete: bool, reason: str | None = None) -> dict[str, Any]:
        """Final iterations on every rank, then recon.cxi, PNGs and summary.json."""
        st = self.state
        t0 = time.monotonic()
        if not any(st.chunks.values()):  # no frame arrived: only the counts
            summary = self._summary(None, complete, reason, 0.0, 0.0)
            write_json(self.out / "summary.json", summary)
            st.final = {"summary": "summary.json", "complete": complete}
            self.sd.commit(st)
            self._trim_read()
            return summary
        ctx = self._ctx(st.batch, 0)
        results = self.resident_ranks().feed(None, {"op": "final", **ctx})
        final = next(r["result"] for r in results if r["result"] is not None)
        return self._finish(final, complete, reason, t0)

    def _finish(self, final: dict[str, Any], complete: bool, reason: str | None, t0: float,
                after_end_s: float | None = None) -> dict[str, Any]:
        """Write recon.cxi, the PNGs and summary.json from the final result; commit.
        ``after_end_s``: seconds of iterations run after the end record came (default:
        the final iterations')."""
        st = self.state
        st.schedule.extend({**entry, "batch": "final"}
                           for entry in final["metrics"].get("schedule") or [])
        self._write_result(final)
        summary = self._summary(final, complete, reason, time.monotonic() - t0,
                                final["metrics"]["iterate_s"],
                                final["metrics"]["iterate_s"] if after_end_s is None else after_end_s)
        write_json(self.out / "summary.json", summary)
        st.final = {"summary": "summary.json", "complete": complete}
        self.sd.commit(st)
        self._trim_read()
        self.result = summary
        assert st.start is not None  # a final result needs the start record
        used, total = st.counts["frames_used"], st.start["n_frames"]
        self.say(f"final: {used}/{total} frames, {final['metrics']['iterations']} final "
                 f"iterations, fourier_error {final['metrics']['fourier_error'] or float('nan'):.3g}; "
                 f"wrote {self.out}/recon.cxi, object.png, errors.png, summary.json")
        return summary

    def _trim_read(self) -> None:
        """Drop what this scan's reconstruction read from the broker (Spark commits the last
        batch only when a next one starts, which after the end of the scan never comes)."""
        from .broker import connect
        from .source import next_id

        try:
            client = connect(self.url)
            for stream, eid in self.state.read_to.items():
                client.xtrim(stream, minid=next_id(eid), approximate=False)
        except Exception as err:  # noqa: BLE001 - the result is saved; say it and go on
            self.say(f"warning: could not trim the consumed entries at {self.url}: {err}")

    def _write_result(self, final: dict[str, Any]) -> None:
        from recon_env.cxi import write_result_cxi
        from recon_env.data import PLANCK_EV_M
        from recon_env.plots import save_errors_png, save_object_png

        from .outputs import phase_png_bytes, write_atomic

        start = self.state.start
        assert start is not None  # a final result needs the start record
        n = start["frame_shape"][0]
        pixel_m = PLANCK_EV_M / start["energy_ev"] * start["distance_m"] / (n * start["detector_pixel_m"])
        png, size = phase_png_bytes(final["object"], final["illumination"])
        write_atomic(self.out / "phase.png", png)
        write_result_cxi(self.out / "recon.cxi", final, final["history"], pixel_m,
                         source=f"{self.url} scan {start['scan']}")
        self.final_image_at = time.time()  # the image is out; the figures below are extras
        title = (f"live: {self.state.counts['frames_used']}/{start['n_frames']} frames, "
                 f"{final['iteration']} iterations")
        save_object_png(final["object"], final["illumination"], self.out / "object.png",
                        pixel_m=pixel_m, title=title, probe=final["probe"])
        save_errors_png(final["history"], self.out / "errors.png", title=title)
        self._tensorboard().write(self.state.batch + 1, {
            "frames": self.state.counts["frames_used"],
            "fourier_error": final["metrics"]["fourier_error"],
            "model_error": final["metrics"]["model_error"]}, {"phase": (png, size)})

    def _summary(self, final: dict[str, Any] | None, complete: bool, reason: str | None,
                 final_total_s: float, final_iter_s: float,
                 after_end_iter_s: float | None = None) -> dict[str, Any]:
        st = self.state
        c = st.counts
        n_frames = st.start["n_frames"] if st.start else None
        used_idx = np.zeros(n_frames or 0, bool)
        if st.used:
            used_idx = np.load(self.sd.path(st.used))
        missing = [int(i) for i in np.flatnonzero(~used_idx)] if n_frames else []
        summary: dict[str, Any] = {
            "scan": st.scan, "complete": complete, "reason": reason,
            "frames_published": (st.end or {}).get("frames_published"),
            "frames_expected": n_frames, "frames_received": c["received"],
            "frames_used": c["frames_used"], "duplicates": c["duplicates"],
            "missing": len(missing), "missing_indices": missing,
            "rejected": c["rejected"], "rejected_reasons": c["rejected_reasons"],
            "other_scans": c["other_scans"], "batches": st.batch + 1,
            "batches_with_frames": st.batches_with_frames, "ranks": self.opts.ranks,
            "backend": self.opts.backend, "iterations_per_batch": self.opts.iterations_per_batch,
            "final_iterations": self.opts.final_iterations,
            "steering": (f"agent {self.opts.agent}" if self.opts.agent else
                         f"fixed: {self.opts.algorithm} beta {self.opts.beta or 'default'}"),
            "schedule": st.schedule,
            "broker": self.url, "final_seconds": final_total_s,
            "final_iterations_seconds": final_iter_s,
            "iterations_after_end_seconds": final_iter_s if after_end_iter_s is None
            else after_end_iter_s}
        if final is not None:
            summary.update({"iterations": final["iteration"],
                            "fourier_error": final["metrics"]["fourier_error"],
                            "model_error": final["metrics"]["model_error"]})
        if st.end is not None and st.end.get("end_ms"):
            # wall clock of this host against the broker's entry id (same host here)
            total = (self.final_image_at or time.time()) - st.end["end_ms"] / 1000
            summary["end_record_to_final_image_s"] = total
            # the pipeline's share: every iteration run after the end record came (the
            # batch's that brought it, then the final ones) is reconstruction time
            summary["end_latency_excluding_final_iterations_s"] = \
                total - summary["iterations_after_end_seconds"]
        return summary

    # ------------------------------------------------------------ the query
    def run(self) -> int:
        """Run until the scan is reconstructed (0), or fail/time out (1/3) with one line."""
        if self.state.final is not None:
            self.say(f"scan {self.state.scan} is already reconstructed in {self.out} "
                     f"(summary.json); nothing to do")
            return 0
        try:
            return self._run()
        finally:
            self.stop_ranks()

    def _run(self) -> int:
        if self.state.end is not None:  # crashed between the end record and the result
            self.finalize(complete=True)
            return 0
        self.resident_ranks()  # they start while the query starts
        keys = self.keys = self._wait_for_streams()
        from .source import NAME as SOURCE
        from .source import register

        spark = self.spark
        assert spark is not None  # run_recon makes one when the caller gives none
        register(spark)
        # before the first frame counts: the ranks are up, and the Python workers that read
        # the source have started once (a cold one costs seconds in the first batch)
        self.resident_ranks().feed(None, {"op": "warm-up"})
        options = {"url": self.url, "streams": ",".join(keys), "payload": "reference"}
        spark.read.format(SOURCE).options(**options).load().collect()
        # references only: each rank reads its frames from the broker itself
        reader = spark.readStream.format(SOURCE).options(**options).load()
        query = (reader.writeStream.foreachBatch(self.handle_batch)
                 .option("checkpointLocation", str(self.out / "checkpoint" / "query"))
                 .trigger(processingTime=f"{self.opts.trigger} seconds")
                 .queryName(f"sparkmpi-stream-recon-{os.getpid()}").start())
        self.ready.set()
        self.last_data = time.monotonic()
        timed_out = False
        try:
            while not self.done.is_set():
                # pyspark annotates the timeout as int, but takes float seconds (x 1000 -> ms)
                if query.awaitTermination(0.25):  # type: ignore[arg-type]
                    break
                if self.busy or not self._idle(query):
                    self.last_data = time.monotonic()
                elif time.monotonic() - self.last_data > self.opts.end_timeout:
                    timed_out = True
                    break
        finally:
            try:
                query.stop()
            except Exception:  # noqa: BLE001 - stopping a failed query can raise again
                pass
        if self.error is not None:
            raise StreamReconError(_one_line(self.error)) from None
        exc = query.exception()
        if exc is not None and not self.done.is_set():
            raise StreamReconError(f"the streaming query failed: {_one_line(exc)}")
        if timed_out:
            return self._timeout()
        return 0

    @staticmethod
    def _idle(query: StreamingQuery) -> bool:
        """True when the query has started, runs no trigger and sees no new data."""
        if query.lastProgress is None and not query.recentProgress:
            return False  # still starting (planning the first batch)
        status = query.status
        return not (status.get("isTriggerActive") or status.get("isDataAvailable"))

    def _timeout(self) -> int:
        st = self.state
        scan = f"scan {st.scan!r}" if st.scan else "the scan"
        if st.start is None:
            print(f"error: no start record arrived within {self.opts.end_timeout:g} s at "
                  f"{self.url}; nothing to reconstruct", file=sys.stderr, flush=True)
            return 3
        used, total = st.counts["frames_used"], st.start["n_frames"]
        reason = (f"no end-of-scan record for {scan} within {self.opts.end_timeout:g} s of "
                  f"the last data ({used}/{total} frames used)")
        self.finalize(complete=False, reason=reason)
        saved = (f"saved the partial result in {self.out}/recon.cxi" if used
                 else f"no frame to reconstruct; counts in {self.out}/summary.json")
        print(f"error: {reason}; {saved}", file=sys.stderr, flush=True)
        return 3

    def _wait_for_streams(self) -> list[str]:
        from .broker import connect

        client = connect(self.url)
        deadline = time.monotonic() + self.opts.end_timeout
        said = False
        while True:
            count = client.hget(config_key(self.opts.prefix), "streams")
            if count is not None:
                return stream_keys(self.opts.prefix, int(count))
            if time.monotonic() > deadline:
                raise StreamReconError(
                    f"no publisher has set up streams under prefix {self.opts.prefix!r} at "
                    f"{self.url} within {self.opts.end_timeout:g} s (start 'sparkmpi-dl stream "
                    f"publish' with the same --broker)")
            if not said:
                self.say(f"waiting for a publisher at {self.url} (prefix {self.opts.prefix})")
                said = True
            time.sleep(0.2)


def _one_line(err: BaseException) -> str:
    """The first meaningful line of an error (no Py4J or JVM page); for a failed rank, its
    first line and the last line of its traceback."""
    text = str(err).strip()
    if getattr(err, "failure", None) is not None or text.startswith("rank "):
        lines = [ln.strip() for ln in text.splitlines() if ln.strip() and not ln.startswith("---")]
        if len(lines) > 1:
            return f"{lines[0]}: {lines[-1]}"
    for marker in ("JobFailed:", "StreamReconError:", "ValueError:", "RuntimeError:"):
        if marker in text:
            text = text.split(marker, 1)[1]
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    return lines[0] if lines else type(err).__name__


def open_out(options: ReconOptions) -> bool:
    """Start or continue the run in ``--out`` (the same command resumes); True if resumed."""
    from sparkmpi_dl.runs import open_run, read_run

    record = read_run(options.out)
    folder = open_run(options.out, RUN_KIND, options.run_config(),
                      resume=record is not None and record.get("kind") == RUN_KIND,
                      folder_flag="--out")
    return folder.resumed


def spark_session(ranks: int, master: str | None = None) -> SparkSession:
    """A Spark session with ``ranks`` task slots for the resident ranks and at least two for
    the micro-batches that feed them (local mode unless told)."""
    from sparkmpi_dl.launch.spark import spark_context
    from pyspark.sql import SparkSession

    master = master or f"local[{max(ranks + 2, os.cpu_count() or 1)}]"
    sc = spark_context(master=master, app_name="sparkmpi-dl stream recon",
                       conf={"spark.ui.enabled": "false",
                             "spark.sql.shuffle.partitions": str(max(ranks, 1)),
                             "spark.sql.streaming.stopTimeout": "30s"})
    sc.setLogLevel("OFF")  # failures reach the user as one line from this module
    active = SparkSession.getActiveSession()
    return SparkSession(sc) if active is None else active


def run_recon_while(options: ReconOptions, url: str, spark: SparkSession,
                    produce: Callable[[], _T]) -> tuple[int, OnlineReconstruction, _T | None]:
    """Start the reconstruction, and once it is ready (query running, ranks connected) call
    ``produce()`` (e.g. publish a scan), as at a beamline where the consumer is up before
    the scan starts; (exit code, the reconstruction, what ``produce`` returned). The streams
    must be set up already (``publish.prepare_streams``): the reconstruction waits for them."""
    open_out(options)
    recon = OnlineReconstruction(options, url, spark)
    outcome: dict[str, Any] = {}

    def consume() -> None:
        try:
            outcome["code"] = recon.run()
        except BaseException as err:  # noqa: BLE001 - raised again in the caller's thread
            outcome["error"] = err

    consumer = threading.Thread(target=consume, name="sparkmpi-stream-recon")
    consumer.start()
    while not recon.ready.wait(0.5):
        if not consumer.is_alive():
            break
    produced = produce() if recon.ready.is_set() else None
    consumer.join()
    if "error" in outcome:
        raise outcome["error"]
    return outcome["code"], recon, produced


def run_recon(options: ReconOptions, url: str,
              spark: SparkSession | None = None) -> tuple[int, OnlineReconstruction]:
    """Open the run folder and run the reconstruction; (exit code, the reconstruction)."""
    resumed = open_out(options)
    spark = spark or spark_session(options.ranks, options.master)
    recon = OnlineReconstruction(options, url, spark)
    if resumed:
        st = recon.state
        recon.say(f"resuming {options.out}: batch {st.batch} committed, "
                  f"{st.counts['frames_used']} frames used")
    return recon.run(), recon
