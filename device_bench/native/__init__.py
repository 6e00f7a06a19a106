"""mobilelwt's native ExecuTorch runner (``et_runner.cpp``): built here against the executorch wheel for the host,
or with the NDK for a phone; ``mobilelwt bench --runner native --et-runner PATH`` runs it like ``executor_runner``.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
from pathlib import Path

from mobilelwt.errors import ConfigError

SOURCE = Path(__file__).with_name("et_runner.cpp")
# whole libraries, linked even though no symbol is named: the XNNPACK backend and the kernels register themselves
# from static initialisers
LIBRARIES = ("executorch", "executorch_etdump", "executorch_backend_xnnpack", "executorch_kernels_optimized",
             "executorch_threadpool")  # fmt: skip


def executorch_root() -> Path:
    spec = importlib.util.find_spec("executorch")
    if spec is None or not spec.submodule_search_locations:
        raise ConfigError("The executorch package is not installed.", 'Install mobilelwt: pip install -e ".[dev]".')
    root = Path(next(iter(spec.submodule_search_locations)))
    if not (root / "include" / "executorch").is_dir() or not (root / "lib").is_dir():
        raise ConfigError(f"{root} has no include/ and lib/ (an executorch build without its C++ files).",
                          "Install the executorch wheel from PyPI (pip install executorch==1.5.1).")  # fmt: skip
    return root


def build_command(out: Path, compiler: str, root: Path) -> list[str]:
    include = root / "include"
    return [compiler, "-std=c++17", "-O2", "-DET_EVENT_TRACER_ENABLED", "-DC10_USING_CUSTOM_GENERATED_MACROS",
            f"-I{include}", f"-I{include / 'executorch/runtime/core/portable_type/c10'}", str(SOURCE), "-o", str(out),
            f"-L{root / 'lib'}", "-Wl,--no-as-needed", *(f"-l{name}" for name in LIBRARIES),
            f"-Wl,-rpath,{root / 'lib'}"]  # fmt: skip


def build_host_runner(out: Path, *, compiler: str | None = None, timeout: float = 600) -> Path:
    """Compile ``et_runner.cpp`` for this host into ``out`` (written under a temporary name, then renamed)."""
    compiler = compiler or os.environ.get("CXX") or shutil.which("g++") or shutil.which("c++")
    if not compiler or not shutil.which(compiler):
        raise ConfigError("No C++ compiler found to build the runner.", "Install one (apt-get install g++) or set CXX.")
    root = executorch_root()
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    partial = out.with_name(out.name + ".partial")
    try:
        proc = subprocess.run(build_command(partial, compiler, root), capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        partial.unlink(missing_ok=True)
        raise ConfigError(
            f"Building the runner took over {timeout:.0f} s.", "Retry on a less loaded machine."
        ) from None
    if proc.returncode != 0:
        partial.unlink(missing_ok=True)
        errors = [line for line in proc.stderr.splitlines() if "error" in line] or proc.stderr.splitlines()
        first = (errors or ["no output"])[0].strip()
        raise ConfigError(
            f"Building the runner failed: {first}",
            f"Check that {compiler} can build C++17 and that executorch is the pinned 1.5.1.",
        )
    os.replace(partial, out)
    return out
