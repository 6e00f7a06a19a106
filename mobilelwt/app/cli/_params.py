"""Kinds of values: each option of every command names the kind of value it takes, and the kind's one check runs
before the command does anything, so the same kind of value is refused the same way (one line, exit 2) wherever
it is accepted.

An option declares its kind as extra metadata of its annotation, beside Typer's::

    threads: Annotated[int | None, typer.Option(help="..."), HOST_THREADS] = None

:func:`mobilelwt.app.cli._options.with_groups` finds the kinds (in option groups too) and runs their checks. The
checks themselves live in the core (:mod:`mobilelwt.checks`), where the configs use them as well.
"""

from __future__ import annotations

import copy
import re
import typing
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import typer

from mobilelwt import checks
from mobilelwt.errors import ConfigError

Values = dict[str, Any]  # every option of the command, by parameter name


@dataclass(frozen=True)
class Kind:
    """One kind of value and its check: ``check(value, flag, values)`` returns the value or raises ConfigError."""

    name: str
    check: Callable[[Any, str, Values], Any]
    # values this kind refuses, for the catalogue of bad inputs (tests); ``{placeholders}`` name test paths
    bad: tuple[str, ...] = ()

    def __call__(self, value: Any, flag: str, values: Values) -> Any:
        return self.check(value, flag, values)


def _output(value: Any, flag: str, values: Values, *, file: bool) -> Any:
    """An output path that is none of the command's inputs: its data folders, its weights and plan files."""
    weights = values.get("weights")
    files = (None if weights in (None, "none", "imagenet") else weights, values.get("plan"))
    folders = (values.get("data"), values.get("val_data"))
    return checks.output_path(value, flag, file=file, folders=folders, files=files)


def _each(kind: Kind) -> Kind:
    """The kind applied to every item of a list option."""
    return Kind(f"list of {kind.name}", lambda v, f, vs: [kind(x, f, vs) for x in v] if v is not None else v, kind.bad)


def _checkpoint(value: Any, flag: str, values: Values) -> Any:
    if value is None or value in ("none", "imagenet"):
        return value
    return str(checks.input_file(value, flag))


def _data(value: Any, flag: str, values: Values) -> Any:
    if value is None or not str(value).strip():
        raise ConfigError(f"{flag} is empty.", f"Pass {flag} with an image folder or a built-in dataset name.")
    return value


def _device_list(value: Any, flag: str, values: Values) -> Any:
    if value is None or not str(value).strip() or not all(s.strip() for s in str(value).split(",")):
        raise ConfigError(f"{flag} names no device.", "Pass host, one or more adb serials, or all.")
    return value


def _runtime_threads(device_option: str) -> Callable[[Any, str, Values], Any]:
    """Runtime threads: held to this machine's cores when ``device_option`` says the runs happen here."""

    def check(value: Any, flag: str, values: Values) -> Any:
        if str(values.get(device_option, "host")) == "host":
            return checks.host_threads(value, flag)
        return checks.count(value, flag, high=256)

    return check


def _training_device(value: Any, flag: str, values: Values) -> Any:
    if not re.fullmatch(r"cpu|auto|cuda(:\d+)?", str(value)):
        raise ConfigError(f"Unknown {flag} {value!r}.", "Use cpu, cuda, cuda:N or auto.")
    return value


def _hex_mask(value: Any, flag: str, values: Values) -> Any:
    if value is not None and not re.fullmatch(r"(0x)?[0-9a-fA-F]{1,16}", str(value)):
        raise ConfigError(f"{flag} {value!r} is not a hexadecimal CPU mask.", f"Pass e.g. {flag} f0 (cores 4-7).")
    return value


def count(*, low: int = 1, high: int = checks.MAX_COUNT, optional: bool = False) -> Kind:
    """A whole number of things from ``low`` to ``high``."""
    return Kind("count", lambda v, f, vs: checks.count(v, f, low=low, high=high, optional=optional),
                (str(low - 1), str(low - 7), str(high + 1)))  # fmt: skip


def names(known: tuple[str, ...], *, optional: bool = True) -> Kind:
    """A comma-separated list of names from ``known``."""
    return Kind("names", lambda v, f, vs: v if v is None and optional else ",".join(checks.names(v, f, known=known)),
                ("", ",", "bogus", f"{known[0]},bogus"))  # fmt: skip


def one_of(known: tuple[str, ...], *, optional: bool = False) -> Kind:
    return Kind("name", lambda v, f, vs: checks.one_of(v, f, known=known, optional=optional), ("", "bogus"))


OUTPUT_DIR = Kind(
    "output directory",
    lambda v, f, vs: _output(v, f, vs, file=False),
    ("", "{proc}", "{under_file}", "{a_file}", "{data_dir}"),
)
OUTPUT_DIR_OPTIONAL = Kind(
    "output directory",
    lambda v, f, vs: v if v is None else _output(v, f, vs, file=False),
    ("", "{proc}", "{under_file}", "{a_file}", "{data_dir}"),
)
OUTPUT_FILE = Kind(
    "output file",
    lambda v, f, vs: _output(v, f, vs, file=True),
    ("", "{proc}", "{under_file}", "{a_dir}", "{in_data_dir}"),
)
OUTPUT_FILE_OPTIONAL = Kind(
    "output file",
    lambda v, f, vs: v if v is None else _output(v, f, vs, file=True),
    ("", "{proc}", "{under_file}", "{a_dir}"),
)
INPUT_FILE = Kind(
    "input file", lambda v, f, vs: v if v is None else checks.input_file(v, f), ("", "{missing}", "{a_dir}")
)
BUILD_DIR = Kind("build directory", lambda v, f, vs: checks.input_dir(v, f), ("", "{missing}", "{a_file}"))
BUILD_DIRS = _each(BUILD_DIR)
IMAGE_DIR = Kind(
    "image folder", lambda v, f, vs: v if v is None else checks.input_dir(v, f), ("", "{missing}", "{a_file}")
)
DATA = Kind("data", _data, ("", "  "))
CHECKPOINT = Kind("checkpoint", _checkpoint, ("", "{missing}", "{a_dir}"))
COUNT = count()
COUNT_OR_ZERO = count(low=0)
COUNT_OPTIONAL = count(optional=True)
COUNT_OR_ZERO_OPTIONAL = count(low=0, optional=True)
PROCESSES = count(high=64)
POSITIVE = Kind("positive number", lambda v, f, vs: checks.positive(v, f), ("0", "-1", "nan", "inf", "-inf", "1e10"))
POSITIVE_OPTIONAL = Kind(
    "positive number", lambda v, f, vs: checks.positive(v, f, optional=True), ("0", "-1", "nan", "inf", "1e10")
)
NON_NEGATIVE = Kind("non-negative number", lambda v, f, vs: checks.non_negative(v, f), ("-1", "nan", "inf", "-inf"))
SECONDS = Kind("seconds", lambda v, f, vs: checks.non_negative(v, f, high=7 * 24 * 3600), ("-1", "nan", "inf", "1e9"))
POINTS = Kind(
    "accuracy points",
    lambda v, f, vs: checks.non_negative(v, f, high=100.0, optional=True),
    ("-1", "nan", "inf", "101"),
)
PROBABILITY = Kind("share", lambda v, f, vs: checks.probability(v, f), ("-0.1", "1.5", "nan", "inf"))
HELD_OUT_SHARE = Kind("share", lambda v, f, vs: checks.probability(v, f, high=0.99), ("-0.1", "1", "nan"))
SEED = Kind("seed", lambda v, f, vs: checks.seed(v, f), ("-1", "100000000000000000000000"))
HOST_THREADS = Kind(
    "thread count", lambda v, f, vs: checks.host_threads(v, f, optional=True), ("0", "-2", "{too_many_threads}")
)
BENCH_THREADS = Kind("thread count", _runtime_threads("device"), ("0", "-2", "{too_many_threads}"))
LATENCY_THREADS = Kind("thread count", _runtime_threads("latency_device"), ("0", "-2", "{too_many_threads}"))
RATIO = Kind("ratio", lambda v, f, vs: checks.ratio(v, f, optional=True),
             ("1", "0.5", "-2", "nan", "inf", str(checks.MAX_RATIO * 10)))  # fmt: skip
INTERVAL_WIDTH = Kind("interval width", lambda v, f, vs: checks.interval_width(v, f), ("0", "-0.05", "0.9", "nan"))
TIME_CAP = Kind("time cap", lambda v, f, vs: checks.positive(v, f, high=24 * 3600), ("0", "-1", "nan", "inf", "1e9"))
DEVICES = Kind("devices", _device_list, ("", " ", "host,"))
CPU_MASK = Kind("CPU mask", _hex_mask, ("xyz", "0xZZ", "f0 && reboot"))
TRAINING_DEVICE = Kind("training device", _training_device, ("gpu", "cuda:x", ""))


def flag_of(name: str, parameter_info: Any) -> str:
    """The option's flag as the user typed it (its first long declaration, else from its name)."""
    for declaration in getattr(parameter_info, "param_decls", None) or ():
        if declaration.startswith("--"):
            return declaration
    if type(parameter_info).__name__ == "ArgumentInfo":
        return name.upper()
    return "--" + name.replace("_", "-")


def number_parser(number: type, flag: str, example: Any = None) -> Callable[[str], Any]:
    """Typer's conversion of a number option, with the fix in its message: 'nan' is no whole number, and Typer's
    own words do not say what to pass instead."""
    word = "a whole number" if number is int else "a number"
    if not isinstance(example, int | float) or isinstance(example, bool):
        example = 2 if number is int else 2.0

    def parse(text: Any) -> Any:
        if isinstance(text, number):
            return text
        try:
            return number(str(text).strip())
        except ValueError:
            raise typer.BadParameter(f"{str(text)!r} is not {word}. fix: pass {flag} as {word}, e.g. {flag} "
                                     f"{example} (see --help for its range).") from None  # fmt: skip

    return parse


def with_number_parser(annotation: Any, flag: str, default: Any = None) -> Any:
    """``annotation`` with :func:`number_parser` as its option's parser, if it is an int or float option."""
    metadata = getattr(annotation, "__metadata__", ())
    info = parameter_info(annotation)
    base = typing.get_args(annotation)[0] if metadata else annotation
    numbers = [t for t in (typing.get_args(base) or (base,)) if t in (int, float)]
    if info is None or len(numbers) != 1 or getattr(info, "parser", None) is not None or bool in typing.get_args(base):
        return annotation
    info = copy.copy(info)
    info.parser = number_parser(numbers[0], flag, default)
    return typing.Annotated[(base, *[info if hasattr(m, "param_decls") else m for m in metadata])]


def kinds_of(annotation: Any) -> list[Kind]:
    """The kinds an annotation declares (``Annotated[type, typer.Option(...), KIND]``)."""
    return [m for m in getattr(annotation, "__metadata__", ()) if isinstance(m, Kind)]


def parameter_info(annotation: Any) -> Any:
    """Typer's ``Option``/``Argument`` of an annotation, if any."""
    return next((m for m in getattr(annotation, "__metadata__", ()) if hasattr(m, "param_decls")), None)
