"""The resident MPI rank of the online reconstruction: frames, object and probe stay in memory
from one micro-batch to the next.

The driver starts the ranks once (:class:`sparkmpi_dl.dataplane.persistent.ResidentRanks`)
and feeds each micro-batch's partitions to them; :func:`serve` is each rank's loop. Per
batch a rank takes in its records (:mod:`sparkmpi_dl.stream.online`), keeps the frames it
accepted (frames stay on the rank that first received them), and with the other ranks that
hold frames runs the batch's iterations on the reconstruction it already holds: new frames
join it with exit waves ``P O`` of the current object and probe.

What a restarted driver needs is written as the batch goes (``StateDir``): the accepted
frames once (``frames/rank<r>-b<batch>.npz``), the used-frames bitmap, and the object,
probe and history (``b<batch>/shared.npz``). Exit waves are not written: after a restart
they start again from the committed object and probe (a few iterations' difference, not a
lost frame). The driver commits a batch only after every rank has answered it.
"""
from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from .online import (Columns, accept_frames, columns, end_records, entry_ms, last_ids,
                     range_columns, select_device, start_from_state, take_start)
from .records import ScanStart
from .state import StateDir, StreamState, save_npy, save_npz


def serve(feed: Any, root: str, backend: str) -> int:
    """A resident rank: one :class:`LiveRank` for every delivery of the feed; the number of
    deliveries served."""
    from mpi4py import MPI

    select_device(backend)
    import recon_env.engine  # noqa: F401 - imported now, not in the first batch's time

    live = LiveRank(StateDir(root), MPI.COMM_WORLD)
    served = 0
    for delivery in feed:
        ctx = delivery.message
        if ctx["op"] == "warm-up":
            delivery.reply({"rank": live.rank})
            continue
        live.load(StreamState.from_json(ctx["state"]))
        if ctx["op"] == "batch":
            delivery.reply(live.apply(delivery.table, ctx))
            live.work()  # the batch's iterations, while Spark reads and delivers the next one
        elif ctx["op"] == "final":
            delivery.reply({"rank": live.rank, "result": live.final(ctx)})
        else:
            raise ValueError(f"unknown operation {ctx['op']!r} from the driver")
        served += 1
    return served


class LiveRank:
    """One rank's frames and its share of the running reconstruction."""

    def __init__(self, sd: StateDir, world: Any) -> None:
        self.sd = sd
        self.world = world
        self.rank = int(world.rank)
        self.loaded = False
        self.start: ScanStart | None = None
        self.used: NDArray[np.bool_] | None = None
        self.intensities: list[NDArray[np.float32]] = []
        self.indices: list[NDArray[np.int64]] = []
        self.positions: NDArray[np.float64] = np.zeros((0, 2))
        self.shared: dict[str, Any] | None = None  # object, probe, iteration, history to resume from
        self.rec: Any = None
        self.sub: Any = None                # the ranks holding frames (rec's communicator)
        self.stale = False                  # frames arrived since rec was built
        self.pending: list[tuple[NDArray[np.float32], NDArray[np.float64]]] = []  # not yet in rec
        self.todo: tuple[dict[str, Any], int, int] | None = None  # (ctx, iterations, batch) after the reply
        self.done: list[dict[str, Any]] = []  # iterations finished since the last reply

    @property
    def n_frames(self) -> int:
        return int(sum(len(i) for i in self.indices))

    # ------------------------------------------------------------ (re)start
    def load(self, state: StreamState) -> None:
        """Once per process: what the committed state holds (nothing for a new scan)."""
        if self.loaded:
            return
        self.loaded = True
        if state.start is not None:
            self.start = start_from_state(self.sd, state.start)
        if state.used:
            self.used = np.load(self.sd.path(state.used))
        positions = []
        for rel in state.chunks.get(str(self.rank), []):
            with np.load(self.sd.path(rel)) as z:
                self.intensities.append(z["intensities"])
                self.indices.append(z["indices"])
                positions.append(z["positions"])
        if positions:
            self.positions = np.concatenate(positions)
        if state.shared:
            with np.load(self.sd.path(state.shared)) as z:
                self.shared = {"object": z["object"], "probe": z["probe"],
                               "iteration": int(z["iteration"]),
                               "history": json.loads(str(z["history"]))}
        self.stale = True

    # ------------------------------------------------------------ one micro-batch
    def apply(self, table: Any, ctx: dict[str, Any]) -> dict[str, Any]:
        """Take in this rank's partition of batch ``ctx['batch']`` and iterate (collective)."""
        from mpi4py import MPI

        t0 = time.perf_counter()
        world, rank, batch = self.world, self.rank, int(ctx["batch"])
        state = StreamState.from_json(ctx["state"])

        def log(text: str) -> None:
            print(f"batch {batch}: {text}", flush=True)

        cols = (columns(table) if table is not None else
                range_columns(ctx.get("ranges", {}).get(rank, []), ctx.get("url", "")))
        start, other_starts, new_start = take_start(world, cols, self.start, self.sd, log)
        self.start = start
        if self.used is None and start is not None:
            self.used = np.zeros(start.n_frames, bool)
        picked = accept_frames(world, cols, start, self.used, log)
        ends = end_records(cols, start.scan if start is not None else None)
        sent = [entry_ms(e) for e, k in zip(cols["entry_id"], cols["kind"]) if k == "frame"]
        stamps = [t for t in sent if t is not None]
        report: dict[str, Any] = {
            "rank": rank, "received": sum(1 for k in cols["kind"] if k == "frame"),
            "rejected": picked["rejected"], "duplicates": picked["duplicates"],
            "other_scans": picked["other_scans"] + other_starts,
            "accepted": len(picked["rows"]), "start": new_start, "ends": ends, "chunk": None,
            "shared": None, "metrics": None, "oldest_ms": min(stamps) if stamps else None,
            "last_ids": last_ids(cols), "schedules": []}
        self._report_done(report)
        if start is None:
            return report
        assert self.used is not None  # made above once the start record is known
        if picked["rows"]:
            report["chunk"] = self._keep_frames(cols, picked["rows"], batch)
        if len(picked["taken"]):
            self.used[picked["taken"]] = True
            if rank == 0:  # every rank computed the same bitmap
                path = self.sd.batch_dir(batch) / "used.npy"
                path.parent.mkdir(parents=True, exist_ok=True)
                save_npy(path, self.used)
                report["used"] = self.sd.rel(path)
        report["intake_s"] = time.perf_counter() - t0
        anyone_new = world.allreduce(len(picked["rows"]), op=MPI.SUM) > 0
        self.stale = self.stale or anyone_new
        # iterations start once enough of the scan is in: a few frames give an ill-posed
        # object and probe that later frames do not repair (see README "Live reconstruction")
        enough = self.used.sum() >= float(ctx.get("start_fraction", 0)) * start.n_frames
        scan_ends = state.end is None and world.allreduce(len(ends), op=MPI.SUM) > 0
        iterate = (anyone_new and enough) or scan_ends or bool(ctx.get("iterate_without_frames"))
        iterations = int(ctx.get("iterations", 0)) if anyone_new else 0
        if scan_ends:  # the last frames are in: their iterations and the final ones, now
            self.todo = (ctx, iterations, batch)
            self.work()
            self._report_done(report)
            report["final"] = self.final(ctx)
        elif iterate:
            self.todo = (ctx, iterations, batch)
        elif self.n_frames:
            report["waiting"] = not enough
        report["seconds"] = time.perf_counter() - t0
        return report

    def work(self) -> None:
        """The iterations the last batch asked for (collective), run after its reply: the
        driver commits the batch and Spark delivers the next one meanwhile. Their figures
        and image go with the next reply."""
        if self.todo is None:
            return
        ctx, iterations, batch = self.todo
        self.todo = None
        self._build(ctx)
        if self.rec is None:
            return
        saved = self._iterate_and_save(ctx, self.sd.batch_dir(batch), iterations)
        saved.pop("result")  # the driver reads the image from the shared file
        if saved.get("metrics") is not None:
            saved["metrics"]["batch"] = batch
        self.done.append({**saved, "frames_local": self.n_frames})

    def _report_done(self, report: dict[str, Any]) -> None:
        """Put the iterations finished since the last reply into ``report``: the latest
        figures and image, and every finished batch's schedule."""
        for saved in self.done:
            metrics = saved.get("metrics")
            if metrics is not None:
                report["schedules"].append({"batch": metrics["batch"],
                                            "schedule": metrics.get("schedule") or []})
            report.update(saved)
        self.done.clear()

    def _keep_frames(self, cols: Columns, rows: list[int], batch: int) -> str:
        """Keep the accepted frames in memory and write them once; their file, relative."""
        start = self.start
        assert start is not None  # frames are accepted only after the start record
        n = start.frame_shape[0]
        inten = np.stack([np.frombuffer(cols["data"][i], dtype=start.dtype).reshape(n, n)
                          for i in rows]).astype(np.float32, copy=False)
        indices = np.asarray([cols["frame_index"][i] for i in rows], np.int64)
        positions = np.asarray([[cols["pos_y"][i], cols["pos_x"][i]] for i in rows], np.float64)
        chunk = self.sd.frames_file(self.rank, batch)
        chunk.parent.mkdir(parents=True, exist_ok=True)
        save_npz(chunk, intensities=inten, indices=indices, positions=positions)
        self.intensities.append(inten)
        self.pending.append((inten, positions))
        self.indices.append(indices)
        self.positions = np.concatenate([self.positions, positions])
        return self.sd.rel(chunk)

    # ------------------------------------------------------------ the reconstruction
    def _build(self, ctx: dict[str, Any]) -> None:
        """Bring the new frames into the reconstruction (collective over every rank): they
        join the running one in place (``Reconstructor.add_frames``) when the ranks holding
        frames stay the same; else it is rebuilt, carrying over object, probe, history and
        exit waves. New frames start from ``P O`` either way."""
        if not self.stale:
            return
        self.stale = False
        world = self.world
        joining = world.allreduce(int(self.rec is None and self.n_frames > 0))
        running = world.allreduce(int(self.rec is not None))
        if running and not joining:
            grew = True
            if self.rec is not None:
                assert self.start is not None  # a reconstruction needs the start record
                n = self.start.frame_shape[0]
                inten = (np.concatenate([i for i, _ in self.pending]) if self.pending
                         else np.zeros((0, n, n), np.float32))
                pos = (np.concatenate([p for _, p in self.pending]) if self.pending
                       else np.zeros((0, 2)))
                grew = self.rec.add_frames(inten, pos)
            if not world.allreduce(int(not grew)):
                self.pending.clear()
                return
        self._rebuild(ctx)
        self.pending.clear()

    def _rebuild(self, ctx: dict[str, Any]) -> None:
        from mpi4py import MPI

        previous, old_frames = self.shared, 0
        if self.rec is not None:
            self.positions[:self.rec.local_frames] = self.rec.positions  # refined ones
            previous, old_frames = self.rec.snapshot(), self.rec.local_frames
        self.rec = None
        old_sub = self.sub
        self.sub = self.world.Split(0 if self.n_frames else MPI.UNDEFINED, self.rank)
        if old_sub is not None:
            old_sub.Free()
        if self.sub == MPI.COMM_NULL:
            self.sub = None
            return
        self.rec = self._reconstructor(ctx, previous)
        if previous is None:
            return
        k = int(getattr(self.rec, "K", 1))  # exit waves per frame (probe modes)
        psi = np.zeros(tuple(self.rec.psi.shape), np.complex64)
        if "psi" in previous:
            psi[:old_frames * k] = previous["psi"]
        else:  # resumed from the committed state: every frame starts from P O
            old_frames = 0
        self.rec.restore({"psi": psi, "object": previous["object"], "probe": previous["probe"],
                          "iteration": previous["iteration"], "history": previous["history"]})
        fresh = np.zeros(self.n_frames, bool)
        fresh[old_frames:] = True
        if fresh.any():
            self.rec.join_frames(fresh)

    def _reconstructor(self, ctx: dict[str, Any], previous: dict[str, Any] | None) -> Any:
        from recon_env.comm import MPIComm
        from recon_env.data import PtychoData
        from recon_env.engine import EngineConfig, Reconstructor

        start = self.start
        assert start is not None  # ranks hold frames only after the start record
        inten = np.concatenate(self.intensities)
        # restored from ``previous`` when there is one; else every rank must start alike
        probe = start.probe if start.probe is not None or previous is not None else \
            _global_probe(self.sub, inten)
        data = PtychoData(intensities=inten, positions=self.positions, mask=start.mask,
                          energy_ev=start.energy_ev, distance_m=start.distance_m,
                          detector_pixel_m=start.detector_pixel_m, probe_guess=probe,
                          object_shape=(start.object_shape[0], start.object_shape[1]))
        return Reconstructor(data, EngineConfig(**ctx.get("engine", {})),
                             backend=ctx.get("backend", "numpy"), comm=MPIComm(self.sub),
                             workers=int(ctx.get("threads", 1)), local=True)

    def _iterate_and_save(self, ctx: dict[str, Any], folder: Path, n: int) -> dict[str, Any]:
        """``n`` iterations, then the object/probe state to ``folder`` (first rank of sub)."""
        rec = self.rec
        t = time.perf_counter()
        done = iterate(rec, ctx, n)
        seconds = time.perf_counter() - t
        result = rec.result()  # collective (illumination): every rank of sub calls it
        if self.sub.rank != 0:
            return {"result": None}
        folder.mkdir(parents=True, exist_ok=True)
        save_npz(folder / "shared.npz", object=result["object"], probe=result["probe"],
                 illumination=result["illumination"].astype(np.float32), used=self.used,
                 iteration=np.int64(rec.iteration), history=np.array(json.dumps(rec.history)))
        errors = done["errors"]
        metrics = {"fourier_error": errors[-1] if errors else None,
                   "exit_change": done["exit_change"][-1] if errors else None,
                   "model_error": done["model_error"], "iteration": rec.iteration,
                   "iterations": len(errors), "iterate_s": seconds, "errors": errors,
                   "schedule": done["schedule"]}
        return {"metrics": metrics, "shared": self.sd.rel(folder / "shared.npz"),
                "result": result}

    def final(self, ctx: dict[str, Any]) -> dict[str, Any] | None:
        """The final iterations (collective); the result (object, probe, illumination,
        history, metrics) on the first rank holding frames, None elsewhere."""
        t = time.perf_counter()
        self._build(ctx)
        if self.rec is None:
            return None
        saved = self._iterate_and_save({**ctx, "model_error": True}, self.sd.root / "final",
                                       int(ctx.get("final_iterations", 0)))
        if saved["result"] is None:
            return None
        return {**saved["result"], "history": self.rec.history, "metrics": saved["metrics"],
                "seconds": time.perf_counter() - t}


def _global_probe(sub: Any, intensities: NDArray[np.float32]) -> NDArray[np.complex64]:
    """Probe guess from the mean amplitude of all ranks' frames (when the start record has
    none): every rank must start from the same probe."""
    from recon_env.comm import MPIComm

    comm = MPIComm(sub)
    total = comm.allreduce(intensities.astype(np.float64).sum(axis=0))
    count = comm.allreduce_scalars([len(intensities)])[0]
    amp = np.sqrt(np.maximum(total / max(count, 1), 0))
    return np.fft.fftshift(np.fft.ifft2(np.fft.ifftshift(amp), norm="ortho")).astype(np.complex64)


def iterate(rec: Any, ctx: dict[str, Any], n: int) -> dict[str, Any]:
    """``n`` iterations: the fixed relaxation of ``ctx``, or the tuning agent's choices."""
    before = len(rec.history["fourier_error"])
    schedule = None
    if n and ctx.get("agent"):
        from agents.steer import load_agent, steer

        schedule = steer(rec, load_agent(ctx["agent"]), every=ctx.get("agent_every"),
                         iterations=n)
        model_error = schedule[-1]["model_error"]
    elif n:
        model_error = rec.step(n, beta=ctx.get("beta"), algorithm=ctx.get("algorithm", "dm"),
                               model_error=bool(ctx.get("model_error", True)))["model_error"]
    else:
        model_error = rec.model_error() if ctx.get("model_error", True) else None
    return {"errors": rec.history["fourier_error"][before:],
            "exit_change": rec.history["exit_change"][before:],
            "model_error": None if model_error is None else float(model_error),
            "schedule": schedule}
