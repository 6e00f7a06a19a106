"""Timing in a fresh process, for the benchmarks that check a number independently of the process that made it.

A benchmark script registers an internal ``time`` sub-command with :func:`add_timer` (what to time, cache state,
threads, the protocol's cap) and calls :func:`in_fresh_process`, which runs that sub-command in a new interpreter
and reads the JSON line it prints last.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent


def machine() -> dict[str, Any]:
    """The host a benchmark ran on, for its JSON."""
    return {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(),
            "python": platform.python_version()}  # fmt: skip


def write_result(path: Path | None, result: dict[str, Any]) -> None:
    """A benchmark's JSON result at ``path`` (nothing when no path was asked for)."""
    if path is None:
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")  # never a half-written result, even when rewritten per point
    partial.write_text(json.dumps(result, indent=2) + "\n")
    partial.replace(path)


def add_timer(subparsers: Any, target: str, help: str) -> argparse.ArgumentParser:
    """The ``time`` sub-command: ``target`` (a directory), ``--cache``, ``--threads``, ``--cap``."""
    timer = subparsers.add_parser("time", help=help)
    timer.add_argument(target, type=Path)
    timer.add_argument("--cache", default="cold")
    timer.add_argument("--threads", type=int, default=2)
    timer.add_argument("--cap", type=float, default=60.0)
    return timer


def in_fresh_process(script: str, target: Path, cache: str, threads: int, cap: float) -> dict[str, Any]:
    """Run ``script``'s ``time`` sub-command on ``target`` in a new interpreter; its last line, parsed."""
    argv = [sys.executable, str(Path(script).resolve()), "time", str(target), "--cache", cache,
            "--threads", str(threads), "--cap", str(cap)]  # fmt: skip
    proc = subprocess.run(argv, capture_output=True, text=True, cwd=ROOT, check=True)
    return json.loads(proc.stdout.strip().splitlines()[-1])


def build_runners(build: Path, threads: int) -> tuple[dict[str, Any], Any]:
    """A build's ExecuTorch fp32 teacher and student files loaded in this process, and a fixed example input."""
    import torch

    from targets import load_artifact

    listing = json.loads((build / "artifacts.json").read_text())["artifacts"]
    files = {a["role"]: a for a in listing
             if a["runtime"] == "executorch" and a["precision"] == "fp32" and a["status"] == "ok"}  # fmt: skip
    size = files["student"]["input_size"]
    runners = {role: load_artifact("executorch", build / a["path"], threads=threads) for role, a in files.items()}
    return runners, torch.randn(1, 3, size, size, generator=torch.Generator().manual_seed(0))
