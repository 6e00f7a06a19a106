import json

import pytest

from mobilelwt.compress import CompressConfig, compress
from mobilelwt.distill import DistillConfig
from mobilelwt.layerwise import LayerwiseConfig
from targets import TargetError
from targets.build_export import export_build


@pytest.fixture(scope="module")
def build_dir(tmp_path_factory, tiny_teacher):
    out = tmp_path_factory.mktemp("exp")
    config = CompressConfig(speedup=2.0, layerwise=LayerwiseConfig(max_steps=5), finetune=DistillConfig(epochs=0))
    compress("tinynet", out=out, weights=str(tiny_teacher), data="digits", config=config)
    return out


def test_android_export_of_teacher_and_student_validated(build_dir) -> None:
    listing = export_build(build_dir, target="android", validation_images=16, threads=1)
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
    assert json.loads((build_dir / "artifacts.json").read_text())["target"] == "android"


def test_unknown_target_and_precision(build_dir) -> None:
    with pytest.raises(TargetError, match="Unknown target"):
        export_build(build_dir, target="windows")
    with pytest.raises(TargetError, match="int4"):
        export_build(build_dir, precisions=("int4",))
