"""``bench``: latency of every artifact of a build on the host and on adb devices, into ``bench.jsonl``.

One JSON line per (artifact, runtime, device, precision) with the statistics and the environment. Teacher and
student of the same format run interleaved (rounds alternate between them) so drift hits both. A bench resumes:
records already measured are skipped; several devices run in parallel, one worker per serial; a device that
fails mid-run yields *failed* records with the reason, never numbers, and the other records are kept.
"""

from __future__ import annotations

import json
import os
import platform
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from device_bench.android import DeviceOptions, DeviceRun, device_facts, push_cached, wait_until_cool
from device_bench.host import bench_pairs, host_runnable, pair_groups
from device_bench.parsers import RunnerOutputError
from device_bench.stats import summarize
from device_bench.transport import AdbTransport, DeviceError, resolve_serials
from mobilelwt.errors import ConfigError
from mobilelwt.io import atomic_path

_WRITE_LOCK = threading.Lock()


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
    """Add records; a new record for the same key replaces an older (failed) one."""
    with _WRITE_LOCK:
        fresh = {record_key(r) for r in records}
        kept = [r for r in read_records(path) if record_key(r) not in fresh]
        with atomic_path(path) as tmp:
            tmp.write_text("".join(json.dumps(r) + "\n" for r in kept + records))


def host_facts(threads: int) -> dict[str, Any]:
    return {
        "device": "host",
        "machine": platform.machine(),
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
        "threads": threads,
    }


def bench_device(
    build_dir: Path,
    serial: str,
    artifacts: list[dict[str, Any]],
    out: Path,
    *,
    runs: int,
    warmup: int,
    threads: int,
    rounds: int,
    options: DeviceOptions,
    adb: str | None = None,
) -> None:
    """Measure ``artifacts`` on one adb device; records are appended group by group."""
    device = AdbTransport(serial, adb=adb)
    try:
        facts = device_facts(device)
    except DeviceError as exc:
        append_records(out, [_failed(a, serial, str(exc)) for a in artifacts])
        return
    runner = DeviceRun(device, options)
    per_round = max(1, -(-runs // rounds))
    accuracy_set = _accuracy_inputs(build_dir, options.accuracy_images) if options.accuracy_images else None
    for group in pair_groups(artifacts):
        try:
            remote = {
                role: push_cached(device, Path(build_dir) / a["path"], options.timeout_s) for role, a in group.items()
            }
            samples: dict[str, list[float]] = {role: [] for role in group}
            thermal: list[dict[str, Any]] = []
            extra: dict[str, dict[str, Any]] = {}
            for round_index in range(rounds):
                for role, artifact in group.items():
                    thermal.append(wait_until_cool(device, options))
                    got, info = runner.samples(
                        remote[role],
                        artifact["runtime"],
                        runs=per_round,
                        warmup=warmup if round_index == 0 else max(1, warmup // 5),
                        threads=threads,
                        input_size=artifact["input_size"],
                    )
                    samples[role].extend(got)
                    extra[role] = info
            records = [
                {
                    "artifact": a["path"],
                    "role": role,
                    "runtime": a["runtime"],
                    "precision": a["precision"],
                    "device": serial,
                    "threads": threads,
                    "core_mask": options.core_mask,
                    "input": [1, 3, a["input_size"], a["input_size"]],
                    "warmup": warmup,
                    "rounds": rounds,
                    "status": "ok",
                    **summarize(samples[role]),
                    **extra[role],
                    "thermal": {
                        "max_status": max((t["thermal_status"] or 0) for t in thermal),
                        "max_battery_c": max((t["battery_c"] or 0) for t in thermal),
                        "cooling_wait_s": sum(t["cooling_wait_s"] for t in thermal),
                    },
                    "environment": facts,
                }
                for role, a in group.items()
            ]
            if accuracy_set is not None:
                for record, (role, a) in zip(records, group.items(), strict=True):
                    record.update(_device_accuracy(device, runner, remote[role], a, accuracy_set, options))
        except (DeviceError, RunnerOutputError) as exc:
            records = [_failed(a, serial, str(exc), facts) for a in group.values()]
        append_records(out, records)


def _accuracy_inputs(build_dir: Path, count: int) -> tuple[Path, Any]:
    """The first ``count`` images of the build's validation split, preprocessed, as a .npy (and their labels)."""
    import numpy as np
    import torch

    from mobilelwt.compress import load_build, load_build_data

    build = load_build(build_dir)
    data = load_build_data(build)
    index = torch.arange(min(count, len(data.val)))
    images, labels = data.normalize(data.val.load(index)), data.val.labels[index]
    path = Path(build_dir) / f"device-inputs-{len(index)}.npy"
    with atomic_path(path) as tmp, open(tmp, "wb") as handle:
        np.save(handle, images.numpy().astype(np.float32))
    return path, labels


def _device_accuracy(
    device: AdbTransport,
    runner: DeviceRun,
    remote_artifact: str,
    artifact: dict[str, Any],
    accuracy_set: tuple[Path, Any],
    options: DeviceOptions,
) -> dict[str, Any]:
    import tempfile

    import numpy as np
    import torch

    from mobilelwt.evaluation import topk_correct

    inputs, labels = accuracy_set
    remote_inputs = push_cached(device, inputs, options.timeout_s)
    with tempfile.TemporaryDirectory() as tmp:
        local = Path(tmp) / "out.npy"
        runner.outputs(remote_artifact, artifact["runtime"], remote_inputs, local, input_size=artifact["input_size"])
        logits = torch.from_numpy(np.load(local))
    if logits.shape[0] != len(labels):
        raise RunnerOutputError(f"The device returned {logits.shape[0]} outputs for {len(labels)} inputs.", "")
    top1, top5 = topk_correct(logits, labels)
    return {
        "device_top1": 100.0 * top1 / len(labels),
        "device_top5": 100.0 * top5 / len(labels),
        "accuracy_images": len(labels),
    }


def _coreml_on_host(
    build_dir: Path, artifact: dict[str, Any], runs: int, warmup: int, options: DeviceOptions
) -> dict[str, Any]:
    """Core ML runs through coremltools on a Mac; elsewhere the record says so instead of holding a number."""
    from targets.coreml import HostModel, can_predict

    base = {"artifact": artifact["path"], "role": artifact["role"], "runtime": "coreml",
            "precision": artifact["precision"], "device": "host"}  # fmt: skip
    if not can_predict():
        return {**base, "status": "unavailable", "reason": "Core ML runs only on macOS or an Apple device"}
    import torch

    from device_bench.host import interleaved_latency

    size = artifact["input_size"]
    model = HostModel(Path(build_dir) / artifact["path"], compute_units=options.coreml_compute_units)
    samples = interleaved_latency({"m": model}, torch.randn(1, 3, size, size), warmup=warmup, rounds=1,
                                  per_round=runs)["m"]  # fmt: skip
    return {**base, "status": "ok", "compute_units": options.coreml_compute_units, **summarize(samples)}


def _failed(artifact: dict[str, Any], device: str, reason: str, facts: dict | None = None) -> dict[str, Any]:
    return {
        "artifact": artifact["path"],
        "role": artifact["role"],
        "runtime": artifact["runtime"],
        "precision": artifact["precision"],
        "device": device,
        "status": "failed",
        "reason": reason,
        "environment": facts or {"serial": device},
    }


def bench_build(
    build_dir: Path,
    *,
    devices: tuple[str, ...] = ("host",),
    runs: int = 50,
    warmup: int = 5,
    threads: int = 2,
    rounds: int = 10,
    options: DeviceOptions | None = None,
    adb: str | None = None,
) -> list[dict[str, Any]]:
    """Measure the build's artifacts on ``devices`` (``host``, adb serials, or ``all``); returns every record."""
    build_dir = Path(build_dir)
    listing_path = build_dir / "artifacts.json"
    if not listing_path.is_file():
        raise ConfigError(f"{build_dir} has no artifacts.json.", "Run `mobilelwt export` (or `mobilelwt build`) first.")
    if runs < 1 or rounds < 1:
        raise ConfigError("--runs and --rounds must be at least 1.", "Use e.g. --runs 50 --rounds 10.")
    options = options or DeviceOptions()
    listed = json.loads(listing_path.read_text())["artifacts"]
    artifacts = [a for a in listed if host_runnable(a)]
    coreml = [a for a in listed if a.get("status") == "ok" and a["runtime"] == "coreml"]
    out = build_dir / "bench.jsonl"
    done = {record_key(r) for r in read_records(out) if r.get("status") in ("ok", "unavailable")}

    def todo(device: str) -> list[dict[str, Any]]:
        return [a for a in artifacts if (a["path"], a["runtime"], device, a["precision"]) not in done]

    requested = [d for d in devices if d != "host"]
    serials = resolve_serials(requested, adb) if requested else []
    if "host" in devices:
        per_round = max(1, -(-runs // rounds))
        records = bench_pairs(build_dir, todo("host"), threads=threads, warmup=warmup, rounds=rounds,
                              per_round=per_round)  # fmt: skip
        facts = host_facts(threads)
        records += [_coreml_on_host(build_dir, a, runs, warmup, options) for a in coreml
                    if (a["path"], "coreml", "host", a["precision"]) not in done]  # fmt: skip
        append_records(out, [{**r, "environment": facts} for r in records])
    if serials:
        with ThreadPoolExecutor(max_workers=len(serials)) as pool:
            jobs = [
                pool.submit(
                    bench_device,
                    build_dir,
                    serial,
                    todo(serial),
                    out,
                    runs=runs,
                    warmup=warmup,
                    threads=threads,
                    rounds=rounds,
                    options=options,
                    adb=adb,
                )  # fmt: skip
                for serial in serials
                if todo(serial)
            ]
            for job in jobs:
                job.result()
    return read_records(out)
