"""Launchers: Spark barrier tasks (spark.py) and the local mpiexec stand-in (local.py)."""
