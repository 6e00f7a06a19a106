import subprocess
import sys

import pytest
import torch

from device_bench.parsers import RunnerOutputError, parse_result
from targets.executorch import export as export_pte
from tests.conftest import TinyNet


def test_python_runner_times_and_evaluates_a_pte(tmp_path) -> None:
    import numpy as np

    torch.manual_seed(0)
    model = TinyNet(num_classes=10).eval()
    path = export_pte(model, (torch.randn(1, 3, 32, 32),), tmp_path / "m.pte").path
    inputs = torch.randn(3, 3, 32, 32)
    np.save(tmp_path / "in.npy", inputs.numpy())
    proc = subprocess.run(
        [sys.executable, "-m", "device_bench.runner", str(path), "--runtime", "executorch", "--runs", "7",
         "--warmup", "1", "--threads", "1", "--input-size", "32",
         "--inputs", str(tmp_path / "in.npy"), "--outputs", str(tmp_path / "out.npy")],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    record = parse_result(proc.stdout)
    assert len(record["samples_ms"]) == 7 and all(s > 0 for s in record["samples_ms"]) and record["outputs"] == 3
    outputs = torch.from_numpy(np.load(tmp_path / "out.npy"))
    assert torch.allclose(outputs, model(inputs).detach(), atol=1e-4)


def test_a_run_without_the_result_line_is_not_a_measurement() -> None:
    with pytest.raises(RunnerOutputError, match="did not complete"):
        parse_result("loading model...\nSegmentation fault\n")
    with pytest.raises(RunnerOutputError, match="cut short"):
        parse_result('MOBILELWT_RESULT {"samples_ms": [1.0, 2')
