"""The adapter contract: every registered runtime implements it, and its capabilities answer for every runtime."""

import inspect
import sys

import pytest
import torch

from targets import FORMATS
from targets._api import RuntimeAdapter


@pytest.mark.parametrize("name", list(FORMATS))
def test_every_runtime_module_implements_the_adapter_contract(name: str) -> None:
    adapter = FORMATS.get(name).module
    assert isinstance(adapter, RuntimeAdapter)
    for method, declared in inspect.getmembers(RuntimeAdapter, inspect.isfunction):
        if method.startswith("_"):
            continue
        implemented = inspect.signature(getattr(adapter, method))
        # every keyword the contract passes is accepted (by name, or by **kwargs)
        wanted = [p.name for p in inspect.signature(declared).parameters.values()
                  if p.kind is p.KEYWORD_ONLY]  # fmt: skip
        takes_any = any(p.kind is p.VAR_KEYWORD for p in implemented.parameters.values())
        missing = [k for k in wanted if k not in implemented.parameters and not takes_any]
        assert not missing, f"{name}.{method} lacks {missing}"


def test_capabilities_a_runtime_lacks_answer_none(tmp_path) -> None:
    tflite, coreml = FORMATS.get("tflite").module, FORMATS.get("coreml").module
    assert tflite.write_companion(None, (), tmp_path / "m.tflite", None, torch.zeros(1)) is None
    assert coreml.layer_record(None, (), tmp_path / "x", expected_sha256="") is None
    assert coreml.delegation(tmp_path / "m.mlpackage", {}) is None
    assert tflite.offline_check(tmp_path / "m.tflite", input_shape=(1, 3, 8, 8), num_classes=2, precision="fp32",
                                class_labels=None) is None  # fmt: skip


def test_which_hosts_can_run_which_files() -> None:
    executorch, tflite, coreml = (FORMATS.get(n).module for n in ("executorch", "tflite", "coreml"))
    assert executorch.can_predict("xnnpack") and not executorch.can_predict("coreml") and tflite.can_predict()
    assert coreml.can_predict() is (sys.platform == "darwin")
    offline = executorch.offline_check("m-coreml.pte", backend="coreml", input_shape=(1, 3, 8, 8), num_classes=2,
                                       precision="fp32", class_labels=None)  # fmt: skip
    assert offline["kind"] == "none" and "Apple device" in offline["numeric"]
