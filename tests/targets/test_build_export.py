import json

import pytest

from mobilelwt.compress import CompressConfig, compress
from mobilelwt.distill import DistillConfig
from mobilelwt.layerwise import LayerwiseConfig
from mobilelwt.settings import RunSettings
from targets import TargetError
from targets.build_export import ExportOptions, check_listing, export_build
from targets.validation import ValidationError


@pytest.fixture(scope="module")
def build_dir(tmp_path_factory, tiny_teacher):
    out = tmp_path_factory.mktemp("exp")
    config = CompressConfig(mac_speedup=2.0, layerwise=LayerwiseConfig(max_steps=5), finetune=DistillConfig(epochs=0))
    compress("tinynet", out=out, weights=str(tiny_teacher), run=RunSettings(data="digits"), config=config)
    return out


def test_android_export_of_teacher_and_student_validated(build_dir) -> None:
    listing = export_build(build_dir, target="android", options=ExportOptions(validation_images=16, threads=1))
    assert {(a["role"], a["format"], a["runtime"]) for a in listing["artifacts"]} == {
        (role, fmt, runtime)
        for role in ("teacher", "student")
        for fmt, runtime in (("tflite", "litert"), ("pte", "executorch"))
    }
    for artifact in listing["artifacts"]:
        assert artifact["status"] == "ok", artifact
        path = build_dir / artifact["path"]
        assert path.is_file() and path.stat().st_size == artifact["bytes"]
        validation = json.loads(path.with_name(path.name + ".validation.json").read_text())
        assert validation["top1_agreement"] == 1.0 and validation["images"] == 16
    assert (build_dir / "android" / "tinynet-student-fp32.pte").is_file()
    assert json.loads((build_dir / "artifacts.json").read_text())["targets"] == ["android"]


def test_unknown_target_and_precision(build_dir) -> None:
    with pytest.raises(TargetError, match="Unknown target"):
        export_build(build_dir, target="windows")
    with pytest.raises(TargetError, match="int4"):
        export_build(build_dir, options=ExportOptions(precisions=("int4",)))


def test_every_format_and_precision_for_all_targets(build_dir) -> None:
    options = ExportOptions(precisions=("fp32", "int8", "fp16"), validation_images=16, threads=1)
    listing = export_build(build_dir, target="all", options=options)
    by_path = {a["path"]: a for a in listing["artifacts"]}
    for target, ext, precisions in (
        ("android", "tflite", ("fp32", "int8")),
        ("android", "pte", ("fp32", "int8")),
        ("ios", "mlpackage", ("fp32", "int8", "fp16")),
        ("ios", "pte", ("fp32", "int8")),
    ):
        for role in ("teacher", "student"):
            for precision in precisions:
                record = by_path[f"{target}/tinynet-{role}-{precision}.{ext}"]
                assert record["status"] == "ok", record
                kind = record["validation"]["kind"]
                assert kind == ("structural" if ext == "mlpackage" else "numeric")
    assert by_path["android/tinynet-student-fp16.tflite"]["status"] == "skipped"
    assert listing["targets"] == ["android", "ios"]
    check_listing({"artifacts": [a for a in listing["artifacts"] if a["status"] != "skipped"]})


def test_one_failing_format_is_recorded_and_leaves_the_others(build_dir, monkeypatch) -> None:
    import targets.tflite

    def broken(*args, **kwargs):
        raise targets.UnsupportedOpError("litert-torch could not lower the model: operator x.", "Replace it.")

    monkeypatch.setattr(targets.tflite, "convert", broken)
    listing = export_build(build_dir, target="android", options=ExportOptions(validation_images=8, threads=1))
    status = {
        a["path"]: a["status"] for a in listing["artifacts"] if a["target"] == "android" and a["precision"] == "fp32"
    }
    assert status["android/tinynet-student-fp32.tflite"] == "failed"
    assert (
        status["android/tinynet-student-fp32.pte"] == "ok"
        and (build_dir / "android/tinynet-student-fp32.pte").is_file()
    )
    with pytest.raises(TargetError, match="could not be exported: android/tinynet-teacher-fp32.tflite"):
        check_listing(listing)


def test_mismatch_in_listing_names_the_artifact(build_dir) -> None:
    listing = export_build(build_dir, target="android", options=ExportOptions(validation_images=8, threads=1))
    record = next(a for a in listing["artifacts"] if a["path"] == "android/tinynet-student-fp32.pte")
    record["status"] = "mismatch"
    record["validation"].update(passed=False, failures=["top-1 agreement 0.5 < 0.99"])
    with pytest.raises(ValidationError, match="tinynet-student-fp32.pte: top-1 agreement"):
        check_listing(listing)
