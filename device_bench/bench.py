"""``bench``: latency of every artifact of a build on the host (and, later, adb devices) into ``bench.jsonl``.

One JSON line per (artifact, runtime, device, precision) with the statistics and the environment; teacher and
student of the same format run interleaved. A bench resumes: records already in the file are kept and skipped.
"""

from __future__ import annotations

import json
import os
import platform
from pathlib import Path
from typing import Any

from device_bench.host import bench_pairs
from mobilelwt.errors import ConfigError
from mobilelwt.io import atomic_path


def record_key(record: dict[str, Any]) -> tuple[str, str, str, str]:
    return (record["artifact"], record["runtime"], record["device"], record["precision"])


def read_records(path: Path) -> list[dict[str, Any]]:
    if not path.is_file():
        return []
    records = []
    for line in path.read_text().splitlines():
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            continue  # a line cut short by a crash: that measurement is redone
    return records


def append_records(path: Path, records: list[dict[str, Any]]) -> None:
    existing = read_records(path)
    with atomic_path(path) as tmp:
        tmp.write_text("".join(json.dumps(r) + "\n" for r in existing + records))


def host_facts(threads: int) -> dict[str, Any]:
    return {
        "device": "host",
        "machine": platform.machine(),
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
        "threads": threads,
    }


def bench_build(
    build_dir: Path,
    *,
    devices: tuple[str, ...] = ("host",),
    runs: int = 50,
    warmup: int = 5,
    threads: int = 2,
    per_round: int = 5,
) -> list[dict[str, Any]]:
    """Measure the build's artifacts on ``devices``; returns every record now in ``bench.jsonl``."""
    build_dir = Path(build_dir)
    listing_path = build_dir / "artifacts.json"
    if not listing_path.is_file():
        raise ConfigError(f"{build_dir} has no artifacts.json.", "Run `mobilelwt export` (or `mobilelwt build`) first.")
    unknown = [d for d in devices if d != "host"]
    if unknown:
        raise ConfigError(
            f"Device(s) {', '.join(unknown)}: only the host is supported by this version of `bench`.",
            "Use --device host; on-phone benchmarks over adb are being added.",
        )
    artifacts = json.loads(listing_path.read_text())["artifacts"]
    out = build_dir / "bench.jsonl"
    done = {record_key(r) for r in read_records(out) if r.get("status") == "ok"}
    todo = [
        a
        for a in artifacts
        if a.get("status") == "ok" and (a["path"], a["runtime"], "host", a["precision"]) not in done
    ]
    rounds = max(1, -(-runs // per_round))
    records = bench_pairs(build_dir, todo, threads=threads, warmup=warmup, rounds=rounds, per_round=per_round)
    facts = host_facts(threads)
    for record in records:
        record["environment"] = facts
    append_records(out, records)
    return read_records(out)
