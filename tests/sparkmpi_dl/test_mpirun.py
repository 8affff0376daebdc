"""The local launcher (`sparkmpi-dl mpirun`) with real MPICH ranks running mpi4py."""
import json
import os
import subprocess
import sys
import time

import pytest

from sparkmpi_dl.launch.local import JobFailed, mpirun, run_local
from sparkmpi_dl.pmi import JobService

PROGRAM = [sys.executable, "-m", "tests.sparkmpi_dl.mpi_programs"]


class Lines:
    """Collects what each rank prints, as the driver's console would show it."""

    def __init__(self):
        self.lines = []

    def __call__(self, rank, stream, line):
        self.lines.append((rank, stream, line))

    def json_of(self, stream="stdout"):
        return sorted((json.loads(l) for _, s, l in self.lines if s == stream and l.startswith("{")),
                      key=lambda d: d.get("rank", 0))


@pytest.mark.parametrize("ranks", [2, 4])
def test_collectives_across_ranks(ranks):
    out = Lines()
    assert mpirun(PROGRAM + ["collectives"], ranks, output=out) == 0
    results = out.json_of()
    assert [r["rank"] for r in results] == list(range(ranks))
    assert all(r["sum"] == ranks * (ranks + 1) / 2 for r in results)
    assert all(r["bcast"] == {"from": "root", "n": ranks} for r in results)
    assert all(r["node_size"] == ranks for r in results)  # PMI_process_mapping: one host
    assert [r["env_rank"] for r in results] == [str(i) for i in range(ranks)]


def test_name_service_through_mpi_publish_and_lookup():
    out = Lines()
    assert mpirun(PROGRAM + ["name_service"], 2, output=out) == 0
    docs = [json.loads(l) for _, s, l in out.lines if s == "stdout"]
    published = next(d["published"] for d in docs if "published" in d)
    assert next(d["found"] for d in docs if "found" in d) == published


def test_crash_mid_allreduce_fails_fast_and_kills_the_others():
    def crash_mid_allreduce():
        from tests.sparkmpi_dl.mpi_programs import crash_mid_allreduce
        crash_mid_allreduce()

    start = time.monotonic()
    with pytest.raises(JobFailed) as info:
        run_local(crash_mid_allreduce, 3, output=Lines())
    assert time.monotonic() - start < 10
    assert info.value.failure.rank == 2 and info.value.failure.exit_code == 9
    assert "rank about to die" in str(info.value)
    pids = [pid for _, pid in info.value.processes.values()]
    assert len(pids) == 3 and not any(os.path.exists(f"/proc/{pid}") for pid in pids)


def test_mpirun_returns_the_failing_ranks_exit_code():
    assert mpirun(PROGRAM + ["crash_mid_allreduce"], 2, output=Lines()) == 9


def test_output_is_prefixed_by_rank_on_the_console():
    proc = subprocess.run([sys.executable, "-m", "sparkmpi_dl", "mpirun", "-n", "2", "--",
                           "sh", "-c", 'echo "out of $PMI_RANK"; echo "err of $PMI_RANK" >&2; exit $PMI_RANK'],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 1
    assert "[rank 0] out of 0" in proc.stdout and "[rank 1] out of 1" in proc.stdout
    assert "[rank 1] err of 1" in proc.stderr


def test_a_ranks_last_lines_are_printed_although_another_rank_failed_meanwhile(tmp_path):
    """Rank 0 prints 3000 lines and exits 0; only then rank 1 fails. Every line rank 0 sent
    before it exited reaches the console: the failure ends the job, not its output."""
    marker = tmp_path / "rank0-done"
    script = (f'if [ "$PMI_RANK" = 0 ]; then seq 1 3000 | sed "s/^/line /"; touch {marker}; '
              f'else while [ ! -f {marker} ]; do sleep 0.01; done; exit 1; fi')
    proc = subprocess.run([sys.executable, "-m", "sparkmpi_dl", "mpirun", "-n", "2", "--",
                           "sh", "-c", script], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 1, proc.stderr[-2000:]
    lines = [line for line in proc.stdout.splitlines() if line.startswith("[rank 0] line ")]
    assert lines == [f"[rank 0] line {i}" for i in range(1, 3001)], len(lines)


def test_very_long_output_lines_arrive_whole_in_pieces():
    out = Lines()
    code = mpirun([sys.executable, "-c", "print('x' * 200000); print('end')"], 1, output=out)
    assert code == 0
    pieces = [line for _, stream, line in out.lines if stream == "stdout"]
    assert "".join(pieces[:-1]) == "x" * 200000 and pieces[-1] == "end"
    assert all(len(p) <= 8192 for p in pieces)


def test_missing_program_is_reported_with_its_name():
    out = Lines()
    assert mpirun(["/nonexistent/binary"], 2, output=out) == 127


def test_function_mode_returns_results_by_rank_and_raises_with_traceback():
    def rank_times(x):
        from mpi4py import MPI
        return MPI.COMM_WORLD.rank * x

    assert run_local(rank_times, 3, args=(7,), output=Lines()) == [0, 7, 14]

    def fails_on_rank_1():
        from mpi4py import MPI
        if MPI.COMM_WORLD.rank == 1:
            raise ValueError("frame 17 has NaNs")
        MPI.COMM_WORLD.Barrier()

    with pytest.raises(JobFailed) as info:
        run_local(fails_on_rank_1, 2, output=Lines())
    assert info.value.failure.rank == 1
    assert "ValueError: frame 17 has NaNs" in str(info.value)


def test_plain_pmi_port_wireup_for_programs_started_elsewhere():
    """The seed's allreduce.py style: ranks started by anyone, with PMI_PORT and PMI_ID."""
    with JobService(2, allow_plain_pmi=True) as service:
        host, port = service.address
        env = {k: v for k, v in os.environ.items() if not k.startswith("PMI")}
        procs = [subprocess.Popen(PROGRAM + ["collectives"], stdout=subprocess.PIPE, text=True,
                                  env={**env, "PMI_PORT": f"{host}:{port}", "PMI_ID": str(r),
                                       "SPARKMPI_RANK": str(r)})
                 for r in range(2)]
        outputs = [json.loads(p.communicate(timeout=60)[0]) for p in procs]
    assert [o["sum"] for o in outputs] == [3.0, 3.0]
    assert sorted(o["rank"] for o in outputs) == [0, 1]
