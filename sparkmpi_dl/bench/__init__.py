"""Benchmarks behind ``sparkmpi-dl bench ...``; figures go to BENCHMARKS.md."""
