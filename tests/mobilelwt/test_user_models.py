"""The user's own models (``file.py:factory``, ``package.module:factory``), residual teachers and ResNets."""

from __future__ import annotations

import json
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from torch import nn

from mobilelwt.errors import ConfigError
from mobilelwt.teachers import build_teacher, canonical_model_name, check_model, find_head, model_slug
from mobilelwt.teachers.user import trust_user_code
from tests.mobilelwt.app.cli.test_cli import assert_user_error, invoke

RESIDUAL = """
import torch
from torch import nn


class Block(nn.Module):
    def __init__(self, c_in, c_out, stride):
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.downsample = None
        if stride != 1 or c_in != c_out:
            self.downsample = nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride, bias=False), nn.BatchNorm2d(c_out))

    def forward(self, x):
        skip = x if self.downsample is None else self.downsample(x)
        return torch.relu(skip + self.bn2(self.conv2(torch.relu(self.bn1(self.conv1(x))))))


class ResidualNet(nn.Module):
    def __init__(self, num_classes=10):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 16, 3, 1, 1, bias=False), nn.BatchNorm2d(16), nn.ReLU())
        self.layer1 = Block(16, 32, 2)
        self.layer2 = Block(32, 48, 2)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(48, num_classes)

    def forward(self, x):
        return self.fc(torch.flatten(self.pool(self.layer2(self.layer1(self.stem(x)))), 1))


def residual(num_classes: int = 10):
    return ResidualNet(num_classes)


def fixed_head():
    return ResidualNet(7)


def not_a_model():
    return 42


def broken(num_classes: int = 10):
    return 1 / 0


class NumpyGate(nn.Module):
    def forward(self, x):
        return torch.from_numpy(x.detach().numpy().clip(0, None))


def unexportable(num_classes: int = 10):
    net = ResidualNet(num_classes)
    net.layer1.conv1 = nn.Sequential(net.layer1.conv1, NumpyGate())
    return net
"""


@pytest.fixture
def user_file(tmp_path: Path) -> Path:
    path = tmp_path / "models" / "mynet.py"
    path.parent.mkdir()
    path.write_text(textwrap.dedent(RESIDUAL))
    return path


@pytest.fixture
def trusted():
    trust_user_code(True)
    yield
    trust_user_code(False)


def test_user_code_is_an_explicit_opt_in(user_file: Path) -> None:
    with pytest.raises(ConfigError, match="explicit consent") as err:
        build_teacher(f"{user_file}:residual", num_classes=3, input_size=32)
    assert "--trust-code" in err.value.fix
    result = invoke("models", "-m", f"{user_file}:residual", "--input-size", "32")
    assert_user_error(result, "runs the Python code", "--trust-code")


def test_user_model_from_a_file(user_file: Path, trusted, monkeypatch) -> None:
    monkeypatch.chdir(user_file.parent)
    teacher = build_teacher("mynet.py:residual", num_classes=3, input_size=32, seed=1)
    assert teacher.name == f"{user_file}:residual" == canonical_model_name("mynet.py:residual")
    assert teacher.num_classes == 3 and teacher.model(torch.zeros(2, 3, 32, 32)).shape == (2, 3)
    assert teacher.code == {"reference": teacher.name, "kind": "file", "file": str(user_file),
                            "sha256": teacher.code["sha256"]}  # fmt: skip
    again = build_teacher(f"{user_file}:residual", num_classes=3, input_size=32, seed=1)
    assert all(torch.equal(a, b) for a, b in zip(teacher.model.state_dict().values(),
                                                 again.model.state_dict().values(), strict=True))  # fmt: skip
    assert model_slug(teacher.name) == "mynet.residual"
    assert find_head(teacher.model, 32) == "fc"


def test_user_model_from_a_module_path(user_file: Path, trusted, monkeypatch) -> None:
    monkeypatch.syspath_prepend(str(user_file.parent))
    (user_file.parent / "__init__.py").write_text("")
    teacher = build_teacher("mynet:residual", num_classes=4, input_size=32)
    assert teacher.name == "mynet:residual" and teacher.code["kind"] == "module"
    assert teacher.model(torch.zeros(1, 3, 32, 32)).shape == (1, 4)
    sys.modules.pop("mynet", None)


def test_factory_without_num_classes_gets_its_head_resized(user_file: Path, trusted) -> None:
    natural = build_teacher(f"{user_file}:fixed_head", input_size=32)
    assert natural.num_classes == 7
    resized = build_teacher(f"{user_file}:fixed_head", num_classes=5, input_size=32)
    assert resized.num_classes == 5 and resized.model.fc.out_features == 5


@pytest.mark.parametrize(
    ("reference", "expected"),
    [
        ("{file}:nope", "has no function 'nope'"),
        ("{file}:not_a_model", "returned int, not a torch.nn.Module"),
        ("{file}:broken", "ZeroDivisionError"),
        ("{dir}/missing.py:residual", "does not exist"),
        ("no_such_package.mod:build", "Cannot find module"),
        ("{file}:", "neither a known model"),
    ],
)
def test_bad_user_models_are_one_clear_error(user_file: Path, trusted, reference: str, expected: str) -> None:
    name = reference.format(file=user_file, dir=user_file.parent)
    with pytest.raises(ConfigError, match=expected):
        build_teacher(name, num_classes=3, input_size=32)


def test_import_errors_name_the_line(tmp_path: Path, trusted) -> None:
    path = tmp_path / "bad.py"
    path.write_text("import torch\n\nraise RuntimeError('needs a GPU')\n")
    with pytest.raises(ConfigError, match=r"RuntimeError: needs a GPU \(line 3 of bad.py\)"):
        check_model(f"{path}:build")


def test_an_input_size_the_model_cannot_take_is_refused(tmp_path: Path, trusted) -> None:
    path = tmp_path / "flat.py"
    path.write_text("from torch import nn\n\ndef mlp(num_classes=10):\n"
                    "    return nn.Sequential(nn.Flatten(), nn.Linear(3 * 8 * 8, num_classes))\n")  # fmt: skip
    assert build_teacher(f"{path}:mlp", num_classes=3, input_size=8).num_classes == 3
    with pytest.raises(ConfigError, match="cannot take 16×16 RGB images"):
        build_teacher(f"{path}:mlp", num_classes=3, input_size=16)


def test_unexportable_layer_is_named(user_file: Path, trusted) -> None:
    from targets import executorch
    from targets._common import UnsupportedOpError

    model = build_teacher(f"{user_file}:unexportable", num_classes=3, input_size=32).model
    with pytest.raises(UnsupportedOpError, match=r"layer layer1\.conv1\.1 \(NumpyGate\) cannot be captured"):
        executorch.export(model, (torch.zeros(1, 3, 32, 32),), Path("/nonexistent/x.pte"))


QUICK = ["--mac-speedup", "2", "--teacher-epochs", "1", "--layer-max-steps", "3", "--finetune-epochs", "0",
         "--input-size", "32", "--validation-images", "8", "--no-bench", "--threads", "2"]  # fmt: skip


def test_residual_user_model_builds_exports_and_validates_everywhere(user_file: Path, tmp_path: Path) -> None:
    out = tmp_path / "b"
    model = f"{user_file}:residual"
    refused = invoke("build", "--model", model, *QUICK, "--out", out)
    assert_user_error(refused, "explicit consent", "--trust-code")
    assert not out.exists()

    result = invoke("build", "--model", model, "--trust-code", *QUICK, "--target", "all", "--out", out)
    assert result.exit_code == 0, result.output
    plan = json.loads((out / "plan.json").read_text())
    # residual 3x3 convs (strided too) and the 1x1 downsample are replaced; the stem and the head are not
    assert {"layer1.conv1", "layer1.conv2", "layer1.downsample.0", "layer2.conv2"} <= set(plan["layers"])
    assert "stem.0" not in plan["layers"] and "fc" not in plan["layers"]
    assert plan["layers"]["layer1.downsample.0"]["module"] == "bottleneck"
    summary = json.loads((out / "build.json").read_text())
    assert summary["failures"] == {} and summary["artifacts"]["mismatch"] == []
    ok = set(summary["artifacts"]["ok"])
    assert {f"android/mynet.residual-student-fp32.{ext}" for ext in ("pte", "tflite")} <= ok
    assert "ios/mynet.residual-student-fp16.mlpackage" in ok
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["teacher"]["code"]["file"] == str(user_file)

    # later stages load the recorded code without --trust-code; changed code makes the build stale
    assert invoke("evaluate", out, "--data", "digits").exit_code == 0
    user_file.write_text(user_file.read_text() + "\n# edited\n")
    assert_user_error(invoke("evaluate", out, "--data", "digits"), "model code", "has changed since")


def test_unexportable_user_model_fails_its_artifacts_with_the_layer_named(user_file: Path, tmp_path: Path) -> None:
    out = tmp_path / "b"
    result = invoke("build", "--model", f"{user_file}:unexportable", "--trust-code", *QUICK,
                    "--target", "android", "--out", out)  # fmt: skip
    assert result.exit_code == 1, result.output
    failures = json.loads((out / "build.json").read_text())["failures"]
    assert failures and all("layer1.conv1.1 (NumpyGate)" in reason for reason in failures.values())


def test_resnet18_compresses_exports_and_validates(tmp_path: Path) -> None:
    out = tmp_path / "r18"
    result = invoke("build", "--model", "resnet18", *QUICK, "--target", "android", "--out", out)
    assert result.exit_code == 0, result.output
    plan = json.loads((out / "plan.json").read_text())
    names = set(plan["layers"])
    assert {"layer2.0.conv1", "layer2.0.downsample.0", "layer4.1.conv2"} <= names and "conv1" not in names
    summary = json.loads((out / "build.json").read_text())
    assert sorted(summary["artifacts"]["ok"]) == sorted(
        f"android/resnet18-{role}-fp32.{ext}" for role in ("teacher", "student") for ext in ("pte", "tflite")
    )


def _depthwise_ctx(width: int = 32):
    from mobilelwt.plan import default_candidates
    from mobilelwt.planners import PlanningContext
    from mobilelwt.profile import count_macs

    def block(c_in: int, c_out: int) -> nn.Sequential:
        return nn.Sequential(nn.Conv2d(c_in, c_in, 3, 1, 1, groups=c_in), nn.ReLU(), nn.Conv2d(c_in, c_out, 1))

    model = nn.Sequential(nn.Conv2d(3, 16, 3, 2, 1), block(16, width), block(width, width), nn.AdaptiveAvgPool2d(1),
                          nn.Flatten(), nn.Linear(width, 10)).eval()  # fmt: skip
    head = find_head(model, 32)
    return PlanningContext("mobile", model, 32, 10, default_candidates(model, 32, head), count_macs(model, 32))


@pytest.mark.parametrize("planner", ["latency", "latency-uniform"])
@pytest.mark.parametrize(
    ("per_layer_ms", "width", "fix"), [(0.02, 32, "Keep the teacher"), (0.0, 256, "Ask for at most --speedup")]
)
def test_nothing_to_gain_names_the_best_speedup_and_the_time_holders(
    planner: str, per_layer_ms: float, width: int, fix: str, tmp_path: Path
) -> None:
    from mobilelwt.planners.latency import plan_latency_uniform
    from mobilelwt.planners.measured import plan_measured
    from tests.mobilelwt.fake_probe import FakeProbe

    ctx = _depthwise_ctx(width)
    # latency proportional to MACs plus a fixed cost per layer (what small layers pay)
    probe = FakeProbe(per_mac_ns=1.0, per_weight_ns=0.0, overhead_ms=per_layer_ms, in_network=1.0, fixed_ms=0.0)
    with pytest.raises(ConfigError, match="Nothing to gain at 8") as err:
        if planner == "latency":
            plan_measured(ctx, 8.0, torch.randn(4, 3, 32, 32), probe=probe, table_path=tmp_path / "t.json",
                          grid_points=3)  # fmt: skip
        else:
            plan_latency_uniform(ctx, 8.0, probe=probe)
    message = str(err.value)
    assert "faster than the teacher" in message and "layers that are never replaced take" in message
    assert "grouped/depthwise" in message and "first conv" in message
    assert fix in err.value.fix


def test_mac_target_out_of_reach_names_the_layers_kept() -> None:
    from mobilelwt.planners import plan_uniform

    with pytest.raises(ConfigError, match=r"most of all .*\(first conv, \d+%\)"):
        plan_uniform(_depthwise_ctx(), 50.0)


def test_edited_model_code_is_another_teacher_for_every_stage_key(user_file: Path, trusted) -> None:
    """Same weights (same seed), edited forward: the teacher fingerprint, hence the compress key, must change."""
    from mobilelwt.loading import teacher_fingerprint

    before = build_teacher(f"{user_file}:residual", num_classes=3, input_size=32, seed=0)
    user_file.write_text(user_file.read_text().replace("torch.relu(skip +", "torch.relu(0.5 * skip +"))
    after = build_teacher(f"{user_file}:residual", num_classes=3, input_size=32, seed=0)
    assert all(torch.equal(a, b) for a, b in zip(before.model.state_dict().values(),
                                                 after.model.state_dict().values(), strict=True))  # fmt: skip
    assert before.code["sha256"] != after.code["sha256"]
    assert teacher_fingerprint(before) != teacher_fingerprint(after)
