"""The dependency direction the code states, checked on every project module's imports.

    sparkmpi_dl (core)  <-  recon_env  <-  agents, recon_datasets, trainers, sparkmpi_dl.stream

A module may import its own layer and the layers below, never a layer above. Imports are
read with ``ast`` (module-level and function-local ones, ``importlib.import_module`` of a
literal name, and any string that is exactly a project module's name, as in a table of
modules to import later), so a dependency hidden in a function body still counts. A lower layer
that needs a higher one's code gets it through an interface it owns: the CLI's
subcommands and the tuning env's quality estimator arrive through entry points
(pyproject.toml) that the higher packages declare.

No import cycle either, between modules (imports under ``if TYPE_CHECKING:`` never run
and are left out) or between the packages of one layer.
"""
from __future__ import annotations

import ast
import functools
import os
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("sparkmpi_dl", "recon_env", "agents", "recon_datasets", "trainers")
# Longest matching prefix wins. sparkmpi_dl.stream (live reconstruction) is an application
# built on recon_env and agents, so it sits with them although it lives under sparkmpi_dl.
LAYERS = {
    "sparkmpi_dl": 0,
    "recon_env": 1,
    "agents": 2, "recon_datasets": 2, "trainers": 2, "sparkmpi_dl.stream": 2,
}


@dataclass(frozen=True)
class Edge:
    source: str
    target: str
    where: str  # path:line
    runtime: bool  # False under `if TYPE_CHECKING:`, and for a module only named by a string


@functools.cache
def project_edges() -> list[Edge]:
    """The import edges of the project's modules (read once per test session)."""
    return import_edges(project_modules())


def project_modules() -> dict[str, Path]:
    """Every module of the five packages, by dotted name."""
    modules = {}
    for package in PACKAGES:
        for path in sorted((REPO / package).rglob("*.py")):
            parts = list(path.relative_to(REPO).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            modules[".".join(parts)] = path
    return modules


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _imported_names(node: ast.AST, package: str) -> Iterator[str]:
    """The dotted names an import node (or an import_module("literal") call) brings in."""
    if isinstance(node, ast.Import):
        yield from (alias.name for alias in node.names)
    elif isinstance(node, ast.ImportFrom):
        if node.level:
            base = package.split(".")[: len(package.split(".")) - node.level + 1]
            module = ".".join(base + ([node.module] if node.module else []))
        else:
            module = node.module or ""
        yield module
        yield from (f"{module}.{alias.name}" for alias in node.names)
    elif (isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant)
          and isinstance(node.args[0].value, str)
          and ((isinstance(node.func, ast.Attribute) and node.func.attr == "import_module")
               or (isinstance(node.func, ast.Name) and node.func.id in ("import_module", "__import__")))):
        yield node.args[0].value


def _walk(node: ast.AST, runtime: bool = True) -> Iterator[tuple[ast.AST, bool]]:
    for child in ast.iter_child_nodes(node):
        if isinstance(child, ast.If) and _is_type_checking(child.test):
            for grandchild in child.body:
                yield grandchild, False
                yield from _walk(grandchild, False)
            for grandchild in child.orelse:
                yield grandchild, runtime
                yield from _walk(grandchild, runtime)
            continue
        yield child, runtime
        yield from _walk(child, runtime)


def import_edges(modules: dict[str, Path]) -> list[Edge]:
    """Module -> project module edges; a name resolves to the longest project module it
    names, and a module's own parent packages (imported first anyway) are left out."""
    edges = []
    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        for node, runtime in _walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
            if isinstance(node, ast.Constant) and node.value in modules and node.value != name:
                # a module named by a string (imported elsewhere, maybe): a dependency, but
                # not an import for the cycle check (an entry-point group may share its name)
                where = f"{path.relative_to(REPO)}:{node.lineno}"
                edges.append(Edge(name, node.value, where, False))
                continue
            targets = set()
            for imported in _imported_names(node, package):
                while imported and imported not in modules:
                    imported = imported.rpartition(".")[0]
                if imported and imported != name and not name.startswith(imported + "."):
                    targets.add(imported)
            # `from pkg import sub`: the edge is to pkg.sub, not (also) to pkg
            for target in targets:
                if not any(other.startswith(target + ".") for other in targets):
                    where = f"{path.relative_to(REPO)}:{getattr(node, 'lineno', '?')}"
                    edges.append(Edge(name, target, where, runtime))
    return list(dict.fromkeys(edges))  # a call naming its module once as a string, too


def component(module: str) -> str:
    return max((prefix for prefix in LAYERS if module == prefix or module.startswith(prefix + ".")),
               key=len)


def upward(edges: list[Edge]) -> list[str]:
    return sorted({f"{e.where}: {e.source} imports {e.target} (layer {LAYERS[component(e.target)]} "
            f"above {LAYERS[component(e.source)]})"
            for e in edges if LAYERS[component(e.target)] > LAYERS[component(e.source)]})


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one node (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found = []
    for root in sorted(graph):
        if root in index:
            continue
        work = [(root, iter(sorted(graph.get(root, ()))))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph.get(child, ())))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                members = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    members.append(member)
                    if member == node:
                        break
                if len(members) > 1:
                    found.append(sorted(members))
    return found


def _describe(cycle: list[str], edges: list[Edge]) -> str:
    inside = set(cycle)
    lines = sorted({f"    {e.where}: {e.source} -> {e.target}" for e in edges
                    if e.runtime and e.source in inside and e.target in inside})
    return " <-> ".join(cycle) + "\n" + "\n".join(lines)


# ---- the checker on made-up packages: it finds what it must, and only that -------------------

def _tree(tmp_path: Path, files: dict[str, str]) -> dict[str, Path]:
    modules = {}
    for rel, text in files.items():
        path = tmp_path / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text))
        parts = list(Path(rel).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        modules[".".join(parts)] = path
    return modules


def test_checker_sees_function_local_upward_imports_and_cycles(tmp_path, monkeypatch):
    monkeypatch.setattr(sys.modules[__name__], "REPO", tmp_path)
    modules = _tree(tmp_path, {
        "sparkmpi_dl/__init__.py": "",
        "sparkmpi_dl/a.py": "def f():\n    import importlib\n    importlib.import_module('recon_env.b')\n",
        "sparkmpi_dl/c.py": "def g():\n    from sparkmpi_dl import d\n",
        "sparkmpi_dl/f.py": "STAGES = ('agents.demo',)\n",
        "agents/__init__.py": "",
        "agents/demo.py": "",
        "sparkmpi_dl/d.py": "from . import c\n",
        "sparkmpi_dl/stream/__init__.py": "from recon_env import b\n",
        "recon_env/__init__.py": "",
        "recon_env/b.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from recon_env import e\n",
        "recon_env/e.py": "import recon_env.b\nimport sparkmpi_dl.stream\n",
    })
    edges = import_edges(modules)
    assert upward(edges) == [
        "recon_env/e.py:2: recon_env.e imports sparkmpi_dl.stream (layer 2 above 1)",
        "sparkmpi_dl/a.py:3: sparkmpi_dl.a imports recon_env.b (layer 1 above 0)",
        "sparkmpi_dl/f.py:1: sparkmpi_dl.f imports agents.demo (layer 2 above 0)"]
    graph: dict[str, set[str]] = {}
    for e in edges:
        if e.runtime:
            graph.setdefault(e.source, set()).add(e.target)
    assert cycles(graph) == [["sparkmpi_dl.c", "sparkmpi_dl.d"]]  # b <-> e only under TYPE_CHECKING


# ---- the project ---------------------------------------------------------------------------

def test_no_module_imports_a_layer_above_its_own():
    problems = upward(project_edges())
    assert not problems, "upward imports:\n" + "\n".join(problems)


def test_no_import_cycle_between_modules():
    edges = project_edges()
    graph: dict[str, set[str]] = {}
    for e in edges:
        if e.runtime:
            graph.setdefault(e.source, set()).add(e.target)
    found = cycles(graph)
    assert not found, "import cycles:\n" + "\n".join(_describe(c, edges) for c in found)


def test_no_cycle_between_the_packages_of_a_layer():
    graph: dict[str, set[str]] = {}
    for e in project_edges():
        source, target = component(e.source), component(e.target)
        if source != target:
            graph.setdefault(source, set()).add(target)
    assert not cycles(graph), graph


def test_cli_names_a_subcommand_module_that_fails_to_import(tmp_path):
    """An installed plugin whose module raises on import is reported in one line on stderr;
    the other subcommands still work (it was silently dropped before)."""
    dist = tmp_path / "broken_plugin-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: broken-plugin\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text("[sparkmpi_dl.commands]\nbroken = broken_cmds:register\n")
    (tmp_path / "broken_cmds.py").write_text("raise ImportError('needs libfoo.so')\n")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(tmp_path), str(REPO)]))
    proc = subprocess.run([sys.executable, "-m", "sparkmpi_dl.cli", "--help"], env=env,
                          capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert ("sparkmpi-dl: warning: subcommands 'broken' (broken_cmds:register) not available: "
            "ImportError: needs libfoo.so") in proc.stderr.splitlines(), proc.stderr
    assert "mpirun" in proc.stdout and "recon" in proc.stdout and "train" in proc.stdout


def _fail_on_rank_one() -> None:
    from mpi4py import MPI
    if MPI.COMM_WORLD.Get_rank() == 1:
        raise RuntimeError("rank one gives up")


def test_job_failures_are_one_family():
    """Every launch error is a SparkMPIError; the caller's is JobFailed naming the rank."""
    import sparkmpi_dl
    from sparkmpi_dl import errors
    from sparkmpi_dl.launch.spark import NotEnoughSlots
    from sparkmpi_dl.launch.spark_setup import BadMaster, InterpreterMismatch

    for cls in (errors.JobFailed, errors.RankProcessFailed, errors.SparkSetupError, NotEnoughSlots,
                BadMaster, InterpreterMismatch):
        assert issubclass(cls, sparkmpi_dl.SparkMPIError), cls
    assert sparkmpi_dl.JobFailed is errors.JobFailed
    with pytest.raises(sparkmpi_dl.SparkMPIError) as info:
        sparkmpi_dl.run_local(_fail_on_rank_one, 2, output=lambda rank, stream, line: None)
    assert isinstance(info.value, errors.JobFailed)
    assert info.value.failure is not None and info.value.failure.rank == 1
    assert "rank one gives up" in str(info.value)


def test_public_run_has_a_signature_type_checkers_see(tmp_path):
    """sparkmpi_dl.run is reached through a lazy module __getattr__ at run time; type
    checkers must still see its real signature (it was Any), and py.typed must ship."""
    assert (REPO / "sparkmpi_dl" / "py.typed").is_file()
    snippet = tmp_path / "use_run.py"
    snippet.write_text("import sparkmpi_dl\n"
                       "sparkmpi_dl.run(len, 'two')\n"
                       "sparkmpi_dl.run_command(['true'], 2, data=None, cwd=3)\n")
    proc = subprocess.run([sys.executable, "-m", "mypy", str(snippet)], cwd=REPO,
                          capture_output=True, text=True, timeout=300)
    assert 'Argument 2 to "run" has incompatible type "str"; expected "int | None"' in proc.stdout, proc.stdout
    assert '"run_command" has incompatible type "int"; expected "str | None"' in proc.stdout, proc.stdout


def test_one_place_says_whether_this_process_is_a_rank():
    """The recon CLI and the comms ask in_mpi_job, the trainer launched_size: one module."""
    from sparkmpi_dl.launch.environment import in_mpi_job, launched_size

    assert not in_mpi_job({}) and launched_size({}) is None
    assert in_mpi_job({"PMI_FD": "5", "PMI_SIZE": "3"}) and launched_size({"PMI_FD": "5", "PMI_SIZE": "3"}) == 3
    gloo = {"HOROVOD_RANK": "0", "HOROVOD_SIZE": "2"}  # horovodrun --gloo: a rank, but no MPI
    assert not in_mpi_job(gloo) and launched_size(gloo) == 2
    assert launched_size({"PMIX_RANK": "1"}) == -1  # a rank of a size the environment omits
