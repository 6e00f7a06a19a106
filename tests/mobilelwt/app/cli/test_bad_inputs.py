"""Every bad input gives one line naming the problem and the fix, exit 2, no traceback, and nothing half-written."""

import inspect
import os
import shutil
import struct
import typing
import zlib
from pathlib import Path

import pytest
import torch

from mobilelwt.compress import CompressConfig, compress
from mobilelwt.distill import DistillConfig
from mobilelwt.layerwise import LayerwiseConfig
from mobilelwt.settings import RunSettings
from tests.conftest import write_image_folder
from tests.mobilelwt.app.cli.test_cli import assert_user_error, invoke


@pytest.fixture(scope="module")
def images(tmp_path_factory) -> Path:
    """A small ImageFolder: an input an output must not be written into."""
    return write_image_folder(tmp_path_factory.mktemp("images") / "data", {"a": 4, "b": 4})


@pytest.fixture(scope="module")
def finished(tmp_path_factory, tiny_teacher):
    """A finished compress build to damage copies of."""
    out = tmp_path_factory.mktemp("finished") / "b"
    config = CompressConfig(mac_speedup=2.0, layerwise=LayerwiseConfig(epochs=0), finetune=DistillConfig(epochs=0))
    compress("tinynet", out=out, weights=str(tiny_teacher), config=config, run=RunSettings(threads=1))
    return out


def _png_header_only(path: Path, width: int, height: int) -> Path:
    """A PNG that claims width × height pixels (PIL refuses it on open; nothing is allocated here)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0")) + chunk(b"IEND", b"")
    )
    return path


def _compress(ctx, *extra, out=None):
    return ["compress", "--model", "tinynet", "--weights", ctx["teacher"], "--out", out or ctx["tmp"] / "out",
            "--layer-epochs", "0", "--finetune-epochs", "0", *extra]  # fmt: skip


def _damaged(ctx, name: str, content: str) -> Path:
    copy = ctx["tmp"] / "damaged"
    shutil.copytree(ctx["finished"], copy)
    (copy / name).write_text(content)
    return copy


def _nan_checkpoint(ctx) -> Path:
    """The tiny teacher's checkpoint with NaN in one weight (a training that diverged)."""
    checkpoint = torch.load(ctx["teacher"], weights_only=True)
    name = next(k for k, v in checkpoint["state_dict"].items() if v.is_floating_point())
    checkpoint["state_dict"][name][0] = float("nan")
    path = ctx["tmp"] / "nan.pt"
    torch.save(checkpoint, path)
    return path


def _binary(ctx, name: str) -> Path:
    copy = ctx["tmp"] / "damaged"
    shutil.copytree(ctx["finished"], copy)
    (copy / name).write_bytes(bytes(range(256)) * 4)
    return copy


def _bomb_data(ctx) -> Path:
    root = write_image_folder(ctx["tmp"] / "bomb", {"a": 3, "b": 3})
    _png_header_only(root / "a" / "huge.png", 20000, 20000)
    return root


def _readonly_dir(ctx) -> Path:
    return Path("/proc/mobilelwt-build")  # not writable even for root


CASES = {
    "speedup nan": (lambda c: _compress(c, "--speedup", "nan"), "--speedup must be a finite number"),
    "speedup below 1": (lambda c: _compress(c, "--speedup", "0.5"), "--speedup"),
    "input size negative": (lambda c: _compress(c, "--input-size", "-5"), "too small"),
    "input size zero": (lambda c: _compress(c, "--input-size", "0"), "too small"),
    "input size huge": (lambda c: _compress(c, "--input-size", "100000"), "too large"),
    "models input size zero": (lambda c: ["models", "--input-size", "0"], "too small"),
    "models input size huge": (lambda c: ["models", "-m", "vgg16", "--input-size", "100000"], "too large"),
    "models one class": (lambda c: ["models", "--num-classes", "1"], "--num-classes"),
    "layer batch size 0": (lambda c: _compress(c, "--layer-batch-size", "0"), "--layer-batch-size"),
    "layer epochs nan": (lambda c: _compress(c, "--layer-epochs", "nan"), "--layer-epochs"),
    "layer lr negative": (lambda c: _compress(c, "--layer-lr", "-1"), "--layer-lr"),
    "finetune alpha 2": (lambda c: _compress(c, "--alpha", "2"), "--alpha"),
    "temperature 0": (lambda c: _compress(c, "--temperature", "0"), "--temperature"),
    "calib images 0": (lambda c: _compress(c, "--calib-images", "0"), "--calib-images"),
    "speedup and mac speedup": (lambda c: _compress(c, "--speedup", "2", "--mac-speedup", "2"), "both given"),
    "mac planner, measured speedup": (
        lambda c: _compress(c, "--planner", "sensitivity", "--speedup", "2"),
        "plans MACs",
    ),
    "latency precision fp16": (lambda c: _compress(c, "--latency-precision", "fp16"), "--latency-precision"),
    "latency threads 0": (lambda c: _compress(c, "--latency-threads", "0"), "--latency-threads"),
    "rank grid 1": (lambda c: _compress(c, "--rank-grid", "1"), "--rank-grid"),
    "unknown candidate module": (lambda c: _compress(c, "--candidate-modules", "magic"), "candidate module"),
    "latency table in a missing folder": (
        lambda c: _compress(c, "--latency-table", str(c["tmp"] / "no" / "t.json")),
        "folder that does not exist",
    ),
    "latency table a directory": (lambda c: _compress(c, "--latency-table", str(c["tmp"])), "a directory"),
    "latency device empty": (lambda c: _compress(c, "--latency-device", " "), "--latency-device"),
    "threads 0": (lambda c: _compress(c, "--threads", "0"), "--threads"),
    "unknown conv module": (lambda c: _compress(c, "--conv-module", "fft"), "Unknown --conv-module"),
    "val fraction nan": (lambda c: _compress(c, "--val-fraction", "nan"), "--val-fraction"),
    "out is a file": (lambda c: _compress(c, out=c["finished"] / "plan.json"), "is a file"),
    "out is the teacher checkpoint": (lambda c: _compress(c, out=c["teacher"]), "is the input"),
    "out not permitted": (lambda c: _compress(c, out=_readonly_dir(c)), "virtual filesystem"),
    "out under a file": (lambda c: _compress(c, out=c["teacher"] / "sub"), "is a file"),
    "train-teacher out is a directory": (
        lambda c: ["train-teacher", "--model", "tinynet", "--out", c["tmp"], "--epochs", "1"],
        "is a directory",
    ),
    "train-teacher epochs negative": (
        lambda c: ["train-teacher", "--model", "tinynet", "--out", c["tmp"] / "t.pt", "--epochs", "-1"],
        "--epochs",
    ),
    "huge image in the data": (
        lambda c: [
            "train-teacher",
            "--model",
            "tinynet",
            "--data",
            _bomb_data(c),
            "--out",
            c["tmp"] / "t.pt",
            "--epochs",
            "1",
            "--input-size",
            "32",
        ],  # fmt: skip
        "too large to decode safely",
    ),
    "empty manifest (evaluate)": (
        lambda c: ["evaluate", _damaged(c, "manifest.json", ""), "--data", "digits"],
        "manifest.json is empty",
    ),
    "truncated manifest (evaluate)": (
        lambda c: ["evaluate", _damaged(c, "manifest.json", '{"teacher": {'), "--data", "digits"],
        "manifest.json is not valid JSON",
    ),
    "truncated manifest (export)": (
        lambda c: ["export", _damaged(c, "manifest.json", '{"teacher": {'), "--target", "android"],
        "manifest.json is not valid JSON",
    ),
    "foreign manifest (export)": (
        lambda c: ["export", _damaged(c, "manifest.json", '{"name": "x"}'), "--target", "android"],
        "is not a mobilelwt build manifest",
    ),
    "replaced student (export)": (
        lambda c: ["export", _damaged(c, "student.pt", "not the student"), "--target", "android"],
        "is not the student this build's manifest records",
    ),
    "truncated artifacts (bench)": (
        lambda c: ["bench", _damaged(c, "artifacts.json", '{"artifacts": ['), "--device", "host"],
        "artifacts.json is not valid JSON",
    ),
    "truncated artifacts (report)": (
        lambda c: ["report", _damaged(c, "artifacts.json", '{"artifacts": [')],
        "artifacts.json is not valid JSON",
    ),
    "NaN weights (compress)": (lambda c: _compress(c, "--weights", _nan_checkpoint(c)), "NaN or infinite values"),
    "NaN weights (train-teacher)": (
        lambda c: ["train-teacher", "--model", "tinynet", "--weights", _nan_checkpoint(c), "--out", c["tmp"] / "t.pt"],
        "NaN or infinite values",
    ),
    "binary bench records (report)": (
        lambda c: ["report", _binary(c, "bench.jsonl")],
        "bench.jsonl cannot be read as bench records",
    ),
    "empty metrics (export)": (
        lambda c: ["export", _damaged(c, "metrics.json", ""), "--target", "android"],
        "metrics.json is empty",
    ),
    "foreign metrics (evaluate)": (
        lambda c: ["evaluate", _damaged(c, "metrics.json", '{"accuracy": 1}'), "--data", "digits"],
        "is not a mobilelwt compress metrics",
    ),
    "plan is a directory (compress)": (lambda c: _compress(c, "--plan", c["tmp"]), "is a directory, not a file"),
    "seed overflow (compress)": (lambda c: _compress(c, "--seed", "100000000000000000000000"), "--seed"),
    "threads beyond the cores (compress)": (lambda c: _compress(c, "--threads", "256"), "cores"),
    "no artifacts (bench)": (lambda c: ["bench", c["finished"], "--device", "host"], "has no artifacts.json"),
    "validation images -1": (
        lambda c: ["export", c["finished"], "--validation-images", "-1"],
        "--validation-images must be a whole number",
    ),
    "validation images 0": (
        lambda c: ["export", c["finished"], "--validation-images", "0"],
        "--validation-images must be a whole number",
    ),
    "unknown tflite quantization": (
        lambda c: ["export", c["finished"], "--tflite-quantization", "float8"],
        "Unknown --tflite-quantization",
    ),
    "bench threads 0": (lambda c: ["bench", c["finished"], "--threads", "0"], "--threads"),
    "bench warmup -1": (lambda c: ["bench", c["finished"], "--warmup", "-1"], "--warmup"),
    "bench runs 0": (lambda c: ["bench", c["finished"], "--runs", "0"], "--runs"),
    "bench empty device": (lambda c: ["bench", c["finished"], "--device", ""], "--device names no device"),
    "bench unknown runner": (lambda c: ["bench", c["finished"], "--runner", "java"], "Unknown --runner"),
    "report unknown format": (lambda c: ["report", c["finished"], "--format", "pdf"], "Unknown --format"),
    "build unknown model": (
        lambda c: ["build", "--model", "resnet9000", "--out", c["tmp"] / "out"],
        "Unknown model",
    ),
    "build unknown target": (
        lambda c: ["build", "--model", "tinynet", "--target", "symbian", "--out", c["tmp"] / "out"],
        "Unknown --target",
    ),
    "build validation images 0": (
        lambda c: ["build", "--model", "tinynet", "--validation-images", "0", "--out", c["tmp"] / "out"],
        "--validation-images",
    ),
    "build input size 0": (
        lambda c: ["build", "--model", "tinynet", "--input-size", "0", "--out", c["tmp"] / "out"],
        "too small",
    ),
    "build missing data": (
        lambda c: ["build", "--model", "tinynet", "--data", c["tmp"] / "no-such-data", "--out", c["tmp"] / "out"],
        "does not exist",
    ),
    "build unknown dataset name": (
        lambda c: ["build", "--model", "tinynet", "--data", "mnist", "--out", c["tmp"] / "out"],
        "neither a built-in dataset",
    ),
    "build val fraction 1.5": (
        lambda c: ["build", "--model", "tinynet", "--val-fraction", "1.5", "--out", c["tmp"] / "out"],
        "--val-fraction",
    ),
    "build speedup inf": (
        lambda c: ["build", "--model", "tinynet", "--speedup", "inf", "--out", c["tmp"] / "out"],
        "--speedup",
    ),
}


def _assert_refused(result, needle: str, ctx) -> None:
    assert_user_error(result, needle)
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1, f"more than one line: {result.output}"
    assert not (ctx["tmp"] / "out").exists(), "a refused command left an output directory"
    assert not list(ctx["tmp"].rglob(".*.tmp")), "a temp file was left behind"


@pytest.mark.parametrize("case", list(CASES))
def test_bad_input_gives_one_line_and_exit_2_with_no_leftovers(case, tmp_path, tiny_teacher, finished) -> None:
    make_args, needle = CASES[case]
    ctx = {"tmp": tmp_path, "teacher": Path(tiny_teacher), "finished": finished}
    before = sorted(p.name for p in finished.iterdir())
    result = invoke(*make_args(ctx))
    _assert_refused(result, needle, ctx)
    assert sorted(p.name for p in finished.iterdir()) == before, "a refused command changed a good build"


# -- every command × every kind of value it accepts -------------------------------------------------------------
# Generated from the commands themselves: each option names its kind (mobilelwt.app.cli._params), and each kind
# carries values it must refuse. A new option with a kind joins the table by itself.

BASE = {  # a valid command line for each command; the bad value is appended (the last occurrence wins)
    "models": lambda c: ["models", "-m", "alexnet"],
    "train-teacher": lambda c: ["train-teacher", "--model", "tinynet", "--out", c["tmp"] / "t.pt", "--epochs", "1"],
    "compress": lambda c: _compress(c),
    "evaluate": lambda c: ["evaluate", "{positional}", "--data", "digits"],
    "export": lambda c: ["export", "{positional}", "--target", "android"],
    "build": lambda c: ["build", "--model", "tinynet", "--out", c["tmp"] / "out"],
    "bench": lambda c: ["bench", "{positional}", "--device", "host"],
    "report": lambda c: ["report", "{positional}"],
}


def _kind_rows() -> list[tuple[str, str, str, bool, str]]:
    """(command, parameter, flag, is the positional argument, bad value) for every kind of every option."""
    from mobilelwt.app.cli import app
    from mobilelwt.app.cli._params import flag_of, kinds_of, parameter_info

    rows = []
    for command in app.registered_commands:
        for parameter in inspect.signature(command.callback).parameters.values():
            info = parameter_info(parameter.annotation)
            for kind in kinds_of(parameter.annotation):
                positional = type(info).__name__ == "ArgumentInfo"
                for bad in kind.bad:
                    rows.append((command.name, parameter.name, flag_of(parameter.name, info), positional, bad))
    return rows


KIND_ROWS = _kind_rows()


def _placeholders(ctx) -> dict[str, str]:
    return {
        "{proc}": "/proc/mobilelwt-out",
        "{under_file}": str(ctx["teacher"] / "sub"),
        "{a_file}": str(ctx["teacher"]),
        "{a_dir}": str(ctx["tmp"]),
        "{missing}": str(ctx["tmp"] / "no-such-path"),
        "{data_dir}": str(ctx["images"]),
        "{in_data_dir}": str(ctx["images"] / "t.pt"),
        "{too_many_threads}": str((os.cpu_count() or 1) + 1),
    }


@pytest.mark.parametrize(
    ("command", "parameter", "flag", "positional", "bad"),
    KIND_ROWS,
    ids=[f"{c} {f} {b!r}" for c, _, f, _, b in KIND_ROWS],
)
def test_every_kind_of_value_is_refused_alike_by_every_command(
    command, parameter, flag, positional, bad, tmp_path, tiny_teacher, finished, images
) -> None:
    ctx = {"tmp": tmp_path, "teacher": Path(tiny_teacher), "finished": finished, "images": images}
    value = _placeholders(ctx).get(bad, bad)
    args = [str(a) for a in BASE[command](ctx)]
    if positional:
        args = [value if a == "{positional}" else a for a in args]
    else:
        args = [str(finished) if a == "{positional}" else a for a in args] + [flag, value]
        if bad in ("{data_dir}", "{in_data_dir}"):
            args += ["--data", str(images)]  # the output must not be (inside) the command's own data
    before = sorted(p.name for p in finished.iterdir())
    result = invoke(*args)
    _assert_refused(result, flag, ctx)
    assert sorted(p.name for p in finished.iterdir()) == before, "a refused command changed a good build"


def _number_rows() -> list[tuple[str, str, str]]:
    """(command, flag, malformed text) for every whole-number and number option."""
    from mobilelwt.app.cli import app
    from mobilelwt.app.cli._params import flag_of, parameter_info

    rows = []
    for command in app.registered_commands:
        for parameter in inspect.signature(command.callback).parameters.values():
            info = parameter_info(parameter.annotation)
            base = typing.get_args(parameter.annotation)[0] if info is not None else None
            types = set(typing.get_args(base) or (base,))
            if info is not None and types & {int, float} and bool not in types:
                rows.append((command.name, flag_of(parameter.name, info), "nan" if int in types else "fast"))
    return rows


NUMBER_ROWS = _number_rows()


@pytest.mark.parametrize(("command", "flag", "text"), NUMBER_ROWS, ids=[f"{c} {f} {t}" for c, f, t in NUMBER_ROWS])
def test_a_malformed_number_says_the_fix(command, flag, text, tmp_path, tiny_teacher, finished) -> None:
    ctx = {"tmp": tmp_path, "teacher": Path(tiny_teacher), "finished": finished}
    args = [str(finished) if str(a) == "{positional}" else str(a) for a in BASE[command](ctx)]
    result = invoke(*args, flag, text)
    assert result.exit_code == 2 and "Traceback" not in result.output, result.output
    assert flag in result.output and "fix:" in result.output and "is not" in result.output, result.output
    assert not (tmp_path / "out").exists()


def test_the_catalogue_covers_every_command_and_kind() -> None:
    from mobilelwt.app.cli import _params, app

    used = {kind.name for command in app.registered_commands
            for parameter in inspect.signature(command.callback).parameters.values()
            for kind in _params.kinds_of(parameter.annotation)}  # fmt: skip
    declared = {k.name for k in vars(_params).values() if isinstance(k, _params.Kind)}
    assert declared - used == set(), "a kind no command uses"
    assert {row[0] for row in KIND_ROWS} == set(BASE)
    assert len(CASES) + len(KIND_ROWS) + len(NUMBER_ROWS) >= 200


def test_ctrl_c_prints_one_line_saying_what_was_kept(tmp_path, tiny_teacher, monkeypatch) -> None:
    import mobilelwt.frontier

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    # the command reaches compress through mobilelwt.frontier.make_student (compress, or a --max-drop search)
    monkeypatch.setattr(mobilelwt.frontier, "compress", interrupted)
    result = invoke("compress", "--model", "tinynet", "--weights", tiny_teacher, "--out", tmp_path / "out")
    assert result.exit_code == 130
    assert "interrupted:" in result.output and "run the same command again to resume" in result.output
    assert "Traceback" not in result.output
