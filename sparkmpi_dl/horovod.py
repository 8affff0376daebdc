"""Horovod jobs on the project's launchers: ``run(fn, num_proc, controller="mpi"|"gloo")``.

``controller="mpi"``: every rank is an MPICH rank wired up by the driver's PMI service, and
``hvd.init()`` runs Horovod's MPI controller on it (no mpirun anywhere).
``controller="gloo"``: no MPI at all; the driver hosts a rendezvous server speaking
Horovod's Gloo HTTP key-value protocol (:mod:`sparkmpi_dl.gloo_rendezvous`) and each rank
gets the ``HOROVOD_*`` variables computed from the ranks' real hosts.

Either way ``fn`` runs once per rank, in a fresh process, and rank 0's return value comes
back (all ranks' with ``return_all=True``). With ``data=df`` (or an RDD) there is one rank
per partition and each calls ``fn(table, ...)`` with its own partition (the data plane,
:mod:`sparkmpi_dl.dataplane`): no Parquet round trip. A rank that fails ends the job at once with
its traceback (:class:`sparkmpi_dl.JobFailed`).
"""
from __future__ import annotations

import os
import socket
import sys
import traceback
from contextlib import contextmanager
from typing import Any, Callable, Iterator, Sequence

CONTROLLERS = ("mpi", "gloo")


def mpi_env(rank: int, hosts: list[str]) -> dict[str, str]:
    """Environment provider for the MPI controller: pin Horovod to MPI, whatever is inherited."""
    return {"HOROVOD_CONTROLLER": "mpi", "HOROVOD_CPU_OPERATIONS": "mpi",
            "HOROVOD_HOSTNAME": hosts[rank]}


@contextmanager
def exit_on_error(rank: int | None = None) -> Iterator[None]:
    """In a rank of a multi-rank job: on an exception, print the traceback and leave at once.

    A normal exit first runs Horovod's shutdown, which makes the other ranks raise
    "Horovod has been shut down" and often exit sooner than this one, so the launcher
    would name a bystander. Leaving with ``os._exit`` keeps the blame on the failing rank.
    """
    try:
        yield
    except BaseException:
        who = rank if rank is not None else os.environ.get("SPARKMPI_RANK", "?")
        print(f"rank {who} failed:", file=sys.stderr)
        traceback.print_exc()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(1)


class _ExitOnError:
    """``fn`` wrapped in :func:`exit_on_error`; picklable, so it travels to the ranks."""

    def __init__(self, fn: Callable[..., Any]) -> None:
        self.fn = fn

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        with exit_on_error():
            return self.fn(*args, **kwargs)


def _bind_host(spark: Any, master: str | None, local: bool) -> str:
    """Where the Gloo rendezvous listens: loopback locally, else the Spark driver's address."""
    if local:
        return "127.0.0.1"
    from sparkmpi_dl.launch.spark import spark_context

    sc = spark_context(spark, master)
    host = sc.getConf().get("spark.driver.host", "127.0.0.1")
    return socket.gethostbyname(host)


def run(fn: Callable[..., Any], num_proc: int | None = None, *, data: Any = None, controller: str = "mpi",
        args: Sequence[Any] = (), kwargs: dict[str, Any] | None = None,
        spark: Any = None, master: str | None = None, local: bool = False,
        env: dict[str, str] | None = None, return_all: bool = False,
        gloo_iface: str | None = None, gloo_timeout_s: int = 30,
        output: Callable[[int, str, str], None] | None = None,
        start_timeout: float = 60.0, slot_wait_s: float = 15.0) -> Any:
    """Run ``fn(*args, **kwargs)`` as ``num_proc`` Horovod ranks; rank 0's result.

    ``local=True`` uses the local launcher (threads of this process start the ranks)
    instead of Spark barrier tasks; ``spark``/``master`` pick the Spark session otherwise.
    ``output(rank, stream, line)`` receives the ranks' output lines (default: printed
    with a ``[rank N]`` prefix). ``data`` (a DataFrame or RDD) gives rank r partition r
    as ``fn``'s first argument; ``num_proc`` then defaults to the partition count.
    """
    if controller not in CONTROLLERS:
        raise ValueError(f"controller must be one of {CONTROLLERS}, got {controller!r}")
    if data is None and num_proc is None:
        raise ValueError("num_proc is required unless data= gives one rank per partition")
    if num_proc is not None and num_proc < 1:
        raise ValueError(f"num_proc must be >= 1, got {num_proc}")
    if data is not None and local:
        raise ValueError("data= needs Spark barrier tasks; it cannot be used with local=True")
    import sparkmpi_dl

    options: dict[str, Any] = {"args": args, "kwargs": kwargs, "env": env,
                               "output": output, "start_timeout": start_timeout}
    if not local:
        options.update(spark=spark, master=master, slot_wait_s=slot_wait_s)
    if data is not None:
        options["data"] = data
    launcher: Callable[..., list[Any]] = sparkmpi_dl.run_local if local else sparkmpi_dl.run
    fn = _ExitOnError(fn)
    if controller == "mpi":
        results = launcher(fn, num_proc, env_provider=mpi_env, **options)
    else:
        from sparkmpi_dl.gloo_rendezvous import GlooRendezvous

        bind = _bind_host(spark, master, local)
        iface = gloo_iface or ("lo" if local else None)
        with GlooRendezvous(bind=bind, iface=iface, timeout_s=gloo_timeout_s) as rendezvous:
            results = launcher(fn, num_proc, env_provider=rendezvous.env_provider, **options)
    return results if return_all else results[0]
