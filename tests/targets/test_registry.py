"""The one format registry: every adapter has the same shape; lookups by runtime and extension; typed errors."""

import pytest

from targets import TargetError
from targets.formats import FORMATS, TARGET_FORMATS, Format, by_ext, by_runtime, host_runtimes


@pytest.mark.parametrize("name", list(FORMATS))
def test_every_adapter_has_the_same_shape(name) -> None:
    spec = FORMATS.get(name)
    for function in ("config_from_options", "export", "load", "lower_to_host", "prepare"):
        assert callable(getattr(spec.module, function)), f"targets.{name}.{function}"
    assert spec.default_precision in spec.precisions
    assert by_runtime(spec.runtime) is spec and by_ext(spec.ext) is spec


def test_targets_name_registered_formats_and_host_runtimes_exclude_core_ml() -> None:
    assert {f for formats in TARGET_FORMATS.values() for f in formats} == set(FORMATS)
    assert host_runtimes() == ("executorch", "litert")
    assert FORMATS.get("coreml").thresholds("int8") is FORMATS.get("coreml").thresholds("fp16")


def test_unknown_names_and_duplicates_are_refused() -> None:
    with pytest.raises(TargetError, match="Unknown runtime 'onnx'.*executorch"):
        by_runtime("onnx")
    with pytest.raises(TargetError, match="Unknown artifact extension 'onnx'"):
        by_ext("onnx")
    with pytest.raises(ValueError, match="already registered"):
        FORMATS.add("tflite", Format("tflite", "tfl", "litert", ("fp32",), "fp32", host_runtime=True))
    with pytest.raises(TargetError, match="needs macOS"):
        FORMATS.get("coreml").lower(None, (), 1)
