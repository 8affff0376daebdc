"""Programs of the multi-host tests, run as ``python -m tests.sparkmpi_dl.multihost_program NAME ARGS``.

``ranks OUTDIR``: the rank program of the Spark test (below). ``service INFO HOST`` and
``task INFO RANK``: a job service and a launching task without Spark, each on its own
host, for the test that cuts a host's network; their ranks run ``idle_rank``.

In ``ranks OUTDIR`` each rank runs an mpi4py Allreduce and a Horovod allreduce (MPI controller), then writes
what it saw to ``OUTDIR/rank<N>.json``: its hostname, whether MPICH put the other rank on
its node, the TCP peers of its own sockets (evidence that MPI traffic went over the
network), and the job service's address as its PMI connection sees it. It then stays in
the job, idle, until the launcher stops it: the test takes a host down at that point.
"""
from __future__ import annotations

import ipaddress
import json
import os
import socket
import sys
import time
from pathlib import Path


def _addr(hex_addr: str) -> str:
    """``/proc/net/tcp{,6}`` address (host-order hex words) as ``ip:port``."""
    host, port = hex_addr.split(":")
    raw = bytes.fromhex(host)
    raw = b"".join(raw[i:i + 4][::-1] for i in range(0, len(raw), 4))
    ip = ipaddress.ip_address(raw)
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped:
        ip = ip.ipv4_mapped
    return f"{ip}:{int(port, 16)}"


def tcp_peers() -> list[str]:
    """Remote ``ip:port`` of every established TCP socket this process holds."""
    inodes = set()
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[len("socket:["):-1])
    peers = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        if not os.path.exists(table):
            continue
        for line in open(table).read().splitlines()[1:]:
            fields = line.split()
            if fields[3] == "01" and fields[9] in inodes:  # 01 = ESTABLISHED
                peers.append(_addr(fields[2]))
    return sorted(peers)


def pmi_process_mapping() -> str:
    """Ask the job service for ``PMI_process_mapping`` over PMI_FD, as MPICH will (PMI-1).

    Called before MPI_Init, which then starts its own conversation on the same socket.
    """
    with socket.socket(fileno=os.dup(int(os.environ["PMI_FD"]))) as pmi, \
            pmi.makefile("rwb", buffering=0) as wire:
        def ask(line: str) -> dict[str, str]:
            wire.write(line.encode() + b"\n")
            return dict(item.split("=", 1) for item in wire.readline().decode().split() if "=" in item)

        ask("cmd=init pmi_version=1 pmi_subversion=1")
        kvsname = ask("cmd=get_my_kvsname")["kvsname"]
        return ask(f"cmd=get kvsname={kvsname} key=PMI_process_mapping")["value"]


def main(outdir: Path) -> None:
    os.environ.update(HOROVOD_CONTROLLER="mpi", HOROVOD_CPU_OPERATIONS="mpi")
    mapping = pmi_process_mapping()
    import numpy as np
    from mpi4py import MPI
    comm = MPI.COMM_WORLD
    with socket.socket(fileno=os.dup(int(os.environ["PMI_FD"]))) as pmi:  # closes the dup only
        service = "%s:%d" % pmi.getpeername()[:2]
    total = np.zeros(4)
    comm.Allreduce(np.full(4, comm.rank + 1.0), total)
    node_size = comm.Split_type(MPI.COMM_TYPE_SHARED).size

    import horovod.tensorflow as hvd
    import tensorflow as tf
    hvd.init()
    hvd_sum = hvd.allreduce(tf.constant([float(hvd.rank() + 1)] * 3), op=hvd.Sum).numpy().tolist()
    report = {"rank": comm.rank, "size": comm.size, "hostname": socket.gethostname(),
              "processor_name": MPI.Get_processor_name(), "pid": os.getpid(),
              "mpi_sum": total.tolist(), "node_size": node_size, "process_mapping": mapping,
              "local_nranks": os.environ.get("MPI_LOCALNRANKS"),
              "hvd": {"rank": hvd.rank(), "size": hvd.size(), "local_size": hvd.local_size(),
                      "cross_size": hvd.cross_size(), "mpi": hvd.mpi_enabled(), "sum": hvd_sum},
              "service": service, "tcp_peers": tcp_peers()}
    hvd.shutdown()  # no background MPI traffic while the test takes a host down
    tmp = outdir / f".rank{comm.rank}.json"
    tmp.write_text(json.dumps(report))
    tmp.rename(outdir / f"rank{comm.rank}.json")
    print(f"rank {comm.rank} reported; waiting in the job", flush=True)
    while True:  # the launcher ends the job; this rank never leaves by itself
        time.sleep(1)


def service(info: Path, host: str) -> None:
    """A job service for two ranks on ``host``; prints its outcome once the job ends."""
    from sparkmpi_dl.pmi import JobService
    with JobService(2, host=host, output=lambda rank, _, line: print(f"[rank {rank}] {line}",
                                                                       flush=True)) as svc:
        tmp = info.with_suffix(".tmp")
        tmp.write_text(json.dumps([svc.address, svc.secret, svc.job_id]))
        tmp.rename(info)
        outcome = svc.wait(600)
    print(f"outcome: {outcome.failure.describe() if outcome and outcome.failure else outcome}",
          flush=True)


def task(info: Path, rank: int) -> None:
    """What a Spark task does for its rank, here started by hand on a host of the test."""
    from sparkmpi_dl.launch.rank import RankSpec, run_rank
    address, secret, job = json.loads(info.read_text())
    argv = (sys.executable, "-m", "tests.sparkmpi_dl.multihost_program", "idle_rank")
    run_rank(RankSpec(tuple(address), secret, job, argv=argv), rank, epoch=0)


def idle_rank() -> None:
    """One Allreduce, then stay in the job until stopped."""
    import numpy as np
    from mpi4py import MPI
    total = np.zeros(1)
    MPI.COMM_WORLD.Allreduce(np.ones(1), total)
    print(f"allreduce {total[0]:.0f}", flush=True)
    while True:
        time.sleep(1)


if __name__ == "__main__":
    name, args = sys.argv[1], sys.argv[2:]
    if name == "ranks":
        main(Path(args[0]))
    elif name == "service":
        service(Path(args[0]), args[1])
    elif name == "task":
        task(Path(args[0]), int(args[1]))
    else:
        idle_rank()
