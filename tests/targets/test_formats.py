"""Every runtime adapter, every precision, on a tiny model; unsupported operators; Core ML structure."""

import pytest
import torch
from torch import nn

from targets import TargetError, UnsupportedOpError
from targets.coreml import CoreMLConfig, HostModel, can_predict, structural_check
from targets.coreml import export as export_coreml
from targets.executorch import ExecuTorchConfig, HostProgram
from targets.executorch import export as export_pte
from targets.tflite import HostInterpreter, TFLiteConfig
from targets.tflite import export as export_tflite
from targets.validation import validate
from tests.conftest import TinyNet

LABELS = [f"class{i}" for i in range(10)]


@pytest.fixture(scope="module")
def tiny():
    torch.manual_seed(0)
    model = TinyNet(num_classes=10).eval()
    images = torch.randn(24, 3, 32, 32)
    return model, (images[:1],), images, [(images, model(images).argmax(1))]


@pytest.mark.parametrize(
    ("exporter", "config", "loader", "suffix"),
    [
        (export_pte, ExecuTorchConfig("int8"), HostProgram, "pte"),
        (export_tflite, TFLiteConfig("int8", "static"), HostInterpreter, "tflite"),
        (export_tflite, TFLiteConfig("int8", "dynamic"), HostInterpreter, "tflite"),
    ],
    ids=["executorch-int8", "tflite-int8-static", "tflite-int8-dynamic"],
)
def test_int8_exports_run_on_their_host_runtime_close_to_pytorch(tmp_path, tiny, exporter, config, loader, suffix):
    model, example, calibration, batches = tiny
    artifact = exporter(model, example, tmp_path / f"tiny.{suffix}", config, calibration=calibration)
    assert artifact.precision == "int8" and artifact.bytes == artifact.path.stat().st_size
    fp32 = exporter(model, example, tmp_path / f"tiny32.{suffix}", type(config)())
    assert artifact.bytes < 0.5 * fp32.bytes  # int8 weights
    result = validate(artifact.path.name, loader(artifact.path, threads=1), model, batches, precision="int8")
    assert result.passed, result.failures
    assert 15.0 < result.sqnr_db < 60.0  # quantised: close, but not bit-exact


def test_tflite_static_int8_has_int8_io_that_the_host_runner_handles(tmp_path, tiny) -> None:
    model, example, calibration, _ = tiny
    artifact = export_tflite(model, example, tmp_path / "s.tflite", TFLiteConfig("int8"), calibration=calibration)
    assert artifact.summary["input_dtype"] == "int8" and artifact.summary["quantization"] == "static"
    out = HostInterpreter(artifact.path)(example[0])
    assert out.dtype == torch.float32 and out.shape == (1, 10)


def test_executorch_summary_reports_delegation(tmp_path, tiny) -> None:
    model, example, *_ = tiny
    artifact = export_pte(model, example, tmp_path / "t.pte")
    assert artifact.summary["backend"] == "xnnpack" and artifact.summary["delegate_calls"] >= 1


def test_int8_without_calibration_is_refused(tmp_path, tiny) -> None:
    model, example, *_ = tiny
    with pytest.raises(TargetError, match="calibration images"):
        export_pte(model, example, tmp_path / "x.pte", ExecuTorchConfig("int8"))


@pytest.mark.parametrize("precision", ["fp16", "fp32", "int8"])
def test_coreml_package_is_structurally_valid(tmp_path, tiny, precision) -> None:
    model, example, *_ = tiny
    config = CoreMLConfig(precision=precision, class_labels=LABELS, mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25))
    artifact = export_coreml(model, example, tmp_path / f"tiny-{precision}.mlpackage", config)
    assert artifact.path.is_dir() and artifact.format == "mlpackage" and artifact.bytes > 0
    assert not list(tmp_path.glob(".tiny*"))  # no temp package left behind
    result = structural_check(artifact.path, input_shape=(1, 3, 32, 32), num_classes=10, precision=precision,
                              class_labels=LABELS)  # fmt: skip
    assert result["passed"], result["failures"]
    assert result["inputs"] == {"image": [1, 3, 32, 32]} and "classLabel" in result["outputs"]
    conv_layers = sum(isinstance(m, torch.nn.Conv2d) for m in model.modules())
    assert result["ops"]["conv"] == conv_layers and (result["compressed_weight_ops"] > 0) == (precision == "int8")
    wrong = structural_check(artifact.path, input_shape=(1, 3, 64, 64), num_classes=10, precision=precision,
                             class_labels=LABELS[::-1])  # fmt: skip
    assert not wrong["passed"] and any("inputs" in f for f in wrong["failures"])
    assert any("class labels" in f for f in wrong["failures"])


def test_coreml_reexport_replaces_the_package_atomically(tmp_path, tiny) -> None:
    model, example, *_ = tiny
    path = tmp_path / "m.mlpackage"
    first = export_coreml(model, example, path, CoreMLConfig(precision="fp32"))
    second = export_coreml(model, example, path, CoreMLConfig(precision="fp16"))
    assert path.is_dir() and second.sha256 != first.sha256 and sorted(p.name for p in tmp_path.iterdir()) == [path.name]


@pytest.mark.skipif(can_predict(), reason="this host runs Core ML")
def test_coreml_prediction_off_macos_is_a_clear_error(tmp_path) -> None:
    with pytest.raises(TargetError, match="only on macOS"):
        HostModel(tmp_path / "m.mlpackage")


class _Spectral(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.fft.rfft2(x).abs()


class _NetWithFFT(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)
        self.spectral = _Spectral()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.spectral(self.conv(x)).mean((2, 3))


@pytest.mark.parametrize(
    ("exporter", "suffix", "runtime"),
    [
        (export_pte, "pte", "ExecuTorch"),
        (export_tflite, "tflite", "litert-torch"),
        (export_coreml, "mlpackage", "coremltools"),
    ],
)
def test_unsupported_operator_names_op_layer_and_runtime(tmp_path, exporter, suffix, runtime) -> None:
    model, example = _NetWithFFT().eval(), (torch.randn(1, 3, 16, 16),)
    with pytest.raises(UnsupportedOpError) as info:
        exporter(model, example, tmp_path / f"bad.{suffix}")
    message = str(info.value)
    assert runtime in message and "in layer spectral (_Spectral)" in message and "operator" in message
    assert not list(tmp_path.iterdir())  # nothing half-written


def test_executorch_coreml_delegate_builds_for_ios_and_is_refused_by_the_host_runtime(tmp_path, tiny) -> None:
    model, example, *_ = tiny
    artifact = export_pte(model, example, tmp_path / "ios.pte", ExecuTorchConfig("fp32", "coreml"))
    assert artifact.summary["backend"] == "coreml" and artifact.summary["delegate_calls"] >= 1
    with pytest.raises(TargetError, match="only loads on Apple devices"):
        HostProgram(artifact.path)(example[0])


def test_bundled_program_verifies_on_the_host_and_catches_other_outputs(tiny) -> None:
    from targets.executorch import bundle, verify_bundle

    model, example, images, _ = tiny
    for precision in ("fp32", "int8"):
        data = bundle(model, example, ExecuTorchConfig(precision), images[:3], calibration=images)
        result = verify_bundle(data, rtol=1e-3, atol=1e-4)
        assert result == {"cases": 3, "passed": True, "failures": [], "rtol": 1e-3, "atol": 1e-4}
    torch.manual_seed(1)
    other = TinyNet(num_classes=10).eval()  # expected outputs of another model: every case must fail
    wrong = bundle(model, example, ExecuTorchConfig(), images[:2], expected=other)
    result = verify_bundle(wrong, rtol=1e-3, atol=1e-4)
    assert not result["passed"] and len(result["failures"]) == 2
