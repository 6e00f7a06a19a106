"""Host latency of exported artifacts, teacher and student interleaved so drift hits both alike."""

from __future__ import annotations

import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import torch

from device_bench.apart import measure_files
from device_bench.parsers import parse_result
from device_bench.protocol import TimingPolicy, cache_order
from device_bench.stats import speedup_ci, summarize
from mobilelwt.children import child_env
from targets import RUNTIMES, by_runtime, load_artifact


def pair_groups(artifacts: list[dict[str, Any]]) -> list[dict[str, dict[str, Any]]]:
    """Teacher and student of one (runtime, precision, format, target): the unit that is measured interleaved."""
    groups: dict[tuple[str, ...], dict[str, dict[str, Any]]] = {}
    for artifact in artifacts:
        key = (artifact["runtime"], artifact["precision"], artifact["format"], artifact.get("target", ""))
        groups.setdefault(key, {}).setdefault(artifact["role"], artifact)
    return list(groups.values())


def runner_memory(path: Path, runtime: str, *, threads: int, input_size: int) -> dict[str, Any]:
    """Peak resident memory of the Python runner running ``path`` alone (a fresh process: nothing else loaded)."""
    argv = [sys.executable, "-m", "device_bench.runner", str(path), "--runtime", runtime, "--runs", "3",
            "--warmup", "1", "--threads", str(threads), "--input-size", str(input_size)]  # fmt: skip
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=600, env=child_env())
    if proc.returncode != 0:
        return {"memory_error": (proc.stderr.strip().splitlines() or ["runner failed"])[-1][:300]}
    record = parse_result(proc.stdout)
    return {
        "peak_rss_mb": record["peak_rss_mb"],
        "baseline_rss_mb": record["baseline_rss_mb"],
        "model_rss_mb": record["peak_rss_mb"] - record["baseline_rss_mb"],
        "pss_mb": record.get("pss_mb"),
        "cold_load_ms": record["load_ms"],
    }


def pair_speedup(samples: dict[str, list[float]]) -> dict[str, Any]:
    """The student's speedup over the teacher measured in the same interleaved rounds, with its bootstrap CI."""
    if not samples.get("teacher") or not samples.get("student"):
        return {}
    low, high = speedup_ci(samples["teacher"], samples["student"])
    ratio = statistics.median(samples["teacher"]) / statistics.median(samples["student"])
    return {"speedup": ratio, "speedup_ci95": [low, high]}


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
    policy: TimingPolicy | None = None,
    memory: bool = True,
) -> list[dict[str, Any]]:
    """One record per host-runnable artifact; teacher and student of the same format/precision are timed by the
    protocol, warm and cold (the policy's cache state is the record's headline numbers, the other is kept beside),
    in ``policy.processes`` fresh processes combined (:mod:`device_bench.apart`).

    Each record also has the load time and first run in this process and, with ``memory``, the peak memory of
    the artifact run alone in a fresh runner process (the number a phone's runner would report).
    """
    policy = policy or TimingPolicy()
    records = []
    for by_role in pair_groups([a for a in artifacts if host_runnable(a)]):
        any_artifact = next(iter(by_role.values()))
        runtime, precision, size = any_artifact["runtime"], any_artifact["precision"], any_artifact["input_size"]
        example = torch.randn(1, 3, size, size, generator=torch.Generator().manual_seed(0))
        runners, cold = {}, {}
        by_runtime(runtime).prepare()  # the first load must not pay for importing the runtime
        for role, a in by_role.items():
            started = time.perf_counter()
            runners[role] = load_artifact(runtime, Path(build_dir) / a["path"], threads=threads)
            loaded = time.perf_counter()
            runners[role](example)
            cold[role] = {
                "load_ms": (loaded - started) * 1000.0,
                "first_run_ms": (time.perf_counter() - loaded) * 1000.0,
            }
            if memory:
                cold[role].update(runner_memory(Path(build_dir) / a["path"], runtime, threads=threads, input_size=size))
        reference = "teacher" if "teacher" in runners else next(iter(runners))
        del runners  # timed apart (device_bench.apart): fresh processes, or reloaded here for --processes 1
        measured = measure_files({role: Path(build_dir) / a["path"] for role, a in by_role.items()}, runtime=runtime,
                                 threads=threads, input_size=size, reference=reference, policy=policy,
                                 caches=cache_order(policy))  # fmt: skip
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
                    "warmup": policy.warmup,
                    "status": "ok",
                    **role_record(measured, role, policy.cache),
                    **cold[role],
                }
            )
    return records


def role_record(measured: dict[str, dict[str, Any]], role: str, headline: str) -> dict[str, Any]:
    """One artifact's fields from protocol records by cache state: the ``headline`` state's statistics and
    speedup at the top level (what tables and the headline read), every state's summary under ``caches``."""
    main = measured[headline]
    record = {
        "cache": headline,
        **summarize(main["models"][role]["samples_ms"]),
        "timing": {
            k: main[k]
            for k in ("rel_width", "max_seconds", "batches", "quiet_batches", "seconds", "converged", "stopped", "load")
        }  # fmt: skip
        | {"processes": len(main.get("processes") or []) or 1, "state": main.get("state")},
        "caches": {},
    }
    for cache, got in measured.items():
        model = got["models"][role]
        record["caches"][cache] = {
            "median_ms": model["median_ms"],
            "cv": model["cv"],
            "runs": model["runs"],
            **({"speedup": model["speedup"], "speedup_ci95": model["speedup_ci95"]} if "speedup" in model else {}),
            "converged": got["converged"],
            "quiet": got["load"]["quiet"],
        }
    if "speedup" in main["models"][role]:
        record.update(speedup=main["models"][role]["speedup"], speedup_ci95=main["models"][role]["speedup_ci95"])
    return record
