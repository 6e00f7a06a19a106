"""Host latency of exported artifacts, teacher and student interleaved so drift hits both alike."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from device_bench.stats import summarize
from targets import RUNTIMES, load_artifact


def interleaved_latency(
    runners: dict[str, Callable[[torch.Tensor], Any]],
    example: torch.Tensor,
    *,
    warmup: int = 5,
    rounds: int = 10,
    per_round: int = 5,
) -> dict[str, list[float]]:
    """Milliseconds per call for each runner: warm-up, then ``rounds`` rounds that run every runner in turn."""
    for run in runners.values():
        for _ in range(warmup):
            run(example)
    samples: dict[str, list[float]] = {name: [] for name in runners}
    for _ in range(rounds):
        for name, run in runners.items():
            for _ in range(per_round):
                started = time.perf_counter()
                run(example)
                samples[name].append((time.perf_counter() - started) * 1000.0)
    return samples


def pair_groups(artifacts: list[dict[str, Any]]) -> list[dict[str, dict[str, Any]]]:
    """Teacher and student of one (runtime, precision, format, target): the unit that is measured interleaved."""
    groups: dict[tuple[str, ...], dict[str, dict[str, Any]]] = {}
    for artifact in artifacts:
        key = (artifact["runtime"], artifact["precision"], artifact["format"], artifact.get("target", ""))
        groups.setdefault(key, {}).setdefault(artifact["role"], artifact)
    return list(groups.values())


def host_runnable(artifact: dict[str, Any]) -> bool:
    return (
        artifact.get("status") == "ok"
        and artifact["runtime"] in RUNTIMES
        and artifact.get("backend") in (None, "xnnpack")
    )


def bench_pairs(
    build_dir: Path,
    artifacts: list[dict[str, Any]],
    *,
    threads: int = 2,
    warmup: int = 5,
    rounds: int = 10,
    per_round: int = 5,
) -> list[dict[str, Any]]:
    """One record per host-runnable artifact; teacher and student of the same format/precision run interleaved."""
    records = []
    for by_role in pair_groups([a for a in artifacts if host_runnable(a)]):
        any_artifact = next(iter(by_role.values()))
        runtime, precision, size = any_artifact["runtime"], any_artifact["precision"], any_artifact["input_size"]
        runners = {
            role: load_artifact(runtime, Path(build_dir) / a["path"], threads=threads) for role, a in by_role.items()
        }
        example = torch.randn(1, 3, size, size, generator=torch.Generator().manual_seed(0))
        samples = interleaved_latency(runners, example, warmup=warmup, rounds=rounds, per_round=per_round)
        for role, artifact in by_role.items():
            records.append(
                {
                    "artifact": artifact["path"],
                    "artifact_sha256": artifact["sha256"],
                    "role": role,
                    "runtime": runtime,
                    "precision": precision,
                    "device": "host",
                    "threads": threads,
                    "input": [1, 3, size, size],
                    "warmup": warmup,
                    "status": "ok",
                    **summarize(samples[role]),
                }
            )
    return records
