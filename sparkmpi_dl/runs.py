"""Run folders: one convention for every job that writes into a folder and may continue.

Used by ``sparkmpi-dl train`` (trainers), ``agent train`` (agents), the quality estimator
(recon_datasets) and ``recon``. The rules:

* A run folder records what made it in ``run.json``: the job ``kind`` and its ``config``
  (the arguments that decide the result; plain JSON values).
* A **new** run goes only into a folder that is absent or empty. A folder that holds
  anything is refused with one line (``RunFolderError``): a new run never mixes its
  checkpoints, logs or TensorBoard events with an old one. (We refuse rather than pick a
  fresh numbered folder such as SB3's ``DQN_1``, ``DQN_2``: the output lands exactly
  where the user said, and scripts can rely on the path.)
* **Resuming is explicit** (``--resume``, ``resume=True``) and checked: the folder must
  hold a run of the same kind whose recorded config equals the new one, except for the
  keys the job lets change on resume (``may_change``, e.g. a larger step or epoch count).
  A mismatch is refused naming the differing keys, as ``dataset build`` does.

Only one process per run calls :func:`open_run` (the driver, or rank 0): it writes
``run.json`` atomically. Typical use::

    folder = open_run(out, "trainer", config_dict, resume=args.resume,
                      may_change=("epochs",), folder_flag="--out-dir")
    if folder.resumed: ...restore the checkpoint...
"""
from __future__ import annotations

import json
import os
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

RUN_FILE = "run.json"
FORMAT = "sparkmpi-dl run/1"


class RunFolderError(ValueError):
    """A run folder that cannot take this run; the message is one line naming the folder."""


@dataclass(frozen=True)
class RunFolder:
    """An opened run folder: where it is, whether it continues an earlier run, its record."""

    path: Path
    resumed: bool
    record: dict[str, Any]


def _plain(config: Mapping[str, Any]) -> dict[str, Any]:
    """The config as JSON would give it back (tuples -> lists), so comparisons are fair."""
    plain: dict[str, Any] = json.loads(json.dumps(dict(config), default=str))
    return plain


def read_run(folder: str | Path) -> dict[str, Any] | None:
    """The parsed ``run.json`` of ``folder``, None if there is none; errors name the file."""
    path = Path(folder) / RUN_FILE
    if not path.is_file():
        return None
    try:
        record = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise RunFolderError(f"{path} is not readable JSON ({err}); choose another folder") from None
    if not isinstance(record, dict) or record.get("format") != FORMAT:
        raise RunFolderError(f"{path} is not a sparkmpi-dl run record; choose another folder")
    return record


def config_diff(old: Mapping[str, Any], new: Mapping[str, Any],
                ignore: Iterable[str] = ()) -> list[str]:
    """Sorted keys whose values differ between two configs (``ignore`` left out)."""
    old, new, skip = _plain(old), _plain(new), set(ignore)
    return sorted(k for k in set(old) | set(new) if k not in skip and old.get(k) != new.get(k))


def _write(path: Path, record: dict[str, Any]) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(record, indent=2) + "\n")
    os.replace(tmp, path)


def check_run(folder: str | Path, kind: str, config: Mapping[str, Any], *, resume: bool,
              may_change: Iterable[str] = (), resume_flag: str = "--resume",
              folder_flag: str = "another folder") -> None:
    """Raise RunFolderError where :func:`open_run` would; writes nothing.

    For a driver that wants the one-line refusal before it starts ranks, one of which
    then calls :func:`open_run`.
    """
    _open(folder, kind, config, resume, may_change, resume_flag, folder_flag, write=False)


def open_run(folder: str | Path, kind: str, config: Mapping[str, Any], *, resume: bool,
             may_change: Iterable[str] = (), resume_flag: str = "--resume",
             folder_flag: str = "another folder") -> RunFolder:
    """Start a new run in ``folder`` or continue the one there; refuse anything else.

    ``resume=False``: ``folder`` must be absent or empty; it is created and ``run.json``
    written. ``resume=True``: ``folder`` must hold a ``kind`` run whose config equals
    ``config`` apart from ``may_change`` (whose new values are recorded). ``resume_flag``
    and ``folder_flag`` name the options in the messages (e.g. ``--run-dir``).
    """
    return _open(folder, kind, config, resume, may_change, resume_flag, folder_flag, write=True)


def _open(folder: str | Path, kind: str, config: Mapping[str, Any], resume: bool,
          may_change: Iterable[str], resume_flag: str, folder_flag: str,
          write: bool) -> RunFolder:
    path = Path(folder)
    new = _plain(config)
    where = f"another {folder_flag}" if folder_flag.startswith("-") else folder_flag
    if path.exists() and not path.is_dir():
        raise RunFolderError(f"{path} is a file, not a run folder; choose {where}")
    record = read_run(path) if path.is_dir() else None
    if not resume:
        if path.is_dir() and any(path.iterdir()):
            held = (f"already holds a run ({record.get('kind')})" if record is not None
                    else "is not empty")
            raise RunFolderError(
                f"{path} {held}; a new run would mix with it: pass {resume_flag} to continue "
                f"it, or choose {where}")
        record = {"format": FORMAT, "kind": kind, "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                  "resumed": [], "config": new}
        if write:
            path.mkdir(parents=True, exist_ok=True)
            _write(path / RUN_FILE, record)
        return RunFolder(path, False, record)
    if record is None:
        raise RunFolderError(f"{resume_flag}: {path} holds no run to continue (no {RUN_FILE}); "
                             f"drop {resume_flag} to start a new run there, or choose {where}")
    if record.get("kind") != kind:
        raise RunFolderError(f"{resume_flag}: {path} holds a run of kind {record.get('kind')!r}, "
                             f"not {kind!r}; choose {where}")
    diff = config_diff(record.get("config") or {}, new, ignore=may_change)
    if diff:
        raise RunFolderError(f"{path} holds a run ({kind}) made with other arguments (differs in "
                             f"{diff}); use the same arguments to resume it, or {where}")
    record = {**record, "config": {**record.get("config", {}), **new},
              "resumed": [*record.get("resumed", []), time.strftime("%Y-%m-%dT%H:%M:%S%z")]}
    if write:
        _write(path / RUN_FILE, record)
    return RunFolder(path, True, record)
