import math

import pytest
import torch

from targets import host_runner
from targets.validation import ValidationError, check, sqnr_db, validate
from tests.conftest import TinyNet


@pytest.fixture(scope="module")
def setup():
    torch.manual_seed(0)
    model = TinyNet(num_classes=10).eval()
    images = torch.randn(12, 3, 32, 32)
    labels = torch.randint(0, 10, (12,))
    return model, [(images[:6], labels[:6]), (images[6:], labels[6:])]


def test_sqnr() -> None:
    x = torch.ones(100)
    assert math.isinf(sqnr_db(x, x))
    assert sqnr_db(x, x * 1.1) == pytest.approx(20.0, abs=1e-4)  # noise is 1% of the signal power


@pytest.mark.parametrize("runtime", ["executorch", "litert"])
def test_exported_tiny_model_passes_on_its_host_runtime(setup, runtime) -> None:
    model, batches = setup
    run = host_runner(runtime, model, (torch.randn(1, 3, 32, 32),), threads=1)
    result = validate(f"tiny.{runtime}", run, model, batches)
    assert result.passed, result.failures
    assert result.images == 12 and result.top1_agreement == 1.0 and result.max_abs_diff < 1e-4
    assert result.top1 == result.reference_top1


def test_injected_mismatches_are_all_collected_and_named(setup) -> None:
    model, batches = setup
    good = validate("good.pte", lambda x: model(x), model, batches)
    broken = validate("broken.tflite", lambda x: model(x).flip(1), model, batches)  # a wrong class order
    noisy = validate("noisy.pte", lambda x: model(x) + 0.05 * torch.randn(1, 10), model, batches)
    assert good.passed and not broken.passed and not noisy.passed
    assert any("top-1 agreement" in f for f in broken.failures)
    with pytest.raises(ValidationError) as info:
        check([good, broken, noisy])
    message = str(info.value)
    assert "2 artifact(s) failed" in message and "broken.tflite" in message and "noisy.pte" in message
    assert "good.pte" not in message
