"""Shared pytest setup: tests run against the project's .venv and its MPICH."""
import os
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

# Subprocesses (MPI ranks, Spark workers) must find the venv's mpich tools and this checkout.
os.environ["PATH"] = str(Path(sys.executable).parent) + os.pathsep + os.environ.get("PATH", "")
os.environ["PYTHONPATH"] = str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")
os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
os.environ.setdefault("PYSPARK_DRIVER_PYTHON", sys.executable)
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
