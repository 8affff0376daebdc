"""The MPI-rank side of the online reconstruction: one micro-batch, or the final iterations.

Every rank of a batch job gets its partition of the micro-batch as a ``pyarrow.Table``
(columns of :data:`sparkmpi_dl.stream.records.SCHEMA`) and:

1. takes the scan's start record (from the batch, or the committed state);
2. checks each frame (scan, index, shape, dtype, size, position, finite values) and rejects
   bad ones with a logged reason, counted, never fatal;
3. drops frames already used (in an earlier batch, or earlier in this one on any rank):
   every frame index is used exactly once;
4. appends the accepted frames to the frames it already owns (frames stay on the rank that
   first received them) and writes them once to the state folder;
5. with the ranks that own frames (an MPI sub-communicator), rebuilds the reconstructor
   from the previous batch's object, probe, exit waves and history, runs the batch's
   iterations, and writes its exit waves (and, on one rank, the shared object/probe state).

The driver commits the batch (``state.json``) only after every rank has returned.
"""
from __future__ import annotations

import json
import os
import time
from typing import Any

import numpy as np

from .records import ScanStart, parse_start
from .state import StateDir, StreamState, save_npy, save_npz

MAX_REJECT_LINES = 10  # per rank and batch; the rest are counted


def _columns(table) -> dict[str, list]:
    """Column lists of the partition (the frame bytes stay Arrow buffers until needed)."""
    if table is None or table.num_rows == 0:
        return {name: [] for name in ("kind", "scan", "frame_index", "pos_y", "pos_x", "shape",
                                      "dtype", "data", "meta", "stream", "entry_id")}
    return {name: table.column(name).to_pylist() for name in table.column_names}


def _start_meta(start: ScanStart) -> dict:
    return {**start.meta(), "scan": start.scan, "frame_shape": list(start.frame_shape),
            "dtype": start.dtype}


def _start_from_state(sd: StateDir, meta: dict) -> ScanStart:
    arrays = dict(np.load(sd.start_file)) if sd.start_file.exists() else {}
    return ScanStart(meta["scan"], int(meta["n_frames"]), tuple(meta["frame_shape"]),
                     meta["dtype"], tuple(meta["object_shape"]), meta["energy_ev"],
                     meta["distance_m"], meta["detector_pixel_m"], arrays.get("probe"),
                     arrays.get("mask"))


def _take_start(world, cols: dict, state: StreamState, sd: StateDir, log) -> tuple[ScanStart | None, int, dict | None]:
    """The scan's start record (known, or the first valid one in this batch by rank order).

    Returns (start, other-scan start records seen here, new start metadata or None)."""
    rank = world.rank
    mine = []
    for i, kind in enumerate(cols["kind"]):
        if kind == "start":
            try:
                mine.append(parse_start(cols["scan"][i], cols["shape"][i], cols["dtype"][i],
                                        cols["meta"][i], cols["data"][i]))
            except ValueError as err:
                log(f"rejected start record (stream {cols['stream'][i]} entry "
                    f"{cols['entry_id'][i]}): {err}")
    if state.start is not None:
        start = _start_from_state(sd, state.start)
        others = sum(1 for s in mine if s.scan != start.scan)
        for s in mine:
            if s.scan != start.scan:
                log(f"ignoring start record of scan {s.scan!r}: this reconstruction is of "
                    f"scan {start.scan!r}")
        return start, others, None
    owners = world.allgather(len(mine))
    owner = next((r for r, n in enumerate(owners) if n), None)
    if owner is None:
        return None, 0, None
    start = world.bcast(mine[0] if rank == owner else None, root=owner)
    if rank == owner:
        save_npz(sd.start_file, **{k: v for k, v in (("probe", start.probe), ("mask", start.mask))
                                   if v is not None})
    others = sum(1 for s in mine if s.scan != start.scan)
    return start, others, _start_meta(start)


def _check_frame(cols: dict, i: int, start: ScanStart | None) -> tuple[str, str] | None:
    """(reason key, message) if frame row i cannot be used, else None."""
    if start is None:
        return "no_start", f"no start record for scan {cols['scan'][i]!r} before this frame"
    index, shape, dtype = cols["frame_index"][i], cols["shape"][i], cols["dtype"][i]
    n = start.frame_shape[0]
    if index is None:
        return "index", "frame_index missing"
    if not 0 <= index < start.n_frames:
        return "index", f"frame_index {index} outside 0..{start.n_frames - 1}"
    if list(shape or []) != list(start.frame_shape):
        return "shape", f"shape {list(shape or [])} != {list(start.frame_shape)} of the scan"
    if dtype != start.dtype:
        return "dtype", f"dtype {dtype!r} != {start.dtype!r} of the scan"
    expected = n * n * np.dtype(dtype).itemsize
    if len(cols["data"][i] or b"") != expected:
        return "size", f"{len(cols['data'][i] or b'')} bytes of data, expected {expected}"
    y, x = cols["pos_y"][i], cols["pos_x"][i]
    if y is None or x is None or not (np.isfinite(y) and np.isfinite(x)):
        return "position", "position missing or not finite"
    oy, ox = start.object_shape
    if round(y) < 0 or round(x) < 0 or round(y) + n > oy or round(x) + n > ox:
        return "position", f"window at ({y:g}, {x:g}) outside the object {oy}x{ox}"
    return None


def _accept_frames(world, cols: dict, start: ScanStart | None, used: np.ndarray | None,
                   log) -> dict[str, Any]:
    """Valid, not yet used frames of this rank's partition, after a global duplicate check."""
    rejected: dict[str, int] = {}
    lines = 0
    candidates: list[int] = []
    other_scans = 0
    for i, kind in enumerate(cols["kind"]):
        if kind != "frame":
            if kind not in ("start", "end"):
                rejected["kind"] = rejected.get("kind", 0) + 1
                log(f"rejected entry {cols['entry_id'][i]} of stream {cols['stream'][i]}: "
                    f"unknown kind {kind!r}")
            continue
        if start is not None and cols["scan"][i] != start.scan:
            other_scans += 1
            continue
        bad = _check_frame(cols, i, start)
        if bad is None:
            frame = np.frombuffer(cols["data"][i], dtype=start.dtype)
            if not np.all(np.isfinite(frame)):
                bad = ("non_finite", "frame holds NaN or inf")
        if bad is not None:
            rejected[bad[0]] = rejected.get(bad[0], 0) + 1
            lines += 1
            if lines <= MAX_REJECT_LINES:
                log(f"rejected frame {cols['frame_index'][i]} (stream {cols['stream'][i]} "
                    f"entry {cols['entry_id'][i]}): {bad[1]}")
            continue
        candidates.append(i)
    if lines > MAX_REJECT_LINES:
        log(f"... and {lines - MAX_REJECT_LINES} more rejected frames in this batch")
    indices = np.asarray([cols["frame_index"][i] for i in candidates], dtype=np.int64)
    every = world.allgather(indices)
    # a frame index is taken by its first occurrence in (rank, row) order, if not used before
    offset = sum(len(v) for v in every[:world.rank])
    combined = np.concatenate(every) if every else np.zeros(0, np.int64)
    first = np.zeros(len(combined), bool)
    if len(combined):
        _, where = np.unique(combined, return_index=True)
        first[where] = True
        if used is not None:
            first &= ~used[combined]
    keep = first[offset:offset + len(indices)]
    rows = [i for i, k in zip(candidates, keep) if k]
    return {"rows": rows, "rejected": rejected, "duplicates": int((~keep).sum()),
            "other_scans": other_scans, "taken": combined[first]}


def _ends(cols: dict, scan: str | None) -> list[dict]:
    out = []
    for i, kind in enumerate(cols["kind"]):
        if kind == "end" and (scan is None or cols["scan"][i] == scan):
            try:
                meta = json.loads(cols["meta"][i] or "{}")
            except ValueError:
                meta = {}
            out.append({"scan": cols["scan"][i], **meta,
                        "end_ms": _entry_ms(cols["entry_id"][i])})
    return out


def _last_ids(cols: dict) -> dict[str, str]:
    """The last entry id read from each stream (entries arrive in stream order)."""
    return {stream: eid for stream, eid in zip(cols["stream"], cols["entry_id"])}


def _entry_ms(entry_id: str | None) -> int | None:
    """Publication time of a Redis entry (its id is ``<unix ms>-<seq>``), None otherwise."""
    try:
        return int(str(entry_id).split("-", 1)[0])
    except ValueError:
        return None


def _select_device(backend: str) -> None:
    """One GPU per rank (local rank modulo device count), before any CUDA call."""
    if backend != "cupy":
        return
    import cupy

    local = next((int(os.environ[k]) for k in ("MPI_LOCALRANKID", "PMI_RANK", "PMIX_RANK")
                  if k in os.environ), 0)
    cupy.cuda.Device(local % cupy.cuda.runtime.getDeviceCount()).use()


def _load_frames(sd: StateDir, files: list[str]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    inten, idx, pos = [], [], []
    for rel in files:
        with np.load(sd.path(rel)) as z:
            inten.append(z["intensities"])
            idx.append(z["indices"])
            pos.append(z["positions"])
    if not inten:
        return np.zeros((0, 0, 0), np.float32), np.zeros(0, np.int64), np.zeros((0, 2))
    return np.concatenate(inten), np.concatenate(idx), np.concatenate(pos)


def _global_probe(sub, start: ScanStart, intensities: np.ndarray) -> np.ndarray:
    """Probe guess from the mean amplitude of all ranks' frames (when the start record has
    none): every rank must start from the same probe."""
    from recon_env.comm import MPIComm

    comm = MPIComm(sub)
    total = comm.allreduce(intensities.astype(np.float64).sum(axis=0))
    count = comm.allreduce_scalars([len(intensities)])[0]
    amp = np.sqrt(np.maximum(total / max(count, 1), 0))
    return np.fft.fftshift(np.fft.ifft2(np.fft.ifftshift(amp), norm="ortho")).astype(np.complex64)


def start_exit_waves(rec, frames: np.ndarray) -> None:
    """psi_j = P_j O_j (current object and probe) for the frames flagged in ``frames``: how
    frames join a running reconstruction. The engine does this when a refined position
    moves a frame; its ``_restart_frames`` is the hook (sub-pixel views and probe modes
    included), used here rather than re-deriving the engine's views."""
    if frames.any():
        rec._restart_frames(np.asarray(frames, bool))


def _reconstructor(sub, sd: StateDir, state: StreamState, start: ScanStart, rank: int,
                   frames: tuple, n_old: int, options: dict):
    """A Reconstructor over this rank's frames in the state the last committed batch left."""
    from recon_env.comm import MPIComm
    from recon_env.data import PtychoData
    from recon_env.engine import EngineConfig, Reconstructor

    inten, _, positions = frames
    shared = None
    if state.shared:
        with np.load(sd.path(state.shared)) as z:
            shared = {name: z[name] for name in z.files}
    # restored below when there is a previous state; else every rank must start alike
    probe = start.probe if start.probe is not None or shared is not None else \
        _global_probe(sub, start, inten)
    data = PtychoData(intensities=inten, positions=positions, mask=start.mask,
                      energy_ev=start.energy_ev, distance_m=start.distance_m,
                      detector_pixel_m=start.detector_pixel_m, probe_guess=probe,
                      object_shape=tuple(start.object_shape))
    config = EngineConfig(**options.get("engine", {}))
    rec = Reconstructor(data, config, backend=options.get("backend", "numpy"),
                        comm=MPIComm(sub), workers=int(options.get("threads", 1)), local=True)
    if shared is None:
        return rec, None
    k = int(getattr(rec, "K", 1))  # exit waves per frame (probe modes)
    psi = np.zeros(tuple(rec.psi.shape), np.complex64)
    if n_old:
        old = np.load(sd.path(state.psi[str(rank)]))
        if old.shape[0] != n_old * k:
            raise ValueError(f"rank {rank}: saved exit waves hold {old.shape[0] // k} frames, "
                             f"the state says {n_old}")
        psi[:n_old * k] = old
    history = json.loads(str(shared["history"]))
    rec.restore({"psi": psi, "object": shared["object"], "probe": shared["probe"],
                 "iteration": int(shared["iteration"]), "history": history})
    fresh = np.zeros(len(positions), bool)
    fresh[n_old:] = True
    start_exit_waves(rec, fresh)
    return rec, shared


def _iterate(rec, ctx: dict, n: int) -> dict:
    """``n`` iterations: the fixed relaxation of ``ctx``, or the tuning agent's choices."""
    before = len(rec.history["fourier_error"])
    schedule = None
    if n and ctx.get("agent"):
        from agents.steer import load_agent, steer

        schedule = steer(rec, load_agent(ctx["agent"]), every=ctx.get("agent_every"),
                         iterations=n)
        model_error = schedule[-1]["model_error"]
    elif n:
        model_error = rec.step(n, beta=ctx.get("beta"), algorithm=ctx.get("algorithm", "dm"))[
            "model_error"]
    else:
        model_error = rec.model_error()
    return {"errors": rec.history["fourier_error"][before:],
            "exit_change": rec.history["exit_change"][before:],
            "model_error": float(model_error), "schedule": schedule}


def _iterate_and_save(rec, sub, sd: StateDir, batch_dir, rank: int, used: np.ndarray,
                      ctx: dict, n: int) -> dict:
    t = time.perf_counter()
    done = _iterate(rec, ctx, n)
    seconds = time.perf_counter() - t
    result = rec.result()  # collective (illumination): every rank of `sub` calls it
    save_npy(batch_dir / f"rank{rank}-psi.npy", rec.ops.to_host(rec.psi))
    metrics = None
    if sub.rank == 0:
        save_npz(batch_dir / "shared.npz", object=result["object"], probe=result["probe"],
                 illumination=result["illumination"].astype(np.float32), used=used,
                 iteration=np.int64(rec.iteration), history=np.array(json.dumps(rec.history)))
        errors = done["errors"]
        metrics = {"fourier_error": errors[-1] if errors else None,
                   "exit_change": done["exit_change"][-1] if errors else None,
                   "model_error": done["model_error"], "iteration": rec.iteration,
                   "iterations": len(errors), "iterate_s": seconds, "errors": errors,
                   "schedule": done["schedule"]}
    return {"metrics": metrics, "psi": sd.rel(batch_dir / f"rank{rank}-psi.npy"),
            "shared": sd.rel(batch_dir / "shared.npz") if sub.rank == 0 else None,
            "result": result if sub.rank == 0 else None}


def run_batch(table, ctx: dict) -> dict:
    """One micro-batch on this rank (called by the data plane with this rank's partition)."""
    from mpi4py import MPI

    t0 = time.perf_counter()
    world = MPI.COMM_WORLD
    rank = world.rank
    sd = StateDir(ctx["root"])
    state = StreamState.from_json(ctx["state"])
    batch = int(ctx["batch"])
    _select_device(ctx.get("backend", "numpy"))

    def log(text: str) -> None:
        print(f"batch {batch}: {text}", flush=True)

    cols = _columns(table)
    start, other_starts, new_start = _take_start(world, cols, state, sd, log)
    used = None
    if state.used:
        used = np.load(sd.path(state.used))
    elif start is not None:
        used = np.zeros(start.n_frames, bool)
    picked = _accept_frames(world, cols, start, used, log)
    ends = _ends(cols, start.scan if start is not None else None)
    n_received = sum(1 for k in cols["kind"] if k == "frame")
    stamps = [_entry_ms(e) for e, k in zip(cols["entry_id"], cols["kind"]) if k == "frame"]
    stamps = [t for t in stamps if t is not None]
    report: dict[str, Any] = {"rank": rank, "received": n_received, "rejected": picked["rejected"],
                              "duplicates": picked["duplicates"],
                              "other_scans": picked["other_scans"] + other_starts,
                              "accepted": len(picked["rows"]), "start": new_start, "ends": ends,
                              "chunk": None, "psi": None, "shared": None, "metrics": None,
                              "oldest_ms": min(stamps) if stamps else None,
                              "last_ids": _last_ids(cols)}
    if start is None:
        return report
    old_files = list(state.chunks.get(str(rank), []))
    rows = picked["rows"]
    if rows:
        n = start.frame_shape[0]
        inten = np.stack([np.frombuffer(cols["data"][i], dtype=start.dtype).reshape(n, n)
                          for i in rows]).astype(np.float32, copy=False)
        chunk = sd.frames_file(rank, batch)
        chunk.parent.mkdir(parents=True, exist_ok=True)
        save_npz(chunk, intensities=inten,
                 indices=np.asarray([cols["frame_index"][i] for i in rows], np.int64),
                 positions=np.asarray([[cols["pos_y"][i], cols["pos_x"][i]] for i in rows]))
        report["chunk"] = sd.rel(chunk)
    files = old_files + ([report["chunk"]] if report["chunk"] else [])
    frames = _load_frames(sd, files)
    n_old = len(frames[1]) - len(rows)
    if used is not None and len(picked["taken"]):
        used[picked["taken"]] = True
        if rank == 0:  # every rank computed the same bitmap
            path = sd.batch_dir(batch) / "used.npy"
            path.parent.mkdir(parents=True, exist_ok=True)
            save_npy(path, used)
            report["used"] = sd.rel(path)
    report["load_s"] = time.perf_counter() - t0
    # iterations start once enough of the scan is in: a few frames give an ill-posed
    # object and probe that later frames do not repair (see README "Live reconstruction")
    enough = used is not None and used.sum() >= float(ctx.get("start_fraction", 0)) * start.n_frames
    has_frames = len(frames[1]) > 0
    sub = world.Split(0 if has_frames else MPI.UNDEFINED, rank)
    anyone_new = world.allreduce(len(rows), op=MPI.SUM) > 0
    # the end of the scan is in this batch (on some rank): finish in the same job
    scan_ends = state.end is None and world.allreduce(len(ends), op=MPI.SUM) > 0
    if has_frames and ((anyone_new and enough) or scan_ends or ctx.get("iterate_without_frames")):
        batch_dir = sd.batch_dir(batch)
        batch_dir.mkdir(parents=True, exist_ok=True)
        rec, _ = _reconstructor(sub, sd, state, start, rank, frames, n_old, ctx)
        saved = _iterate_and_save(rec, sub, sd, batch_dir, rank, used, ctx,
                                  int(ctx.get("iterations", 0)) if anyone_new else 0)
        saved.pop("result")
        report.update(saved)
        report["frames_local"] = len(frames[1])
        if scan_ends:
            report["final"] = _final(rec, sub, sd, rank, used, ctx)
    elif has_frames:  # no iterations: keep the committed files
        report["psi"] = state.psi.get(str(rank))
        report["waiting"] = not enough
    if sub != MPI.COMM_NULL:
        sub.Free()
    report["seconds"] = time.perf_counter() - t0
    return report


def run_final(ctx: dict) -> dict:
    """The final iterations after the end of the scan (or a timeout) on every rank; rank 0 of
    the ranks holding frames returns the result (object, probe, illumination, history)."""
    from mpi4py import MPI

    world = MPI.COMM_WORLD
    rank = world.rank
    sd = StateDir(ctx["root"])
    state = StreamState.from_json(ctx["state"])
    _select_device(ctx.get("backend", "numpy"))
    start = _start_from_state(sd, state.start)
    frames = _load_frames(sd, list(state.chunks.get(str(rank), [])))
    has_frames = len(frames[1]) > 0
    sub = world.Split(0 if has_frames else MPI.UNDEFINED, rank)
    if not has_frames:
        return {"rank": rank, "result": None}
    rec, _ = _reconstructor(sub, sd, state, start, rank, frames, len(frames[1]), ctx)
    out = {"rank": rank, "result": _final(rec, sub, sd, rank, np.load(sd.path(state.used)), ctx)}
    sub.Free()
    return out


def _final(rec, sub, sd: StateDir, rank: int, used: np.ndarray, ctx: dict) -> dict | None:
    """The final iterations; the result (object, probe, illumination, history) on the
    first rank of ``sub``, None on the others."""
    t = time.perf_counter()
    final_dir = sd.root / "final"
    final_dir.mkdir(exist_ok=True)
    saved = _iterate_and_save(rec, sub, sd, final_dir, rank, used, ctx,
                              int(ctx.get("final_iterations", 0)))
    if sub.rank != 0:
        return None
    return {**saved["result"], "history": rec.history, "metrics": saved["metrics"],
            "seconds": time.perf_counter() - t}
