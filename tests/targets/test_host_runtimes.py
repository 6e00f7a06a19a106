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


def test_a_process_that_only_runs_pte_files_starts_without_the_exporter(tmp_path, tiny) -> None:
    import subprocess
    import sys
    from pathlib import Path

    model, example = tiny
    pte = export_pte(model, example, tmp_path / "tiny.pte")
    torch.save(example[0], tmp_path / "x.pt")
    # loads and runs the file, then imports the exporter for real in the same process: both must work
    code = (
        "import sys, torch\n"
        "from targets.executorch import HostProgram\n"
        f"y = HostProgram({str(pte.path)!r}, threads=1)(torch.load({str(tmp_path / 'x.pt')!r}, weights_only=True))\n"
        "print('exir' in ' '.join(m for m in sys.modules if m.startswith('executorch.exir')))\n"
        "torch.save(y, sys.argv[1])\n"
        "import executorch.exir\n"
        "from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner\n"
        "print(callable(executorch.exir.to_edge_transform_and_lower))\n"
    )
    root = Path(__file__).resolve().parents[2]
    run = subprocess.run([sys.executable, "-c", code, str(tmp_path / "y.pt")], cwd=root, capture_output=True,
                         text=True, timeout=300)  # fmt: skip
    assert run.returncode == 0, run.stderr[-2000:]
    assert run.stdout.split() == ["False", "True"]
    with torch.no_grad():
        assert torch.allclose(torch.load(tmp_path / "y.pt", weights_only=True), model(*example), atol=1e-4)


def test_the_executorch_threadpool_is_reset_only_when_the_thread_count_changes(monkeypatch) -> None:
    from executorch.extension.pybindings import portable_lib

    from targets.executorch import set_threads

    resets = []
    real = portable_lib._unsafe_reset_threadpool
    monkeypatch.setattr(portable_lib, "_unsafe_reset_threadpool", lambda n: (resets.append(n), real(n))[1])
    before = portable_lib._threadpool_get_thread_count()
    other = 1 if before != 1 else 2
    set_threads(other)
    set_threads(other)  # the same count again: the pool's threads are kept
    assert resets == [other] and portable_lib._threadpool_get_thread_count() == other
    set_threads(before)
    assert resets == [other, before]
