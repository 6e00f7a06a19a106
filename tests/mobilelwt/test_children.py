import subprocess
import sys
from pathlib import Path

import mobilelwt
from mobilelwt.children import child_env


def test_a_child_started_elsewhere_imports_this_checkout(tmp_path, monkeypatch) -> None:
    # a stale editable install pointed the profiler's child at another checkout (ModuleNotFoundError)
    monkeypatch.setenv("PYTHONPATH", str(tmp_path / "elsewhere"))
    env = child_env()
    here = str(Path(mobilelwt.__file__).resolve().parents[1])
    assert env["PYTHONPATH"].split(":")[:2] == [here, str(tmp_path / "elsewhere")]
    probe = "import mobilelwt, pathlib; print(pathlib.Path(mobilelwt.__file__).resolve())"
    out = subprocess.run([sys.executable, "-c", probe], cwd=tmp_path, env=env, capture_output=True, text=True)
    assert out.returncode == 0 and out.stdout.strip() == str(Path(mobilelwt.__file__).resolve())
