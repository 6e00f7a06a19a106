"""``bench``: latency of every artifact of a build on the host and on adb devices, into ``bench.jsonl``.

One JSON line per (artifact, runtime, device, precision) with the statistics and the environment. Teacher and
student of the same format run interleaved (rounds alternate between them) so drift hits both. A bench resumes:
records already measured are skipped; several devices run in parallel, one worker per serial; a device that
fails mid-run yields *failed* records with the reason, never numbers, and the other records are kept.
"""

from __future__ import annotations

import contextlib
import json
import os
import platform
import tempfile
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path
from typing import Any

from device_bench.android import DeviceOptions, DeviceRun, device_facts, push_cached, wait_until_cool
from device_bench.host import bench_pairs, host_runnable, pair_groups, role_record
from device_bench.load import NoLoadMeter
from device_bench.parsers import RunnerOutputError
from device_bench.profile import LayerMaps, profiled, summarize_etdump
from device_bench.protocol import TimingPolicy, measure_ratios, measure_runners
from device_bench.transport import LOCAL, AdbServer, AdbTransport, DeviceError, resolve_devices
from mobilelwt.builddir import ARTIFACTS, BENCH, BuildDir
from mobilelwt.checks import whole
from mobilelwt.errors import ConfigError, MobileLWTError
from mobilelwt.evaluation import topk_correct
from mobilelwt.io import atomic_path
from mobilelwt.loading import load_build, load_build_data
from targets.formats import by_runtime
from targets.litert_profiler import ProfilerError, parse_op_profile

_WRITE_LOCK = threading.Lock()


def record_key(record: dict[str, Any]) -> tuple[str, str, str, str]:
    return (record["artifact"], record["runtime"], record["device"], record["precision"])


def read_records(path: Path) -> list[dict[str, Any]]:
    """Every record of a ``bench.jsonl`` (current or not): for tools that look at the raw file."""
    return BuildDir(Path(path).parent).bench_records(current_only=False)


def append_records(path: Path, records: list[dict[str, Any]]) -> None:
    """Add records; a new record for the same key replaces the older one, and records of artifacts that are no
    longer current (re-exported, removed) are dropped, so the file only ever holds numbers of listed files."""
    with _WRITE_LOCK:
        fresh = {record_key(r) for r in records}
        kept = [r for r in BuildDir(Path(path).parent).bench_records() if record_key(r) not in fresh]
        with atomic_path(path) as tmp:
            tmp.write_text("".join(json.dumps(r) + "\n" for r in kept + records))


def host_facts(threads: int) -> dict[str, Any]:
    """The host a record was measured on: CPU model, cores, threads, and the runtime versions."""
    from importlib import metadata

    cpu = platform.processor() or None
    with contextlib.suppress(OSError):
        cpu = next(
            (line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
             if line.startswith("model name")), cpu)  # fmt: skip
    versions = {}
    for package in ("executorch", "ai-edge-litert", "coremltools", "torch"):
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            versions[package] = None
    return {
        "device": "host",
        "cpu": cpu,
        "machine": platform.machine(),
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
        "threads": threads,
        "runtimes": versions,
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
    settings: dict[str, Any],
    adb: str | None = None,
    server: AdbServer = LOCAL,
    profiling: DeviceProfiling | None = None,
    policy: TimingPolicy | None = None,
) -> None:
    """Measure ``artifacts`` on one adb device (of ``server``); records are appended group by group. With
    ``profiling``, every ExecuTorch (XNNPACK) and LiteRT file also runs once more profiled, after its timing: the
    operator profile is kept in its record (``op_profile``), or why there is none."""
    policy = policy or TimingPolicy()
    device = AdbTransport(serial, adb=adb, server=server)
    name = device.name  # the serial, or HOST:PORT/serial for a phone on another machine's adb server
    where = {"adb_server": server.label, "serial": serial}
    runner = DeviceRun(device, options)
    try:
        facts = {**device_facts(device), **where}
        runner.check()
    except (DeviceError, RunnerOutputError) as exc:
        append_records(out, [_failed(a, name, str(exc), settings, where) for a in artifacts])
        return
    per_round = max(1, -(-runs // rounds))
    accuracy_set = _accuracy_inputs(build_dir, options.accuracy_images) if options.accuracy_images else None
    for group in pair_groups(artifacts):
        try:
            remote = {
                role: push_cached(device, Path(build_dir) / a["path"], options.timeout_s) for role, a in group.items()
            }
            thermal: list[dict[str, Any]] = []
            extra: dict[str, dict[str, Any]] = {}

            def batch(group=group, remote=remote, thermal=thermal, extra=extra) -> dict[str, list[float]]:
                got = {}
                for role, artifact in group.items():
                    thermal.append(wait_until_cool(device, options))
                    first = role not in extra
                    got[role], info = runner.samples(
                        remote[role],
                        artifact["runtime"],
                        runs=per_round,
                        warmup=warmup if first else max(1, warmup // 5),
                        threads=threads,
                        input_size=artifact["input_size"],
                        cache=policy.cache,
                    )
                    extra.setdefault(role, info)  # the first round's load time and memory: the coldest process
                return got

            reference = "teacher" if "teacher" in group else next(iter(group))
            measured = measure_ratios(batch, reference=reference, meter=NoLoadMeter(),
                                      policy=replace(policy, min_batches=rounds, warmup=warmup))  # fmt: skip
            # native runners time back-to-back runs only: what was measured is warm, whatever was asked
            cache = "warm" if any(info.get("cache") == "warm" for info in extra.values()) else policy.cache
            measured["cache"] = cache
            records = [
                {
                    "artifact": a["path"],
                    "artifact_sha256": a["sha256"],
                    "settings": settings,
                    "role": role,
                    "runtime": a["runtime"],
                    "precision": a["precision"],
                    "device": name,
                    **where,
                    "threads": threads,
                    "core_mask": options.core_mask,
                    "input": [1, 3, a["input_size"], a["input_size"]],
                    "warmup": warmup,
                    "rounds": rounds,
                    "status": "ok",
                    **role_record({cache: measured}, role, cache),
                    **extra[role],
                    "thermal": {  # None where the device did not say: unknown is not 0
                        "max_status": _max_known(t["thermal_status"] for t in thermal),
                        "max_battery_c": _max_known(t["battery_c"] for t in thermal),
                        "cooling_wait_s": sum(t["cooling_wait_s"] for t in thermal),
                    },
                    "environment": facts,
                }
                for role, a in group.items()
            ]
            if accuracy_set is not None:
                for record, (role, a) in zip(records, group.items(), strict=True):
                    record.update(_device_accuracy(device, runner, remote[role], a, accuracy_set, options))
            if profiling is not None:
                for record, (role, a) in zip(records, group.items(), strict=True):
                    if profiled(a):
                        record["op_profile"] = profiling.on_device(runner, remote[role], a, threads=threads)
        except (DeviceError, RunnerOutputError) as exc:
            records = [_failed(a, name, str(exc), settings, facts) for a in group.values()]
        append_records(out, records)


class DeviceProfiling:
    """Operator profiles on devices (ExecuTorch: ETDump, read back here with the ETRecord of each program; LiteRT:
    its profiler's summary), shared by the threads of all phones."""

    def __init__(self, build_dir: Path, runs: int, workdir: Path) -> None:
        self.runs, self.workdir = runs, workdir
        self.maps = LayerMaps(build_dir, workdir)

    def on_device(self, runner: DeviceRun, remote: str, artifact: dict[str, Any], *, threads: int) -> dict[str, Any]:
        local = self.workdir / f"{threading.get_ident()}-{Path(remote).name}.profile"
        try:
            if artifact["runtime"] == "litert":
                text = runner.litert_profile(remote, local, runs=self.runs, threads=threads)
                profile = parse_op_profile(text, runs=self.runs)
            else:
                runner.etdump(remote, local, runs=self.runs, threads=threads, input_size=artifact["input_size"])
                profile = summarize_etdump(local, runs=self.runs, etrecord=self.maps.etrecord(artifact),
                                           layers=self.maps.layers)  # fmt: skip
        except (DeviceError, RunnerOutputError, ProfilerError) as exc:
            return {"sha256": artifact["sha256"], "role": artifact["role"], "error": str(exc)}
        finally:
            local.unlink(missing_ok=True)
        used = "LiteRT default" if artifact["runtime"] == "litert" and runner.options.runner == "python" else threads
        return {"sha256": artifact["sha256"], "role": artifact["role"], "threads": used,
                "runner": runner.options.runner, **profile}  # fmt: skip


def _max_known(values: Any) -> float | None:
    known = [v for v in values if v is not None]
    return max(known) if known else None


def _accuracy_inputs(build_dir: Path, count: int) -> tuple[Path, Any]:
    """``count`` images of the build's validation split, spread over its classes, preprocessed, as a .npy (and
    their labels)."""
    import numpy as np

    build = load_build(build_dir)
    data = load_build_data(build)
    index = data.val.sample_indices(count)
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
    build_dir: Path, artifact: dict[str, Any], warmup: int, options: DeviceOptions, policy: TimingPolicy
) -> dict[str, Any]:
    """Core ML runs through coremltools on a Mac; elsewhere the record says so instead of holding a number."""
    base = {"artifact": artifact["path"], "artifact_sha256": artifact["sha256"], "role": artifact["role"],
            "runtime": "coreml", "precision": artifact["precision"], "device": "host"}  # fmt: skip
    adapter = by_runtime("coreml").module
    if not adapter.can_predict():
        return {**base, "status": "unavailable", "reason": "Core ML runs only on macOS or an Apple device"}
    import torch

    size = artifact["input_size"]
    model = adapter.load(Path(build_dir) / artifact["path"], compute_units=options.coreml_compute_units)
    measured = measure_runners({"m": model}, torch.randn(1, 3, size, size), reference="m",
                               policy=replace(policy, warmup=warmup))  # fmt: skip
    return {**base, "status": "ok", "compute_units": options.coreml_compute_units,
            **role_record({policy.cache: measured}, "m", policy.cache)}  # fmt: skip


def _failed(
    artifact: dict[str, Any], device: str, reason: str, settings: dict[str, Any], facts: dict | None = None
) -> dict[str, Any]:
    return {
        "artifact": artifact["path"],
        "artifact_sha256": artifact["sha256"],
        "settings": settings,
        "role": artifact["role"],
        "runtime": artifact["runtime"],
        "precision": artifact["precision"],
        "device": device,
        "status": "failed",
        "reason": reason,
        "environment": facts or {"serial": device},
        **{k: v for k, v in (facts or {}).items() if k in ("adb_server", "serial")},
    }


def check_bench_options(devices: tuple[str, ...], runs: int, warmup: int, threads: int, rounds: int) -> None:
    whole(runs, "--runs", low=1)
    whole(warmup, "--warmup", low=0)
    whole(threads, "--threads", low=1)
    whole(rounds, "--rounds", low=1)
    if not devices or any(not d.strip() for d in devices):
        raise ConfigError("--device names no device.", "Pass --device host, an adb serial (or several), or all.")


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
    adb_servers: tuple[str, ...] = (),
    paths: set[str] | None = None,
    policy: TimingPolicy | None = None,
) -> list[dict[str, Any]]:
    """Measure the build's artifacts (those in ``paths`` if given) on ``devices`` (``host``, adb serials, or
    ``all``); returns this build's current records for the devices asked. ``adb_servers`` (``HOST:PORT`` or
    ``local``) are the adb servers whose phones are reached (default: the local one); their phones' records
    are named ``HOST:PORT/serial``, and a server that cannot be reached fails only its own phones.

    Every speedup is measured by the timing protocol with ``policy`` (cache state, interval width, time cap); on
    the host both cache states are measured and the policy's is the headline.

    A record is reused only when it was measured on the same artifact bytes with the same settings (runs,
    warm-up, threads, rounds, runner, timing policy); records of re-exported files are dropped.
    """
    check_bench_options(devices, runs, warmup, threads, rounds)
    policy = replace(policy or TimingPolicy(), warmup=warmup)
    directory = BuildDir(build_dir)
    build_dir = directory.path
    if not (directory / ARTIFACTS).is_file():
        raise ConfigError(f"{build_dir} has no {ARTIFACTS}.", "Run `mobilelwt export` (or `mobilelwt build`) first.")
    options = options or DeviceOptions()
    listed = [a for a in directory.artifacts()["artifacts"] if paths is None or a["path"] in paths]
    if not any(a.get("status") == "ok" for a in listed):
        raise ConfigError(
            f"{build_dir} lists no current, validated artifact to time.",
            "Run `mobilelwt export` (or `mobilelwt build`) for this student first.",
        )
    changed = [a["path"] for a in listed if a.get("status") == "ok" and not directory.current_artifact(a)]
    if changed:
        raise ConfigError(
            f"{', '.join(changed)} in {build_dir} no longer has the bytes that were exported and validated "
            "(changed or removed since).",
            "Re-run `mobilelwt export` for this build: it re-exports exactly the files that differ.",
        )
    artifacts = [a for a in listed if host_runnable(a)]
    coreml = [a for a in listed if a.get("status") == "ok" and a["runtime"] == "coreml"]
    out = directory / BENCH
    settings = {"runs": runs, "warmup": warmup, "threads": threads, "rounds": rounds, "runner": options.runner,
                "core_mask": options.core_mask, "timing": policy.describe()}  # fmt: skip

    def reusable(record: dict[str, Any]) -> bool:
        """Measured the same way; and holding device accuracy and an operator profile when they are asked for now
        (a profile that failed is not asked for again: its reason stays in the record)."""
        asked, phone = options.accuracy_images, record["device"] != "host"
        wants_profile = options.profile_runs and phone and record.get("status") == "ok" and record["artifact"] in traced
        return (record.get("status") in ("ok", "unavailable") and record.get("settings") == settings
                and (not asked or record.get("accuracy_images") == asked or not phone)
                and (not wants_profile or "op_profile" in record))  # fmt: skip

    traced = {a["path"] for a in artifacts if profiled(a)}
    done = {record_key(r) for r in directory.bench_records() if reusable(r)}

    def todo(device: str) -> list[dict[str, Any]]:
        return [a for a in artifacts if (a["path"], a["runtime"], device, a["precision"]) not in done]

    requested = [d for d in devices if d != "host"]
    servers = tuple(dict.fromkeys(AdbServer.parse(s) for s in adb_servers)) or (LOCAL,)
    phones, unreachable = resolve_devices(requested, adb, servers) if requested else ([], {})
    for server, reason in unreachable.items():  # its phones are unknown: one failed record per artifact for it
        append_records(out, [_failed(a, server.label, reason, settings, {"adb_server": server.label})
                             for a in artifacts])  # fmt: skip
    if "host" in devices:
        records = bench_pairs(build_dir, todo("host"), threads=threads, policy=policy)
        facts = host_facts(threads)
        records += [_coreml_on_host(build_dir, a, warmup, options, policy) for a in coreml
                    if (a["path"], "coreml", "host", a["precision"]) not in done]  # fmt: skip
        append_records(out, [{**r, "settings": settings, "environment": facts} for r in records])
    if phones:
        with contextlib.ExitStack() as stack:
            profiling = None
            if options.profile_runs:
                workdir = Path(stack.enter_context(tempfile.TemporaryDirectory()))
                profiling = DeviceProfiling(build_dir, options.profile_runs, workdir)
            pool = stack.enter_context(ThreadPoolExecutor(max_workers=len(phones)))
            jobs = [
                pool.submit(
                    bench_device,
                    build_dir,
                    serial,
                    todo(server.device_id(serial)),
                    out,
                    runs=runs,
                    warmup=warmup,
                    threads=threads,
                    rounds=rounds,
                    options=options,
                    settings=settings,
                    adb=adb,
                    server=server,
                    profiling=profiling,
                    policy=policy,
                )  # fmt: skip
                for server, serial in phones
                if todo(server.device_id(serial))
            ]
            for job in jobs:
                job.result()
    wanted = {server.device_id(serial) for server, serial in phones} | {server.label for server in unreachable}
    wanted |= {"host"} if "host" in devices else set()
    names = {a["path"] for a in listed}
    return [r for r in directory.bench_records() if r["device"] in wanted and r["artifact"] in names]


def failed_records(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [r for r in records if r.get("status") == "failed"]


class BenchFailedError(MobileLWTError):
    """Some measurements failed: the others are recorded, the command still exits non-zero."""

    exit_code = 1

    def __init__(self, failed: list[dict[str, Any]], total: int) -> None:
        reasons = sorted({f"{r['device']}: {r.get('reason', 'failed')}" for r in failed})
        super().__init__(
            f"{len(failed)} of {total} measurement(s) failed ({'; '.join(reasons)}).",
            "Fix the cause and re-run `mobilelwt bench`: the records that succeeded are kept and not measured again.",
        )
