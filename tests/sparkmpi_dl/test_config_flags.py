"""sparkmpi_dl.config: typed dataclasses with field docstrings -> argparse flags -> back."""
from __future__ import annotations

import argparse
import dataclasses
import enum
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import pytest

from sparkmpi_dl.config import Flag, add_dataclass_flags, comma_separated, field_docs, from_args
from sparkmpi_dl.flags import positive_int


class Color(enum.Enum):
    RED = "red"
    BLUE = "blue"


@dataclass
class Options:
    """A config as the project writes them: one docstring per field."""

    data: Path
    """the input folder"""
    epochs: int = 3
    """epochs to   train
    (a docstring over two lines is one help line)"""
    lr: float = 0.01
    """learning rate, 100 % per rank"""
    resume: bool = False
    """continue the run"""
    verbose: bool = True
    """progress lines"""
    steps: int | None = None
    """cap on steps per epoch"""
    backend: Literal["numpy", "cupy"] = "numpy"
    """array library"""
    color: Color = Color.RED
    """a colour"""
    shape: tuple[int, int, int] = (32, 32, 1)
    """H W C"""
    tasks: tuple[int, ...] = (1, 2)
    """task counts"""
    out_dir: str = "runs/x"
    """output folder"""


def _parser(**kwargs) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="t")
    add_dataclass_flags(parser, Options, **kwargs)
    return parser


def test_field_docstrings_become_help_with_the_default():
    assert field_docs(Options)["epochs"] == "epochs to train (a docstring over two lines is one help line)"
    text = " ".join(_parser().format_help().split())
    assert "--epochs EPOCHS epochs to train (a docstring over two lines is one help line) (default: 3)" in text
    assert "learning rate, 100 % per rank (default: 0.01)" in text
    assert "--shape SHAPE SHAPE SHAPE H W C (default: 32,32,1)" in text
    assert "--steps STEPS cap on steps per epoch --backend" in text  # no default: none shown


def test_round_trip_with_types_choices_nargs_and_required():
    args = _parser().parse_args(["--data", "d", "--epochs", "5", "--no-verbose", "--resume",
                                 "--steps", "7", "--backend", "cupy", "--color", "blue",
                                 "--shape", "8", "8", "3", "--tasks", "1", "2", "4"])
    opts = from_args(Options, args)
    assert opts == Options(data=Path("d"), epochs=5, resume=True, verbose=False, steps=7,
                           backend="cupy", color=Color.BLUE, shape=(8, 8, 3), tasks=(1, 2, 4))
    assert from_args(Options, _parser().parse_args(["--data", "d"])) == Options(data=Path("d"))
    assert from_args(Options, argparse.Namespace(data="d"), epochs=9).epochs == 9
    for bad in (["--backend", "jax"], ["--color", "green"], ["--epochs", "x"], []):
        with pytest.raises(SystemExit):
            _parser().parse_args(["--data", "d", *bad] if bad else bad)


def test_shared_names_hidden_aliases_and_typed_values():
    flags = {"out_dir": Flag(names=("--out",), hidden=("--out-dir",), metavar="DIR"),
             "epochs": Flag(type=positive_int), "verbose": Flag(names=("--quiet",), action="store_false"),
             "shape": Flag(type=comma_separated(int, length=3, example="32,32,1"))}
    parser = _parser(flags=flags)
    assert parser.parse_args(["--data", "d", "--out-dir", "o"]).out_dir == "o"
    assert parser.parse_args(["--data", "d", "--out", "o"]).out_dir == "o"
    assert parser.parse_args(["--data", "d", "--quiet"]).verbose is False
    assert parser.parse_args(["--data", "d", "--shape", "8,8,3"]).shape == (8, 8, 3)
    text = parser.format_help()
    assert "--out DIR" in text and "--out-dir" not in text and "--no-quiet" not in text
    for bad in (["--epochs", "0"], ["--shape", "8,8"], ["--shape", "8,x,1"]):
        with pytest.raises(SystemExit):
            parser.parse_args(["--data", "d", *bad])


def test_bool_flags_say_which_is_the_default_and_defaults_can_be_replaced():
    parser = _parser(flags={"verbose": Flag(names=("--quiet",), action="store_false",
                                            help="no progress lines"),
                            "lr": Flag(default_text="1 %")},
                     defaults={"epochs": 7})
    text = " ".join(parser.format_help().split())
    assert "--resume continue the run --no-resume the opposite of --resume (the default)" in text
    assert "--quiet no progress lines (default: off)" in text
    assert "(default: 7)" in text and "(default: 1 %)" in text
    args = parser.parse_args(["--data", "d", "--quiet"])
    assert from_args(Options, args) == Options(data=Path("d"), epochs=7, verbose=False)


def test_a_bool_or_none_field_is_on_off_or_unset():
    """``bool | None = None`` (decided later, e.g. "when the data have them"): --x, --no-x,
    or None; neither spelling is called the default, ``default_text`` says what None means."""

    @dataclass
    class Auto:
        subpixel: bool | None = None
        """model fractional positions"""
        host: bool | None = None
        """keep frames in host memory"""

    parser = argparse.ArgumentParser()
    add_dataclass_flags(parser, Auto, flags={
        "subpixel": Flag(default_text="when the data have them"),
        "host": Flag(action="store_true", default_text="when they do not fit")})
    assert [parser.parse_args(a).subpixel for a in ([], ["--subpixel"], ["--no-subpixel"])] == [
        None, True, False]
    assert parser.parse_args(["--host"]).host is True and parser.parse_args([]).host is None
    text = " ".join(parser.format_help().split())
    assert ("--subpixel model fractional positions (default: when the data have them) "
            "--no-subpixel the opposite of --subpixel --host") in text
    assert "keep frames in host memory (default: when they do not fit)" in text
    assert "(the default)" not in text


def test_only_exclude_and_unset_is_none():
    parser = argparse.ArgumentParser()
    add_dataclass_flags(parser, Options, only=["epochs", "lr", "resume"], unset_is_none=True)
    args = parser.parse_args(["--lr", "0.5"])
    assert (args.epochs, args.lr, args.resume) == (None, 0.5, None)
    assert "(default: 3)" in parser.format_help()  # the field's default is still shown
    assert from_args(Options, args, data=Path("d")) == Options(data=Path("d"), lr=0.5)
    parser = argparse.ArgumentParser()
    add_dataclass_flags(parser, Options, exclude=["data", "tasks"])
    assert "--tasks" not in parser.format_help() and "--data" not in parser.format_help()
    with pytest.raises(TypeError, match="no field"):
        add_dataclass_flags(argparse.ArgumentParser(), Options, exclude=["nope"])


def test_a_field_without_a_docstring_or_a_flag_type_is_refused():
    @dataclass
    class Bare:
        documented: int = 1
        """has one"""
        bare: int = 2

    with pytest.raises(TypeError, match=r"Bare\.bare has no docstring"):
        add_dataclass_flags(argparse.ArgumentParser(), Bare)

    @dataclass
    class Untyped:
        mapping: dict[str, int] = dataclasses.field(default_factory=dict)
        """a mapping"""

    with pytest.raises(TypeError, match="'mapping': no flag for the type"):
        add_dataclass_flags(argparse.ArgumentParser(), Untyped)


def test_every_project_config_turned_into_flags_documents_every_field():
    """Building the whole CLI turns each converted config into flags; each field of each
    must have its docstring (the helper refuses one without, so the parser would not build)."""
    from sparkmpi_dl.cli import build_parser
    from sparkmpi_dl.config import flagged_classes

    build_parser()
    project = [c for c in flagged_classes() if not c.__module__.startswith("tests")]
    names = {c.__qualname__ for c in project}
    assert {"TrainConfig", "LaunchOptions", "DQNConfig", "RunConfig", "CompareConfig", "BuildConfig",
            "EstimatorConfig", "PublishOptions", "SimulationConfig", "EngineConfig",
            "RunOptions"} <= names
    for cls in project:
        docs = field_docs(cls)
        missing = [f.name for f in dataclasses.fields(cls) if f.init and not docs.get(f.name)]
        assert not missing, f"{cls.__qualname__}: fields without a docstring: {missing}"
