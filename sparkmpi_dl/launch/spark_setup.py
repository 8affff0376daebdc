"""Starting Spark the way the user meant: the right master, the right Python, no chatter.

Three things go wrong before any rank starts, and each must end in one clear line:

* the master URL is unparsable or nobody answers there (Spark would print pages of Py4J
  and retry for a minute): :func:`check_master` refuses it in at most a few seconds;
* the executors run another Python than the driver. PySpark takes the executors' Python
  from ``PYSPARK_PYTHON`` *when the context starts* (``spark.pyspark.python`` on the
  builder is ignored when the driver is a plain Python process), else ``python3`` from the
  PATH. :func:`choose_interpreter` sets it before the context starts, and
  :func:`check_interpreter` asks the executors which Python they run before the first job;
* Spark's INFO/WARN lines drown the job's own output: :func:`quiet_startup` gives the JVM a
  log4j2 configuration that keeps errors only (``SPARKMPI_DL_VERBOSE=1`` or the CLI's
  ``--verbose`` brings Spark's defaults back).
"""
from __future__ import annotations

import contextlib
import os
import re
import signal
import socket
import sys
import threading
from pathlib import Path
from typing import Any, Iterable, Iterator, Mapping

from sparkmpi_dl.errors import SparkSetupError as SparkSetupError  # re-exported for callers

VERBOSE_ENV = "SPARKMPI_DL_VERBOSE"
QUIET_LOG4J = Path(__file__).with_name("log4j2-quiet.properties")
CONNECT_TIMEOUT_S = 5.0

_LOCAL = re.compile(r"local(\[(\*|[1-9]\d*)(,\d+)?\])?|local-cluster\[\d+,\d+,\d+\]")
_SPARK = re.compile(r"spark://(.+)")
_OTHER = re.compile(r"yarn|k8s://\S+|mesos://\S+|connect://\S+")

_checked: set[tuple[str, str]] = set()


class BadMaster(SparkSetupError):
    """The master URL cannot be parsed, or nothing answers at it."""


class InterpreterMismatch(SparkSetupError):
    """The executors run (or cannot start) another Python than the one meant."""


def spark_verbose() -> bool:
    """Whether Spark's own INFO/WARN logging was asked for (``--verbose``)."""
    return os.environ.get(VERBOSE_ENV, "") not in ("", "0")


def set_spark_verbose(on: bool) -> None:
    """Ask for Spark's own logging in this process and the processes it starts."""
    if on:
        os.environ[VERBOSE_ENV] = "1"
        # a quiet Spark started earlier by this process left its log4j option for child
        # JVMs (quiet_startup); asked for Spark's logging, they must not inherit it
        kept = [opt for opt in os.environ.get("SPARK_SUBMIT_OPTS", "").split()
                if opt != f"-Dlog4j2.configurationFile={QUIET_LOG4J.as_uri()}"]
        if kept:
            os.environ["SPARK_SUBMIT_OPTS"] = " ".join(kept)
        else:
            os.environ.pop("SPARK_SUBMIT_OPTS", None)
    else:
        os.environ.pop(VERBOSE_ENV, None)


def check_master(url: str, timeout: float = CONNECT_TIMEOUT_S) -> None:
    """Refuse a master URL Spark cannot use, in one line and at most ``timeout`` seconds.

    ``spark://HOST:PORT[,HOST:PORT]`` must resolve and accept a TCP connection (Spark's own
    client would retry for about a minute); ``local[...]`` must be well formed; YARN,
    Kubernetes and Spark Connect URLs are passed on unchecked.
    """
    if _LOCAL.fullmatch(url) or _OTHER.fullmatch(url):
        return
    match = _SPARK.fullmatch(url)
    if match is None:
        raise BadMaster(f"--master {url!r} is not a Spark master URL (expected local[N], "
                        "local[*], spark://HOST:PORT, yarn or k8s://...)")
    problems = []
    for hostport in match.group(1).split(","):
        host, sep, port = hostport.rpartition(":")
        if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise BadMaster(f"--master {url!r}: {hostport!r} is not HOST:PORT")
        problem = _unreachable(host.strip("[]"), int(port), timeout)
        if problem is None:
            return
        problems.append(f"{hostport}: {problem}")
    raise BadMaster(f"--master {url}: cannot reach the Spark master ({'; '.join(problems)})")


def _unreachable(host: str, port: int, timeout: float) -> str | None:
    """Why a TCP connection to host:port fails, or None if it succeeds."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return None
    except socket.gaierror:
        return f"unknown host {host}"
    except TimeoutError:
        return f"no answer within {timeout:g} s"
    except OSError as err:
        return err.strerror or str(err)


def meant_interpreter(conf: Mapping[str, str]) -> str:
    """The executors' Python the user asked for: PYSPARK_PYTHON, else the Spark conf
    ``spark.pyspark.python``, else this very interpreter (the one with the project)."""
    return os.environ.get("PYSPARK_PYTHON") or conf.get("spark.pyspark.python") or sys.executable


def choose_interpreter(conf: Mapping[str, str]) -> str:
    """Put the meant interpreter in the environment where PySpark reads it at start-up."""
    python = meant_interpreter(conf)
    os.environ["PYSPARK_PYTHON"] = python
    os.environ.setdefault("PYSPARK_DRIVER_PYTHON", sys.executable)
    return python


def adopt_interpreter(sc: Any) -> None:
    """Point a context someone else started at the meant interpreter.

    A context started without ``PYSPARK_PYTHON`` runs ``python3`` from the PATH; its
    ``pythonExec`` is read for every job, so it can still be corrected.
    """
    if "PYSPARK_PYTHON" not in os.environ and sc.pythonExec != sys.executable:
        sc.pythonExec = meant_interpreter(dict(sc.getConf().getAll()))


def quiet_startup() -> None:
    """Keep Spark's INFO/WARN lines off the console from the JVM's first line on.

    Works only before this process has started its JVM gateway (the gateway's JVM reads
    ``SPARK_SUBMIT_OPTS``); a driver under spark-submit is quieted by :func:`quiet` later.
    """
    from pyspark import SparkContext

    if spark_verbose() or SparkContext._gateway is not None or "PYSPARK_GATEWAY_PORT" in os.environ:
        return
    option = f"-Dlog4j2.configurationFile={QUIET_LOG4J.as_uri()}"
    current = os.environ.get("SPARK_SUBMIT_OPTS", "")
    if "log4j2.configurationFile" not in current:
        os.environ["SPARK_SUBMIT_OPTS"] = f"{current} {option}".strip()


def quiet(sc: Any) -> None:
    """Errors only from now on, unless Spark's logging was asked for."""
    if not spark_verbose():
        sc.setLogLevel("ERROR")


@contextlib.contextmanager
def keep_sigint_handler() -> Iterator[None]:
    """Keep this process's Ctrl-C handler across a SparkContext's start.

    PySpark replaces it with one that cancels all jobs through the Py4J connection the
    interrupted main thread is itself blocked on; that re-entrant call fails with pages of
    Py4J errors instead of ending the program. Python's own handler (KeyboardInterrupt)
    or the caller's is kept instead; the launcher stops the ranks on the way out.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.getsignal(signal.SIGINT)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def end_spark_quietly(grace_s: float = 10.0) -> None:
    """Stop this process's Spark, if any, before an interrupted program says its last line.

    Ctrl-C leaves tasks running; the JVM only notices the driver is gone once Python has
    exited, and what its dying threads print (a task's stack trace) would then come after
    the program's own last line. Its logging is switched off and the context stopped, each
    bounded by ``grace_s`` since the Py4J connection may have been cut mid-call; a JVM
    still alive after that is killed.
    """
    if "pyspark" not in sys.modules:
        return
    from pyspark import SparkContext

    sc = SparkContext._active_spark_context
    gateway = SparkContext._gateway
    if sc is None or gateway is None:
        return

    def stop() -> None:
        with contextlib.suppress(Exception):
            sc.setLogLevel("OFF")
        with contextlib.suppress(Exception):
            sc.stop()

    worker = threading.Thread(target=stop, name="end-spark", daemon=True)
    worker.start()
    worker.join(grace_s)
    process = getattr(gateway, "proc", None)
    if worker.is_alive() and process is not None and process.poll() is None:
        process.kill()
        with contextlib.suppress(Exception):
            process.wait(grace_s)


def first_line(err: BaseException) -> str:
    """The line of a (Py4J) exception that says what went wrong, without Java frames."""
    text = str(err)
    for pattern in (r"Cannot run program [^\n]*", r"Could not parse Master URL[^\n]*",
                    r"\b\w+(?:Error|Exception): [^\n]+"):
        found = re.search(pattern, text)
        if found:
            return found.group(0).strip()
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[0] if lines else type(err).__name__


def _describe(python: str, version: str, numpy: str | None) -> str:
    return f"{python} (Python {version}, numpy {numpy or 'missing'})"


def check_interpreter(sc: Any, tasks: int = 1) -> None:
    """Fail at once, naming what they found, if the executors run another Python.

    One tiny job (``tasks`` tasks, once per context and interpreter) reports each
    executor's ``sys.executable``, Python and numpy versions and whether this project is
    importable; any difference from the driver would otherwise surface as unpickling
    errors (``No module named 'numpy._core.numeric'``) deep inside a job.
    """
    key = (sc.applicationId, sc.pythonExec)
    if key in _checked:
        return
    meant = sc.pythonExec

    def probe(_partition: Iterable[Any]) -> Iterator[tuple[str, str, str, str | None, bool]]:  # nested, so cloudpickle ships it by value (no project needed)
        import importlib.util
        import socket
        import sys
        try:
            import numpy
            numpy_version = numpy.__version__
        except ImportError:
            numpy_version = None
        yield (socket.gethostname(), sys.executable, "%d.%d.%d" % sys.version_info[:3],
               numpy_version, importlib.util.find_spec("sparkmpi_dl") is not None)

    try:
        found = sc.parallelize(range(tasks), tasks).mapPartitions(probe).collect()
    except Exception as err:
        raise InterpreterMismatch(f"the executors at {sc.master} could not run Python {meant}: "
                                  f"{first_line(err)}; set PYSPARK_PYTHON to a Python that "
                                  "exists on every worker") from None
    import numpy

    mine = ("%d.%d.%d" % sys.version_info[:3], numpy.__version__)
    for host, python, version, numpy_version, has_project in found:
        if os.path.isabs(meant) and os.path.normpath(python) != os.path.normpath(meant):
            why = f"not {meant} as asked"
        elif (version, numpy_version) != mine:
            why = f"but this driver runs {_describe(sys.executable, *mine)}"
        elif not has_project:
            why = "which cannot import sparkmpi_dl"
        else:
            continue
        raise InterpreterMismatch(
            f"the executor on {host} runs {_describe(python, version, numpy_version)}, {why}: "
            "set PYSPARK_PYTHON (or spark.pyspark.python) to the Python with this project "
            "installed on every worker")
    _checked.add(key)
