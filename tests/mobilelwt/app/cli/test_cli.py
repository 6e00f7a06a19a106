import json
import pickle
import subprocess
import sys

import pytest
import torch
from typer.testing import CliRunner

from mobilelwt import __version__
from mobilelwt.app.cli import app
from tests.conftest import write_image_folder

runner = CliRunner()


def invoke(*args: str):
    return runner.invoke(app, [str(a) for a in args])


def assert_user_error(result, *needles: str) -> None:
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    assert "error:" in result.output and "fix:" in result.output
    for needle in needles:
        assert needle in result.output, result.output


def test_version_and_help() -> None:
    assert invoke("--version").output.strip() == f"mobilelwt {__version__}"
    result = invoke("--help")
    assert result.exit_code == 0
    for command in ("models", "datasets", "train-teacher"):
        assert command in result.output


def test_models_table_and_layers() -> None:
    result = invoke("models", "-m", "alexnet", "-m", "vgg16", "--layers")
    assert result.exit_code == 0, result.output
    assert "0.714" in result.output and "15.470" in result.output
    assert "features.0" in result.output and "classifier.6" in result.output


def test_models_json() -> None:
    result = invoke("models", "-m", "alexnet", "--input-size", "112", "--num-classes", "10", "--json")
    rows = json.loads(result.output)
    assert rows[0]["model"] == "alexnet" and rows[0]["num_classes"] == 10 and "layers" not in rows[0]


def test_datasets() -> None:
    result = invoke("datasets")
    assert result.exit_code == 0 and "digits" in result.output and "1797" in result.output


def test_unknown_model_lists_known_names() -> None:
    assert_user_error(invoke("models", "-m", "resnet9000"), "Unknown model 'resnet9000'", "alexnet", "vgg16")


@pytest.fixture
def good_weights(tmp_path):
    path = tmp_path / "w.pt"
    from mobilelwt.teachers import build_teacher

    torch.save(build_teacher("alexnet", num_classes=3, input_size=64).model.state_dict(), path)
    return path


def train(tmp_path, *extra):
    return invoke("train-teacher", "--out", tmp_path / "t.pt", "--epochs", "1", "--max-steps-per-epoch", "1", *extra)


def test_train_teacher_on_image_folder_then_reload(tmp_path, image_folder) -> None:
    result = train(tmp_path, "--model", "alexnet", "--data", image_folder, "--input-size", "64", "--batch-size", "8")
    assert result.exit_code == 0, result.output
    assert "val top-1" in result.output
    assert (tmp_path / "t.pt").is_file() and (tmp_path / "t.json").is_file()
    # fine-tune from the file just written: classes and size come from its metadata
    again = invoke(
        "train-teacher",
        "--model",
        "alexnet",
        "--data",
        image_folder,
        "--weights",
        tmp_path / "t.pt",
        "--out",
        tmp_path / "t2.pt",
        "--epochs",
        "1",
        "--max-steps-per-epoch",
        "1",
        "--optimizer",
        "sgd",
    )
    assert again.exit_code == 0, again.output


def test_train_teacher_error_paths(tmp_path, image_folder, good_weights) -> None:
    assert_user_error(train(tmp_path, "--model", "alexnett"), "Unknown model", "vgg16")
    assert_user_error(train(tmp_path, "--model", "alexnet", "--data", tmp_path / "none"), "does not exist")
    (tmp_path / "empty").mkdir()
    assert_user_error(train(tmp_path, "--model", "alexnet", "--data", tmp_path / "empty"), "no class sub-directories")
    assert_user_error(train(tmp_path, "--model", "alexnet", "--input-size", "32"), "--input-size 63")
    assert_user_error(train(tmp_path, "--model", "alexnet", "--optimizer", "lion"), "Unknown --optimizer")

    corrupt = tmp_path / "corrupt.pt"
    corrupt.write_bytes(b"garbage" * 10)
    assert_user_error(train(tmp_path, "--model", "alexnet", "--weights", corrupt), "not a readable PyTorch checkpoint")

    # 3-class weights for a 10-class dataset: the head does not fit
    assert_user_error(train(tmp_path, "--model", "alexnet", "--weights", good_weights), "classifier.6.weight (3, 4096)")

    evil = tmp_path / "evil.pt"
    evil.write_bytes(pickle.dumps({"state_dict": _Evil()}, protocol=2))
    assert_user_error(train(tmp_path, "--model", "alexnet", "--weights", evil), "refused")

    classes = write_image_folder(tmp_path / "other", {"x": 4, "y": 4, "z": 4})
    trained = tmp_path / "trained.pt"
    ok = invoke(
        "train-teacher",
        "--model",
        "alexnet",
        "--data",
        image_folder,
        "--input-size",
        "64",
        "--out",
        trained,
        "--epochs",
        "1",
        "--max-steps-per-epoch",
        "1",
    )
    assert ok.exit_code == 0, ok.output
    assert_user_error(
        train(tmp_path, "--model", "alexnet", "--data", classes, "--weights", trained),
        "do not match the model's classes",
    )
    assert not list(tmp_path.glob(".*.tmp"))


class _Evil:
    def __reduce__(self):
        return (print, ("pwned",))


def test_console_script_prints_no_traceback(tmp_path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "mobilelwt", "train-teacher", "--model", "nope", "--out", str(tmp_path / "x.pt")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2
    assert "Unknown model 'nope'" in proc.stderr and "Traceback" not in proc.stderr + proc.stdout


def test_compress_and_evaluate_commands(tmp_path, tiny_teacher) -> None:
    out = tmp_path / "build"
    args = ["compress", "--model", "tinynet", "--weights", tiny_teacher, "--out", out, "--mac-speedup", "2.5",
            "--layer-max-steps", "10", "--finetune-epochs", "0"]  # fmt: skip
    result = invoke(*args)
    assert result.exit_code == 0, result.output
    assert "features.3" in result.output
    # what the plan was made for, then what it gave: a MAC target is not a latency and says so
    assert "planned for 2.5× fewer MACs (uniform planner); latency is what the bench measured" in result.output
    assert "fewer; top-1 change" in result.output and "validation images)" in result.output
    assert (out / "student.pt").is_file()
    evaluated = invoke("evaluate", out, "--data", "digits")
    assert evaluated.exit_code == 0, evaluated.output
    assert "teacher" in evaluated.output and "student" in evaluated.output

    assert_user_error(invoke(*args[:-2], "--planner", "magic"), "Unknown planner")
    assert_user_error(invoke(*args, "--mac-speedup", "500"), "out of reach")
    # --speedup is measured on the target, --mac-speedup is MACs: the MAC planners refuse a measured target
    assert_user_error(invoke(*args[:7], "--planner", "uniform", "--speedup", "2"), "plans MACs", "--mac-speedup 2")
    assert_user_error(invoke(*args, "--speedup", "2"), "were both given")
    assert_user_error(invoke(*args, "--planner", "latency"), "meets a measured speedup", "--speedup 2.5")
    assert_user_error(invoke("evaluate", tmp_path / "nothing", "--data", "digits"), "does not exist")


def test_speedup_is_measured_on_the_target_by_default_and_the_table_is_reused(tmp_path, wide_teacher) -> None:
    out = tmp_path / "build"
    # widenet: a 1.1x target tinynet met only when the host was quiet (tests/conftest.py)
    args = ["compress", "--model", "widenet", "--weights", wide_teacher, "--out", out, "--layer-epochs", "0",
            "--finetune-epochs", "0", "--threads", "1", "--rank-grid", "3", "--calib-images", "16",
            "--timing-cap", "5"]  # fmt: skip
    result = invoke(*args, "--speedup", "1.1")
    assert result.exit_code == 0, result.output
    plan = json.loads((out / "plan.json").read_text())
    d = plan["details"]
    assert plan["planner"] == "latency" and d["target"] == "measured speedup" and d["verified"] is True
    assert d["probe"] == "executorch fp32 host, 2 threads" and d["measured_ci95"][1] >= 1.1  # meets the target
    assert d["cache"] == "cold" and "converged" in d and d["load"]["known"] is True
    assert all(r["runs"] >= 6 for r in d["rounds"] if r["feasible"])  # interleaved repeats, never one reading
    table = json.loads((out / "latency-table.json").read_text())
    assert table["identity"]["device"] == "host" and table["context"]["runtime"] == "executorch"
    assert d["table"]["timed_now"] == len(table["entries"]) > 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["plan_target"]["kind"] == "measured speedup" and metrics["plan_target"]["value"] == 1.1
    assert all(rec["predicted_ms"] > 0 for rec in metrics["layers"].values())

    again = invoke(*args, "--speedup", "1.05")  # a new plan in the same directory: the table is not timed again
    assert again.exit_code == 0, again.output
    replanned = json.loads((out / "plan.json").read_text())["details"]
    assert replanned["table"]["timed_now"] == 0 and replanned["measured_ci95"][1] >= 1.05

    replay = invoke("compress", "--model", "widenet", "--weights", wide_teacher, "--out", tmp_path / "replay",
                    "--plan", out / "plan.json", "--layer-epochs", "0", "--finetune-epochs", "0")  # fmt: skip
    assert replay.exit_code == 0, replay.output
    assert (
        json.loads((tmp_path / "replay" / "plan.json").read_text())["layers"]
        == json.loads((out / "plan.json").read_text())["layers"]
    )


def test_the_cli_factory_gives_a_searchs_rungs_one_probe() -> None:
    from dataclasses import replace

    from mobilelwt.app.cli._options import CompressOptions, TimingOptions

    options = CompressOptions(speedup=2.0)
    config = options.config(TimingOptions())
    factory = options.latency_probe(config)
    rung = replace(config.latency, band=0.5)
    assert factory(config.latency) is factory(rung)  # same timing, another band: one probe, one lowered teacher
    assert factory(replace(config.latency, threads=1)) is not factory(config.latency)
