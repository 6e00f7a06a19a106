import pytest
import torch

from mobilelwt.devices import mixed_precision, model_device, resolve_device
from mobilelwt.errors import ConfigError


def test_cpu_and_auto_resolve() -> None:
    assert resolve_device("cpu") == torch.device("cpu")
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert resolve_device("auto").type == expected


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU")
def test_missing_gpu_is_a_user_error() -> None:
    with pytest.raises(ConfigError, match="no CUDA GPU"):
        resolve_device("cuda")


def test_unknown_device_is_a_user_error() -> None:
    with pytest.raises(ConfigError, match="Unknown device 'gpu0'"):
        resolve_device("gpu0")
    with pytest.raises(ConfigError, match="not supported"):
        resolve_device("meta")


def test_model_device_and_cpu_precision() -> None:
    model = torch.nn.Linear(2, 2)
    assert model_device(model) == torch.device("cpu")
    with mixed_precision(torch.device("cpu")):
        assert model(torch.ones(1, 2)).dtype == torch.float32
