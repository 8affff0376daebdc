"""The `sparkmpi-dl` command line.

Each area of the project contributes its own subcommands through a ``register`` function,
so this file stays a short table of contents rather than a growing switchboard. The core's
own come from :mod:`sparkmpi_dl.commands`; the packages above the core declare theirs as
entry points of the group ``sparkmpi_dl.commands`` (pyproject.toml), so the core never
imports them (tests/test_architecture.py). A provider that fails to import is named in one
warning line on stderr and the other subcommands still work:

    def register(commands: argparse._SubParsersAction, bench: argparse._SubParsersAction) -> None

``commands`` takes top-level subcommands (``mpirun``, ``recon``, ...); ``bench`` takes
``sparkmpi-dl bench <name>`` benchmarks. Each parser sets ``func=handler`` where
``handler(args) -> int`` returns the process exit code.

Every parser gets :class:`HelpFormatter` (defaults shown). Errors a user can fix (a bad
master, too few slots, the wrong Python on the executors), a failed rank and Ctrl-C end
here in one line, never in a traceback.

The error convention of every subcommand: one line on stderr; exit code 2 for a usage
error (a bad flag or value: argparse's own errors, ``raise SystemExit("text")`` in a
handler, a handler returning 2), 1 for a failure; an unexpected exception is one line too
(its type and first message line), and its traceback only with ``sparkmpi-dl --debug``.
"""
from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
import traceback
from collections.abc import Iterator
from importlib import metadata
from typing import NoReturn

from sparkmpi_dl import commands as core_commands
from sparkmpi_dl import plugins
from sparkmpi_dl.errors import JobFailed, SparkSetupError


class HelpFormatter(argparse.HelpFormatter):
    """Each option's default appended unless its help names one; a description written
    over several lines (a module docstring) kept as written, a one-line one wrapped."""

    def _fill_text(self, text: str, width: int, indent: str) -> str:
        if "\n" in text.strip():
            return "".join(indent + line for line in text.splitlines(keepends=True))
        return super()._fill_text(text, width, indent)

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if (not action.option_strings or action.default in (None, False, argparse.SUPPRESS)
                or "default" in text.lower() or "%(default)" in text):
            return text
        return f"{text} (default: %(default)s)"


class ArgumentParser(argparse.ArgumentParser):
    """A usage error in one line on stderr (no usage block), exit code 2; the subcommands'
    parsers are of this class too (``add_parser`` uses the parent's class)."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _subparsers(parser: argparse.ArgumentParser) -> Iterator[argparse.ArgumentParser]:
    """Every parser below ``parser``, depth first."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in dict.fromkeys(action.choices.values()):
                yield sub
                yield from _subparsers(sub)


def version() -> str:
    """The installed distribution's version (the source tree's when not installed)."""
    try:
        return metadata.version("sparkmpi-dl")
    except metadata.PackageNotFoundError:
        import tomllib
        from pathlib import Path

        pyproject = Path(__file__).resolve().parents[1] / "pyproject.toml"
        if pyproject.is_file():
            return str(tomllib.loads(pyproject.read_text())["project"]["version"]) + " (source tree)"
        return "unknown (not installed)"


def build_parser() -> argparse.ArgumentParser:
    parser: argparse.ArgumentParser = ArgumentParser(
        prog="sparkmpi-dl", formatter_class=HelpFormatter,
        description="Run MPI and Horovod programs inside Spark tasks, and the light-source "
        "deep-learning jobs built on them.",
    )
    parser.add_argument("--version", action="version", version=f"sparkmpi-dl {version()}",
                        help="print the version and exit")
    add_common_flags(parser)
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    bench_parser = commands.add_parser("bench", help="benchmarks (figures for BENCHMARKS.md)")
    bench = bench_parser.add_subparsers(dest="bench", metavar="BENCHMARK", required=True)
    core_commands.register(commands, bench)
    for point in plugins.entry_points(plugins.COMMANDS):
        try:
            register = point.load()
        except Exception as err:  # a broken provider: say which, keep the others usable
            print(f"sparkmpi-dl: warning: subcommands {point.name!r} ({point.value}) not available: "
                  f"{type(err).__name__}: {failure_line(err)}", file=sys.stderr, flush=True)
            continue
        register(commands, bench)
    for sub in _subparsers(parser):
        sub.formatter_class = HelpFormatter
    return parser


def failure_line(err: BaseException) -> str:
    """A failed job in one line: the rank, what happened and its last stderr line (the
    rank's traceback itself was already printed once, with the rank's other output)."""
    failure = getattr(err, "failure", None)
    if failure is None:
        return str(err).splitlines()[0] if str(err) else type(err).__name__
    text = f"rank {failure.rank} {failure.reason}" if failure.rank >= 0 else failure.reason
    last = next((line.strip() for line in reversed(failure.stderr_tail) if line.strip()), "")
    return f"{text} ({last})" if last and last not in text else text


class _Interrupts:
    """Ctrl-C raises KeyboardInterrupt, and is remembered: the clean-up it triggers may
    fail in its own way (a Py4J connection cut mid-call), which must not be reported."""

    seen = False

    @classmethod
    def handler(cls, signum: int, frame: object) -> None:
        cls.seen = True
        raise KeyboardInterrupt


def add_common_flags(parser: argparse.ArgumentParser) -> None:
    """``--verbose`` (Spark's logging) and ``--debug`` (tracebacks), read by :func:`run_command`:
    `sparkmpi-dl` has them before the subcommand, a standalone script among its own flags."""
    parser.add_argument("--verbose", dest="spark_verbose", action="store_true",
                        help="show Spark's own INFO/WARN logging (off by default)")
    parser.add_argument("--debug", action="store_true",
                        help="on an unexpected error, print its traceback (one line without)")


def main(argv: list[str] | None = None) -> int:
    return run_command(build_parser(), argv)


def run_command(parser: argparse.ArgumentParser, argv: list[str] | None = None) -> int:
    """Parse ``argv`` and run the handler it names (``func``) under the error convention of
    this module, messages prefixed with ``parser.prog``. `sparkmpi-dl` and the standalone
    scripts (trainers/image_classifier.py) go through here, so they report errors alike;
    ``parser`` needs :func:`add_common_flags` and should be an :class:`ArgumentParser`."""
    args = parser.parse_args(argv)
    prog = parser.prog
    if args.spark_verbose:
        from sparkmpi_dl.launch.spark_setup import set_spark_verbose
        set_spark_verbose(True)
    else:  # Py4J logs each broken call with a traceback (on the root logger, too);
        # the outcome is reported here in one line
        logging.getLogger("py4j").setLevel(logging.CRITICAL)
        logging.getLogger().addFilter(lambda record: "py4j" not in record.pathname)
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGINT, _Interrupts.handler)
    try:
        return int(args.func(args) or 0)
    except BaseException as err:
        if _Interrupts.seen or isinstance(err, KeyboardInterrupt):
            _end_spark_quietly()
            print(f"{prog}: interrupted", file=sys.stderr, flush=True)
            return 130
        if isinstance(err, SystemExit) and isinstance(err.code, str):  # a handler's usage error
            print(err.code, file=sys.stderr, flush=True)
            return 2
        if not isinstance(err, Exception):
            raise
        return _report(err, args.debug, prog)


def _end_spark_quietly() -> None:
    from sparkmpi_dl.launch.spark_setup import end_spark_quietly  # unimported for --help

    end_spark_quietly()


def _report(err: Exception, debug: bool = False, prog: str = "sparkmpi-dl") -> int:
    """One line for the errors a user meets (their exit codes as mpiexec's); any other
    exception is one line naming its type, exit code 1 (with ``debug``: its traceback)."""
    from sparkmpi_dl.launch.rank import exit_status  # the launch modules stay unimported for --help

    if isinstance(err, SparkSetupError):
        print(f"{prog}: error: {err}", file=sys.stderr, flush=True)
        return 2
    if isinstance(err, JobFailed):
        print(f"{prog}: job failed: {failure_line(err)}", file=sys.stderr, flush=True)
        return exit_status(err.failure.exit_code if err.failure else 1)
    if debug:
        traceback.print_exception(err, file=sys.stderr)
    else:
        first = next((line.strip() for line in str(err).splitlines() if line.strip()), "")
        what = f"{type(err).__name__}: {first}" if first else type(err).__name__
        print(f"{prog}: error: {what} (run with --debug for the traceback)",
              file=sys.stderr, flush=True)
    return 1


if __name__ == "__main__":
    sys.exit(main())
