"""Placeholder, replaced below."""
import argparse
def add_bench_arguments(parser: argparse.ArgumentParser) -> None:
    pass
def main(args) -> int:
    return 0
