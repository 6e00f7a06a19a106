"""Timing in a fresh process, for the benchmarks that check a number independently of the process that made it.

A benchmark script registers an internal ``time`` sub-command with :func:`add_timer` (what to time, cache state,
threads, the protocol's cap) and calls :func:`in_fresh_process`, which runs that sub-command in a new interpreter
and reads the JSON line it prints last.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent


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
