import pytest
import torch

from targets import host_runner
from targets.executorch import HostProgram
from targets.executorch import export as export_pte
from targets.tflite import HostInterpreter
from targets.tflite import export as export_tflite
from tests.conftest import TinyNet


@pytest.fixture(scope="module")
def tiny():
    torch.manual_seed(0)
    return TinyNet(num_classes=10).eval(), (torch.randn(1, 3, 32, 32),)


@pytest.mark.parametrize("runtime", ["executorch", "litert"])
def test_host_runner_matches_pytorch(tiny, runtime) -> None:
    model, example = tiny
    run = host_runner(runtime, model, example, threads=1)
    with torch.no_grad():
        assert torch.allclose(run(*example), model(*example), atol=1e-4)


def test_exported_files_reload_and_agree(tmp_path, tiny) -> None:
    model, example = tiny
    pte = export_pte(model, example, tmp_path / "tiny.pte")
    tfl = export_tflite(model, example, tmp_path / "tiny.tflite")
    assert pte.bytes == (tmp_path / "tiny.pte").stat().st_size and len(pte.sha256) == 64
    assert tfl.format == "tflite" and tfl.runtime == "litert"
    with torch.no_grad():
        expected = model(*example)
    assert torch.allclose(HostProgram(pte.path)(*example), expected, atol=1e-4)
    assert torch.allclose(HostInterpreter(tfl.path)(*example), expected, atol=1e-4)
    assert not list(tmp_path.glob(".*.tmp"))
