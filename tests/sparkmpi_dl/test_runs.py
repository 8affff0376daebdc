"""sparkmpi_dl.runs: new runs only into empty folders, resume explicit and checked."""
import json
from pathlib import Path

import pytest

from sparkmpi_dl.runs import RUN_FILE, RunFolderError, check_run, open_run, read_run


def test_new_run_records_its_config_and_refuses_a_used_folder(tmp_path: Path):
    check_run(tmp_path / "run", "trainer", {"width": 8}, resume=False)
    assert not (tmp_path / "run").exists()  # a check writes nothing
    folder = open_run(tmp_path / "run", "trainer", {"width": 8, "shape": (4, 4)}, resume=False)
    assert not folder.resumed
    record = json.loads((tmp_path / "run" / RUN_FILE).read_text())
    assert record["kind"] == "trainer" and record["config"] == {"width": 8, "shape": [4, 4]}
    with pytest.raises(RunFolderError, match=r"run already holds a run \(trainer\); a new run would "
                       r"mix with it: pass --resume to continue it, or choose another --out-dir"):
        open_run(tmp_path / "run", "trainer", {"width": 8}, resume=False, folder_flag="--out-dir")
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("x")
    with pytest.raises(RunFolderError, match="other is not empty"):
        open_run(tmp_path / "other", "trainer", {}, resume=False)


def test_resume_is_checked_against_the_recorded_config(tmp_path: Path):
    open_run(tmp_path, "trainer", {"width": 8, "epochs": 2, "lr": 0.1}, resume=False)
    with pytest.raises(RunFolderError, match=r"other arguments \(differs in \['width'\]\); use "
                       r"the same arguments to resume it, or another folder"):
        open_run(tmp_path, "trainer", {"width": 16, "epochs": 2, "lr": 0.1}, resume=True)
    with pytest.raises(RunFolderError, match="holds a run of kind 'trainer', not 'agent'"):
        open_run(tmp_path, "agent", {"width": 8}, resume=True)
    folder = open_run(tmp_path, "trainer", {"width": 8, "epochs": 5, "lr": 0.1}, resume=True,
                      may_change=("epochs",))
    assert folder.resumed and read_run(tmp_path)["config"]["epochs"] == 5
    assert len(read_run(tmp_path)["resumed"]) == 1
    with pytest.raises(RunFolderError, match="holds no run to continue"):
        open_run(tmp_path / "empty", "trainer", {}, resume=True)
