"""The one way to configure: a typed dataclass whose fields carry a docstring each, turned
into argparse flags by :func:`add_dataclass_flags` and back by :func:`from_args`.

    @dataclass
    class Options:
        epochs: int = 3
        \"\"\"epochs to train\"\"\"
        resume: bool = False
        \"\"\"continue the run in the output folder\"\"\"

    add_dataclass_flags(parser, Options)            # --epochs N, --resume/--no-resume
    options = from_args(Options, parser.parse_args())

The help of a flag is its field's docstring (the string literal right after the field, as
in CleanRL's ``Args``) with the default appended; a field without one is refused, so
``--help`` never shows a bare flag. The flag's type, choices and ``nargs`` come from the
annotation. Where a flag's spelling or parsing differs from the field (a shared flag name
such as ``--out``, older spellings kept as hidden aliases, a comma-separated value), a
:class:`Flag` says so, next to the call, not in the dataclass: the dataclass stays plain
data that pickles into Spark tasks.
"""
from __future__ import annotations

import argparse
import ast
import dataclasses
import enum
import functools
import inspect
import textwrap
import types
import typing
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any, Literal, TypeVar

from sparkmpi_dl.flags import add_aliased

__all__ = ["Flag", "add_dataclass_flags", "comma_separated", "field_docs", "flagged_classes",
           "from_args"]

T = TypeVar("T")
_FLAGGED: list[type[Any]] = []  # classes turned into flags in this process (tests check them)


@dataclasses.dataclass(frozen=True)
class Flag:
    """How one field's flag differs from the default ``--field-name`` (all optional)."""

    names: tuple[str, ...] = ()
    """the spellings ``--help`` shows; default ``("--field-name",)``"""
    hidden: tuple[str, ...] = ()
    """older spellings still accepted (same meaning), not shown"""
    type: Callable[[str], Any] | None = None
    """parser of the whole value (replaces the annotation's; e.g. :func:`comma_separated`)"""
    metavar: str | None = None
    """the value's name in ``--help``"""
    help: str | None = None
    """replaces the field's docstring (where one flag serves several commands)"""
    default_text: str | None = None
    """the default as ``--help`` shows it (where the flag's units differ from the field's, or
    a ``bool | None`` field's None means "decided later")"""
    action: Literal["store_true", "store_false", "pair"] | None = None
    """for a bool: one flag setting it true or false, or ``--x``/``--no-x`` (the default)"""


def field_docs(cls: type[Any]) -> dict[str, str]:
    """Each field's docstring (the string right after it in the class body), base classes
    first, so a subclass may redocument a field."""
    docs: dict[str, str] = {}
    for klass in reversed(cls.__mro__):
        if dataclasses.is_dataclass(klass):
            docs.update(_class_docs(klass))
    return docs


@functools.cache
def _class_docs(cls: type[Any]) -> dict[str, str]:
    try:
        source = textwrap.dedent(inspect.getsource(cls))
    except (OSError, TypeError):  # defined where no source is kept (an interactive session)
        return {}
    body = next(node for node in ast.parse(source).body if isinstance(node, ast.ClassDef)).body
    docs: dict[str, str] = {}
    for node, after in zip(body, body[1:]):
        if (isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name)
                and isinstance(after, ast.Expr) and isinstance(after.value, ast.Constant)
                and isinstance(after.value.value, str)):
            docs[node.target.id] = " ".join(after.value.value.split())
    return docs


def comma_separated(kind: Callable[[str], T], *, length: int | None = None,
                    example: str = "") -> Callable[[str], tuple[T, ...]]:
    """An argparse type for one ``A,B,C`` value (how ``--hidden 64,64`` or ``--image-shape
    32,32,1`` are written), optionally of a fixed ``length``."""
    shape = example or ",".join(["N"] * (length or 2))

    def parse(text: str) -> tuple[T, ...]:
        try:
            values = tuple(kind(v) for v in text.split(","))
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected comma-separated values like {shape}, "
                                             f"got {text!r}") from None
        if length is not None and len(values) != length:
            raise argparse.ArgumentTypeError(f"expected {length} comma-separated values like "
                                             f"{shape}, got {text!r}")
        return values

    parse.__name__ = f"comma-separated {getattr(kind, '__name__', 'value')}"
    return parse


def _unoptional(hint: Any) -> Any:
    """``X | None`` -> ``X`` (other hints unchanged)."""
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        rest = [a for a in typing.get_args(hint) if a is not type(None)]
        if len(rest) == 1:
            return rest[0]
    return hint


def _enum_type(kind: type[enum.Enum]) -> Callable[[str], enum.Enum]:
    def parse(text: str) -> enum.Enum:
        for member in kind:
            if text in (member.name, str(member.value)):
                return member
        raise argparse.ArgumentTypeError(f"expected one of {', '.join(str(m.value) for m in kind)}")
    parse.__name__ = kind.__name__
    return parse


def _value_kwargs(name: str, hint: Any) -> dict[str, Any]:
    """argparse keywords (type, choices, nargs) for a field of annotation ``hint``."""
    hint = _unoptional(hint)
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin is Literal:
        return {"type": type(args[0]), "choices": args}
    if isinstance(hint, type) and issubclass(hint, enum.Enum):
        return {"type": _enum_type(hint), "choices": list(hint),
                "metavar": "{" + ",".join(str(m.value) for m in hint) + "}"}
    if hint in (int, float, str, Path):
        return {"type": hint}
    if origin in (tuple, list) and args:
        if origin is list or (len(args) == 2 and args[1] is Ellipsis):
            return {**_value_kwargs(name, args[0]), "nargs": "+"}
        if len(set(args)) == 1:
            return {**_value_kwargs(name, args[0]), "nargs": len(args)}
    raise TypeError(f"field {name!r}: no flag for the type {hint!r}; give Flag(type=...)")


def _default(field: dataclasses.Field[Any]) -> Any:
    if field.default is not dataclasses.MISSING:
        return field.default
    if field.default_factory is not dataclasses.MISSING:
        return field.default_factory()
    return dataclasses.MISSING


def _shown(value: Any) -> str:
    if isinstance(value, enum.Enum):
        return str(value.value)
    if isinstance(value, (tuple, list)):
        return ",".join(map(str, value))
    return str(value)


def add_dataclass_flags(parser: Any, cls: type[Any], *, flags: Mapping[str, Flag] | None = None,
                        only: Iterable[str] | None = None, exclude: Iterable[str] = (),
                        defaults: Mapping[str, Any] | None = None,
                        unset_is_none: bool = False) -> None:
    """Add one flag per field of the dataclass ``cls`` to ``parser`` (or an argument group).

    ``flags`` adjusts single fields (see :class:`Flag`); ``only``/``exclude`` pick the
    fields; ``defaults`` replaces fields' defaults (a benchmark's smaller
    sizes), parsed and shown. With ``unset_is_none`` every flag not given parses to None and none is required
    (the caller layers presets under the flags given, or needs a field only sometimes) while
    ``--help`` still shows the field's default.
    Raises TypeError naming a field without a docstring or with a type no flag fits.
    """
    flags = flags or {}
    hints = typing.get_type_hints(cls)
    docs = field_docs(cls)
    picked = set(only) if only is not None else None
    defaults = defaults or {}
    unknown = (set(flags) | (picked or set()) | set(exclude) | set(defaults)) - {f.name for f in dataclasses.fields(cls)}
    if unknown:
        raise TypeError(f"{cls.__name__} has no field(s) {sorted(unknown)}")
    for field in dataclasses.fields(cls):
        if not field.init or field.name in exclude or picked is not None and field.name not in picked:
            continue
        flag = flags.get(field.name, Flag())
        text = flag.help or docs.get(field.name)
        if not text:
            raise TypeError(f"{cls.__module__}.{cls.__qualname__}.{field.name} has no docstring "
                            f"(the help of its flag): add a string literal after the field")
        default = defaults[field.name] if field.name in defaults else _default(field)
        _add_field(parser, field, hints[field.name], flag, text, default, unset_is_none)
    if cls not in _FLAGGED:
        _FLAGGED.append(cls)


def _add_field(parser: Any, field: dataclasses.Field[Any], hint: Any, flag: Flag, text: str,
               default: Any, unset_is_none: bool) -> None:
    names = flag.names or ("--" + field.name.replace("_", "-"),)
    required = default is dataclasses.MISSING and not unset_is_none
    if _unoptional(hint) is bool and flag.type is None:
        _add_bool(parser, field.name, names, flag, text, default, unset_is_none)
        return
    if flag.default_text or default not in (dataclasses.MISSING, None):
        text = f"{text} (default: {flag.default_text or _shown(default)})"
    kwargs: dict[str, Any] = {"help": text.replace("%", "%%")}
    kwargs.update({"type": flag.type} if flag.type else _value_kwargs(field.name, hint))
    if flag.metavar:
        kwargs["metavar"] = flag.metavar
    if not required:
        kwargs["default"] = None if unset_is_none else default
    add_aliased(parser, names, flag.hidden, dest=field.name, required=required, **kwargs)


def _add_bool(parser: Any, dest: str, names: tuple[str, ...], flag: Flag, text: str,
              default: bool | None, unset_is_none: bool) -> None:
    """``--x`` and ``--no-x`` (the one that is the default says so), or the one flag that
    ``flag.action`` names, with "(default: on|off)". A ``bool | None`` field defaulting to
    None (decided later: "auto") has neither spelling as its default; ``flag.default_text``
    says what None means."""
    text = text.replace("%", "%%")
    value = None if unset_is_none else default
    if flag.action in ("store_true", "store_false"):
        on = default == (flag.action == "store_true")
        add_aliased(parser, names, flag.hidden, dest=dest, action=flag.action, default=value,
                    help=f"{text} (default: {flag.default_text or ('on' if on else 'off')})")
        return
    auto = default is None
    add_aliased(parser, names, flag.hidden, dest=dest, action="store_true", default=value,
                help=f"{text} (default: {flag.default_text})" if flag.default_text
                else f"{text} (the default)" if default else text)
    negatives = tuple("--no-" + n[2:] for n in names if n.startswith("--"))
    parser.add_argument(*negatives, dest=dest, action="store_false", default=argparse.SUPPRESS,
                        help=f"the opposite of {names[-1]}"
                        + ("" if default or auto or flag.default_text else " (the default)"))


def from_args(cls: type[T], args: argparse.Namespace, **values: Any) -> T:
    """The ``cls`` the parsed ``args`` describe (``values`` given here win).

    A field missing from ``args`` or parsed to None takes its dataclass default; a list
    (``nargs``) becomes a tuple where the field is one.
    """
    hints = typing.get_type_hints(cls)
    for field in dataclasses.fields(cls):  # type: ignore[arg-type]
        if not field.init or field.name in values:
            continue
        value = getattr(args, field.name, None)
        if value is None:
            continue
        if isinstance(value, list) and typing.get_origin(_unoptional(hints[field.name])) is tuple:
            value = tuple(value)
        values[field.name] = value
    return cls(**values)


def flagged_classes() -> list[type[Any]]:
    """The dataclasses :func:`add_dataclass_flags` turned into flags so far in this process."""
    return list(_FLAGGED)
