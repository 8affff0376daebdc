"""The wheel a user installs: package data, extras, license, and only dependencies in use."""
import os
import re
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
PACKAGES = ("sparkmpi_dl", "agents", "recon_env", "trainers", "recon_datasets")
# distribution name -> the module the project imports from it
IMPORT_NAME = {"tensorflow-cpu": "tensorflow", "pyyaml": "yaml"}
# needed without an import: the MPI runtime (bin/mpiexec, lib/libmpi.so) mpi4py and Horovod use
RUNTIME_ONLY = {"mpich"}


def _pyproject() -> dict:
    return tomllib.loads((REPO / "pyproject.toml").read_text())


def _dist_name(requirement: str) -> str:
    return re.split(r"[<>=!~;\[ ]", requirement, maxsplit=1)[0].strip().lower()


def test_wheel_carries_pretrained_agent_log_config_and_license(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps",
                           "--no-build-isolation", "-q", str(REPO), "-w", str(tmp_path)],
                          capture_output=True, text=True, timeout=240, cwd=REPO)
    assert proc.returncode == 0, proc.stderr[-3000:]
    (wheel,) = tmp_path.glob("sparkmpi_dl-*.whl")
    with zipfile.ZipFile(wheel) as zf:
        names = set(zf.namelist())
        metadata = zf.read(next(n for n in names if n.endswith(".dist-info/METADATA"))).decode()
    pretrained = {str(p.relative_to(REPO)) for p in (REPO / "agents" / "pretrained").rglob("*")
                  if p.is_file()}
    assert pretrained and pretrained <= names, sorted(pretrained - names)
    assert "sparkmpi_dl/launch/log4j2-quiet.properties" in names
    assert any(n.endswith(".dist-info/licenses/LICENSE") for n in names)
    assert "License-Expression: MIT" in metadata
    for extra, dist in (("gpu", "cupy-cuda12x"), ("stream", "redis")):
        assert f"Provides-Extra: {extra}" in metadata
        assert re.search(rf"Requires-Dist: {dist}\S*; extra == \"{extra}\"", metadata), metadata


def test_license_names_the_project_developers():
    text = (REPO / "LICENSE").read_text()
    assert text.startswith("MIT License") and "sparkmpi_dl developers" in text


def _imported_modules() -> set[str]:
    found: set[str] = set()
    pattern = re.compile(r"^\s*(?:from\s+([\w.]+)\s+import|import\s+([\w.]+))", re.M)
    for package in PACKAGES:
        for path in (REPO / package).rglob("*.py"):
            for match in pattern.finditer(path.read_text(encoding="utf-8")):
                found.add((match.group(1) or match.group(2)).split(".")[0])
    return found


def test_every_dependency_is_imported_by_the_project():
    imported = _imported_modules()
    project = _pyproject()["project"]
    requirements = list(project["dependencies"])
    for extra in project.get("optional-dependencies", {}).values():
        requirements += extra
    unused = []
    for requirement in requirements:
        dist = _dist_name(requirement)
        if dist in RUNTIME_ONLY:
            continue
        module = IMPORT_NAME.get(dist, dist.split("-")[0].replace("-", "_"))
        if module not in imported:
            unused.append(dist)
    assert not unused, f"dependencies nothing imports: {unused}"
    assert os.access(Path(sys.executable).parent / "mpiexec", os.X_OK)  # what mpich is for
