"""The harness's real adb code path, end to end, against the loopback device (Debian's adb, isolated server)."""

import json
import os
import shlex
import shutil
import socket
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest

from device_bench.android import DeviceOptions, device_facts, push_cached, thermal_state, wait_until_cool
from device_bench.bench import bench_build, read_records
from device_bench.protocol import TimingPolicy
from device_bench.transport import AdbTransport, DeviceError, list_devices, resolve_serials
from mobilelwt.settings import RunSettings
from tests.device_bench.loopback_adbd import LoopbackDevice

REPO = Path(__file__).resolve().parents[2]
ADB = shutil.which("adb")
pytestmark = pytest.mark.skipif(ADB is None, reason="Debian's adb is not installed (.ci/run installs it)")


def _free_port() -> int:
    while True:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        if not 5554 <= port <= 5585:
            return port


@pytest.fixture(scope="module")
def adb_server(tmp_path_factory):
    """An adb server of our own: its own port and HOME, so a developer's devices and keys are never touched."""
    home = tmp_path_factory.mktemp("adb-home")
    env = {"HOME": str(home), "ANDROID_ADB_SERVER_PORT": str(_free_port())}
    with pytest.MonkeyPatch.context() as mp:
        for key, value in env.items():
            mp.setenv(key, value)
        subprocess.run([ADB, "start-server"], check=True, capture_output=True, timeout=60)
        yield env
        subprocess.run([ADB, "kill-server"], capture_output=True, timeout=60)


@pytest.fixture
def phone(adb_server, tmp_path):
    device = LoopbackDevice(tmp_path / "device", env={"PYTHONPATH": str(REPO), "HOME": str(tmp_path)})
    out = subprocess.run([ADB, "connect", device.serial], capture_output=True, text=True, timeout=60)
    assert "connected" in out.stdout, out
    subprocess.run([ADB, "-s", device.serial, "wait-for-device"], timeout=60, check=True)
    yield device
    subprocess.run([ADB, "disconnect", device.serial], capture_output=True, timeout=60)
    device.kill()


def test_devices_facts_thermal_and_file_transfer(phone, tmp_path) -> None:
    assert {"serial": phone.serial, "state": "device"}.items() <= next(
        d for d in list_devices() if d["serial"] == phone.serial
    ).items()
    assert phone.serial in resolve_serials(["all"])
    device = AdbTransport(phone.serial)
    facts = device_facts(device)
    assert facts["model"] == "Loopback 1" and facts["soc"] == "LOOP8000" and facts["abi"] == "arm64-v8a"
    phone.thermal_status, phone.battery_tenths_c = 2, 415
    assert thermal_state(device) == {"thermal_status": 2, "battery_c": 41.5}

    local = tmp_path / "it's a model.bin"  # a name that needs quoting on the device shell
    local.write_bytes(os.urandom(300_000))
    remote = push_cached(device, local, timeout=60)
    assert phone.device_path(remote).read_bytes() == local.read_bytes()
    pushes = len(phone.commands)
    assert push_cached(device, local, timeout=60) == remote and len(phone.commands) == pushes + 1  # cached: ls only
    device.pull(remote, tmp_path / "back.bin", timeout=60)
    assert (tmp_path / "back.bin").read_bytes() == local.read_bytes()
    assert device.shell(["sh", "-c", "exit 7"], timeout=30).code == 7  # the remote exit status (shell v2)


def test_thermal_gate_waits_then_gives_up(phone) -> None:
    device = AdbTransport(phone.serial)
    phone.thermal_status = 3
    sleeps = []

    def cool_down(seconds):
        sleeps.append(seconds)
        phone.thermal_status = 0

    state = wait_until_cool(device, DeviceOptions(poll_s=5), sleep=cool_down)
    assert sleeps == [5] and state["thermal_status"] == 0
    phone.thermal_status = 3
    with pytest.raises(DeviceError, match="stayed hot"):
        wait_until_cool(device, DeviceOptions(cool_limit_s=0), sleep=lambda s: None)


def test_user_errors(adb_server, phone) -> None:
    with pytest.raises(DeviceError, match="R5CT999 is not connected.*adb sees: 127.0.0.1"):
        resolve_serials(["R5CT999"])
    with pytest.raises(DeviceError, match="adb is not installed"):
        AdbTransport("x", adb="/nonexistent/adb")


# each batch on a phone starts a runner per file: tests time exactly --rounds batches
ROUNDS_ONLY = TimingPolicy(max_seconds=0.01)


@pytest.fixture(scope="module")
def exported(tmp_path_factory, tiny_teacher):
    from mobilelwt.compress import CompressConfig, compress
    from mobilelwt.distill import DistillConfig
    from mobilelwt.layerwise import LayerwiseConfig
    from targets.build_export import ExportOptions, export_build

    out = tmp_path_factory.mktemp("adb-build")
    config = CompressConfig(mac_speedup=2.0, layerwise=LayerwiseConfig(max_steps=3), finetune=DistillConfig(epochs=0))
    compress("tinynet", out=out, weights=str(tiny_teacher), run=RunSettings(data="digits"), config=config)
    export_build(out, target="android", options=ExportOptions(validation_images=8, threads=1))
    return out


def _fresh_copy(exported, tmp_path) -> Path:
    build = tmp_path / "build"
    shutil.copytree(exported, build)
    return build


def test_bench_on_the_loopback_phone_end_to_end(phone, exported, tmp_path) -> None:
    build = _fresh_copy(exported, tmp_path)
    options = DeviceOptions(accuracy_images=16)
    records = bench_build(
        build, devices=(phone.serial,), runs=4, rounds=2, warmup=1, threads=1, options=options, policy=ROUNDS_ONLY
    )
    ok = [r for r in records if r["device"] == phone.serial]
    assert len(ok) == 4 and all(r["status"] == "ok" for r in ok), [r.get("reason") for r in ok]
    for r in ok:
        assert r["runs"] == 4 and r["runner"] == "python" and r["environment"]["model"] == "Loopback 1"
        assert r["thermal"]["max_status"] == 0 and r["median_ms"] > 0
        assert r["accuracy_images"] == 16 and 0.0 <= r["device_top1"] <= r["device_top5"] <= 100.0
        assert r["load_ms"] > 0 and r["first_run_ms"] > 0 and r["peak_rss_mb"] > r["baseline_rss_mb"] > 0
        assert r["model_rss_mb"] > 0 and r["trimmed_mean_ms"] > 0 and r["p99_over_p50"] >= 1.0
        if r["role"] == "student":
            assert r["speedup_ci95"][0] <= r["speedup"] <= r["speedup_ci95"][1]
    by_artifact = {r["artifact"]: r for r in ok}
    pte, tflite = (by_artifact[f"android/tinynet-student-fp32.{ext}"] for ext in ("pte", "tflite"))
    assert pte["device_top1"] == tflite["device_top1"]  # fp32 on two runtimes: the same predictions
    pushed = sorted(p.name for p in phone.device_path("/data/local/tmp/mobilelwt").iterdir() if p.suffix != ".npy")
    assert len(pushed) == 4  # each artifact once, named by its hash
    runs = [c for c in phone.commands if "-m device_bench.runner" in c and "--inputs" not in c]
    roles = ["teacher" if "teacher" in c else "student" for c in runs]
    assert roles[:4] == ["teacher", "student", "teacher", "student"]  # interleaved rounds

    calls = len(phone.commands)
    again = bench_build(build, devices=(phone.serial,), runs=4, rounds=2, warmup=1, threads=1, policy=ROUNDS_ONLY)
    assert len(again) == 4 and len(phone.commands) == calls  # resumed: nothing sent to the device again


def test_device_killed_mid_run_gives_failed_records_and_keeps_the_others(phone, exported, tmp_path) -> None:
    build = _fresh_copy(exported, tmp_path)

    def unplug_during_executorch(command):  # the TFLite pair is measured first, then the phone goes away
        if "device_bench.runner" in command and ".pte" in command:
            phone.kill()

    phone.on_command = unplug_during_executorch
    records = {
        r["artifact"]: r
        for r in bench_build(build, devices=(phone.serial,), runs=2, rounds=1, threads=1, policy=ROUNDS_ONLY)
    }
    assert records["android/tinynet-student-fp32.tflite"]["status"] == "ok"
    failed = records["android/tinynet-student-fp32.pte"]
    assert failed["status"] == "failed" and "median_ms" not in failed and failed["reason"]
    assert len(read_records(build / "bench.jsonl")) == 4


def test_native_runner_missing_is_a_failed_record_naming_the_flag(phone, exported, tmp_path) -> None:
    build = _fresh_copy(exported, tmp_path)
    records = bench_build(
        build, devices=(phone.serial,), runs=2, rounds=1, options=DeviceOptions(runner="native"), policy=ROUNDS_ONLY
    )
    assert {r["status"] for r in records} == {"failed"}
    reasons = " ".join(r["reason"] for r in records)
    assert "--et-runner" in reasons and "--tflite-runner" in reasons
    assert json.loads((build / "bench.jsonl").read_text().splitlines()[0])["device"] == phone.serial


def test_two_phones_in_parallel_never_mix_and_core_mask_is_applied(adb_server, exported, tmp_path) -> None:
    phones = []
    for name in ("A", "B"):
        phone = LoopbackDevice(tmp_path / name, props={"ro.product.model": f"Loopback {name}"},
                               env={"PYTHONPATH": str(REPO), "HOME": str(tmp_path)})  # fmt: skip
        subprocess.run([ADB, "connect", phone.serial], capture_output=True, timeout=60, check=True)
        subprocess.run([ADB, "-s", phone.serial, "wait-for-device"], timeout=60, check=True)
        phones.append(phone)
    try:
        build = _fresh_copy(exported, tmp_path)
        options = DeviceOptions(core_mask="1")
        records = bench_build(build, devices=tuple(p.serial for p in phones), runs=2, rounds=1, threads=1,
                              options=options, policy=ROUNDS_ONLY)  # fmt: skip
        assert len(records) == 8 and all(r["status"] == "ok" for r in records), [r.get("reason") for r in records]
        for phone, name in zip(phones, "AB", strict=True):
            mine = [r for r in records if r["device"] == phone.serial]
            assert len(mine) == 4 and {r["environment"]["model"] for r in mine} == {f"Loopback {name}"}
            assert all(r["core_mask"] == "1" for r in mine)
            assert all(c.startswith("cd ") and "taskset 1 " in c for c in phone.commands if "device_bench.runner" in c)
    finally:
        for phone in phones:
            subprocess.run([ADB, "disconnect", phone.serial], capture_output=True, timeout=60)
            phone.kill()


def test_device_gone_mid_run_is_named_as_such(phone, exported, tmp_path) -> None:
    build = _fresh_copy(exported, tmp_path)
    phone.on_command = lambda command: phone.kill() if "device_bench.runner" in command and ".pte" in command else None
    records = bench_build(build, devices=(phone.serial,), runs=2, rounds=1, threads=1, policy=ROUNDS_ONLY)
    failed = [r for r in records if r["status"] == "failed"]
    assert failed and all("went away" in r["reason"] or "not reachable" in r["reason"] for r in failed), failed
    assert not any("no result line" in r["reason"] for r in failed)


def test_truncated_cached_artifact_on_the_device_is_replaced_not_trusted(phone, exported, tmp_path) -> None:
    build = _fresh_copy(exported, tmp_path)
    first = bench_build(build, devices=(phone.serial,), runs=2, rounds=1, threads=1, policy=ROUNDS_ONLY)
    assert all(r["status"] == "ok" for r in first)
    cached = next(p for p in phone.device_path("/data/local/tmp/mobilelwt").iterdir() if p.name.endswith(".pte"))
    size = cached.stat().st_size
    cached.write_bytes(cached.read_bytes()[: size // 2])  # a copy cut short (full storage, pulled cable)
    again = bench_build(
        build, devices=(phone.serial,), runs=3, rounds=1, threads=1, policy=ROUNDS_ONLY
    )  # other settings: re-measure
    assert all(r["status"] == "ok" for r in again), [r.get("reason") for r in again]
    assert cached.stat().st_size == size


def test_wrong_python_is_named_and_bench_exits_non_zero(phone, exported, tmp_path) -> None:
    from tests.mobilelwt.app.cli.test_cli import invoke

    build = _fresh_copy(exported, tmp_path)
    result = invoke("bench", build, "--device", phone.serial, "--python", "/opt/no-such/python3", "--runs", "2",
                    "--rounds", "1")  # fmt: skip
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output and "4 of 4 measurement(s) failed" in result.output
    records = read_records(build / "bench.jsonl")
    assert {r["status"] for r in records} == {"failed"}
    assert all("--python '/opt/no-such/python3' does not run" in r["reason"] for r in records)


def test_runner_crash_carries_its_stderr(phone, exported, tmp_path) -> None:
    import sys

    build = _fresh_copy(exported, tmp_path)
    fake = tmp_path / "crashing-python"
    fake.write_text(
        "#!/bin/sh\n"
        f'case "$1" in -c) exec {sys.executable} "$@";; esac\n'
        'echo "Fatal signal 11 (SIGSEGV) in libxnnpack" >&2\nexit 139\n'
    )
    fake.chmod(0o755)
    records = bench_build(build, devices=(phone.serial,), runs=2, rounds=1, threads=1,
                         options=DeviceOptions(python=str(fake)), policy=ROUNDS_ONLY)  # fmt: skip
    assert {r["status"] for r in records} == {"failed"}
    assert all("crashed" in r["reason"] and "exit 139" in r["reason"] and "SIGSEGV" in r["reason"] for r in records)


def test_unknown_thermal_state_is_null_not_zero(phone, exported, tmp_path) -> None:
    build = _fresh_copy(exported, tmp_path)
    phone.thermal_status = None  # the device's dumpsys prints no number
    records = bench_build(build, devices=(phone.serial,), runs=2, rounds=1, threads=1, policy=ROUNDS_ONLY)
    assert all(r["status"] == "ok" and r["thermal"]["max_status"] is None for r in records)
    assert all(r["thermal"]["max_battery_c"] == 30.0 for r in records)


def test_phones_on_two_adb_servers_are_benched_apart_and_a_lost_server_fails_only_its_own(
    adb_server, exported, tmp_path
) -> None:
    """`--adb-server HOST:PORT` (adb -H -P): a second server with its own loopback phone, as on another machine."""
    port = _free_port()
    remote = f"127.0.0.1:{port}"
    subprocess.run([ADB, "-P", str(port), "start-server"], check=True, capture_output=True, timeout=60)
    phones = {}
    try:
        for name, server_args in (("local", []), ("remote", ["-P", str(port)])):
            phone = LoopbackDevice(tmp_path / name, props={"ro.product.model": f"Loopback {name}"},
                                   env={"PYTHONPATH": str(REPO), "HOME": str(tmp_path)})  # fmt: skip
            subprocess.run([ADB, *server_args, "connect", phone.serial], capture_output=True, timeout=60, check=True)
            subprocess.run([ADB, *server_args, "-s", phone.serial, "wait-for-device"], timeout=60, check=True)
            phones[name] = phone
        build = _fresh_copy(exported, tmp_path)
        records = bench_build(
            build, devices=("all",), adb_servers=("local", remote), runs=2, rounds=1, threads=1, policy=ROUNDS_ONLY
        )
        remote_id = f"{remote}/{phones['remote'].serial}"
        by_device = {d: [r for r in records if r["device"] == d] for d in (phones["local"].serial, remote_id)}
        assert all(len(rs) == 4 and all(r["status"] == "ok" for r in rs) for rs in by_device.values()), records
        assert {r["environment"]["model"] for r in by_device[remote_id]} == {"Loopback remote"}
        assert {(r["adb_server"], r["serial"]) for r in by_device[remote_id]} == {(remote, phones["remote"].serial)}
        assert {r["adb_server"] for r in by_device[phones["local"].serial]} == {"local"}
        assert all(any("-m device_bench.runner" in c for c in phone.commands) for phone in phones.values())

        # the remote server goes away: its phone's work fails, the local phone's records stand
        subprocess.run([ADB, "-P", str(port), "kill-server"], capture_output=True, timeout=60)
        again = bench_build(
            build, devices=("all",), adb_servers=("local", remote), runs=2, rounds=1, threads=1, policy=ROUNDS_ONLY
        )
        lost = [r for r in again if r["device"] == remote]
        assert len(lost) == 4 and all(r["status"] == "failed" and "not reachable" in r["reason"] for r in lost)
        assert all(r["status"] == "ok" for r in again if r["device"] == phones["local"].serial)
        stored = read_records(build / "bench.jsonl")
        assert sum(r["device"] == remote_id and r["status"] == "ok" for r in stored) == 4  # measured before: kept
        with pytest.raises(DeviceError, match="is not HOST:PORT"):
            bench_build(
                build, devices=("all",), adb_servers=("nonsense",), runs=2, rounds=1, threads=1, policy=ROUNDS_ONLY
            )
    finally:
        subprocess.run([ADB, "-P", str(port), "kill-server"], capture_output=True, timeout=60)
        for phone in phones.values():
            subprocess.run([ADB, "disconnect", phone.serial], capture_output=True, timeout=60)
            phone.kill()


def test_a_plan_timed_on_the_phone_builds_its_table_there_and_that_table_is_refused_for_the_host(
    phone, wide_teacher, tmp_path
) -> None:
    from device_bench.probe import AdbProbe
    from device_bench.protocol import TimingPolicy
    from mobilelwt.compress import CompressConfig, LatencyTarget, compress
    from mobilelwt.distill import DistillConfig
    from mobilelwt.errors import ConfigError
    from mobilelwt.layerwise import LayerwiseConfig

    probes = []

    def on_the_phone(target):
        one_call = TimingPolicy(min_batches=1, max_seconds=0.1)  # each call starts a runner: one call per timing
        probes.append(AdbProbe(target.device, target.runtime, threads=target.threads, policy=one_call,
                               rounds_per_call=3))  # fmt: skip
        return probes[-1]

    shared = tmp_path / "loopback-table.json"
    config = CompressConfig(
        speedup=1.1,  # widenet met a 1.6x target at its first plan on a busy 2-core host: room
        latency=LatencyTarget(device=phone.serial, threads=1, grid_points=2, table=str(shared)),
        calib_images=8,
        layerwise=LayerwiseConfig(epochs=0),
        finetune=DistillConfig(epochs=0),
    )
    out = tmp_path / "b"
    result = compress("widenet", out=out, weights=str(wide_teacher), config=config, latency_probe=on_the_phone)
    details = result.plan.details
    assert details["verified"] and details["measured_ci95"][1] >= 1.1  # the interval meets the target
    assert "Loopback 1" in details["probe"] and details["device"]["model"] == "Loopback 1"
    table = json.loads(shared.read_text())  # the shared table was written, and equals the build's own copy
    assert table == json.loads((out / "latency-table.json").read_text())
    assert table["identity"]["soc"] == "LOOP8000" and len(table["entries"]) == details["table"]["timed_now"]
    interleaved = [c for c in phone.commands if "-m device_bench.runner" in c and "--input-shape" in c]
    assert interleaved and any(c.count(".pte") >= 3 for c in interleaved)  # teacher layer and candidates, one process

    host = replace(config, latency=LatencyTarget(device="host", threads=1, grid_points=2, table=str(shared)))
    with pytest.raises(ConfigError, match="measured on mobilelwt Loopback 1 \\(LOOP8000\\), not on host") as info:
        from device_bench.probe import HostProbe

        compress("widenet", out=tmp_path / "h", weights=str(wide_teacher), config=host,
                 latency_probe=lambda t: HostProbe(t.runtime, threads=t.threads))  # fmt: skip
    assert "--allow-foreign-table" in info.value.fix


def test_operator_profile_on_the_phone_python_runner(phone, exported, tmp_path) -> None:
    from mobilelwt.builddir import BuildDir

    build = _fresh_copy(exported, tmp_path)
    options = DeviceOptions(profile_runs=5)
    records = bench_build(
        build, devices=(phone.serial,), runs=2, rounds=1, warmup=1, threads=1, options=options, policy=ROUNDS_ONLY
    )
    by_artifact = {r["artifact"]: r for r in records}
    assert all(r["status"] == "ok" for r in records), [r.get("reason") for r in records]
    litert = by_artifact["android/tinynet-student-fp32.tflite"]["op_profile"]  # LiteRT's profiler on the phone
    assert litert["runner"] == "python" and litert["delegate_calls_per_run"] >= 1 and litert["execute_ms"] > 0
    profile = by_artifact["android/tinynet-student-fp32.pte"]["op_profile"]
    assert profile["runner"] == "python" and profile["runs"] == 5 and profile["execute_ms"] > 0
    assert profile["ops"] and all(op["where"] in ("delegate", "portable") for op in profile["ops"])
    plan = BuildDir(build).plan().layers
    mapped = {row["layer"] for row in profile["layers"]["rows"]}
    assert set(plan) <= mapped and profile["layers"]["mapped_share"] > 0.8  # the ETRecord made here fits
    traced = [c for c in phone.commands if "--etdump" in c or "--op-profile" in c]
    assert len(traced) == 4  # each file once, after its timing
    shown = BuildDir(build).op_profiles()
    assert f"android/tinynet-student-fp32.pte on {phone.serial}" in shown

    calls = len(phone.commands)
    assert len(bench_build(build, devices=(phone.serial,), runs=2, rounds=1, warmup=1, threads=1,
                           options=options, policy=ROUNDS_ONLY)) == 4  # fmt: skip
    assert len(phone.commands) == calls  # profiled records are reused when a profile is asked again


@pytest.fixture(scope="module")
def native_runner(tmp_path_factory):
    from device_bench.native import build_host_runner

    if shutil.which("g++") is None:
        pytest.skip("no C++ compiler (.ci/run's machine has g++)")
    return build_host_runner(tmp_path_factory.mktemp("runner") / "et_runner")


def test_native_executorch_runner_on_the_phone_times_profiles_and_watches_memory(
    phone, exported, tmp_path, native_runner
) -> None:
    from mobilelwt.builddir import BuildDir

    build = _fresh_copy(exported, tmp_path)
    ptes = {a["path"] for a in BuildDir(build).artifacts()["artifacts"] if a["path"].endswith(".pte")}
    options = DeviceOptions(runner="native", et_runner=native_runner, profile_runs=5)
    records = bench_build(build, devices=(phone.serial,), runs=6, rounds=2, warmup=2, threads=1, options=options,
                          paths=ptes, policy=ROUNDS_ONLY)  # fmt: skip
    assert len(records) == 2 and all(r["status"] == "ok" for r in records), [r.get("reason") for r in records]
    for r in records:
        assert r["runner"] == "executor_runner" and r["runs"] == 6  # 3 per round, the warm-up runs dropped
        assert r["load_ms"] > 0 and r["first_run_ms"] > 0 and r["median_ms"] > 0
        profile = r["op_profile"]
        assert profile["runner"] == "native" and profile["execute_ms"] > 0 and profile["layers"]["rows"]
    timed = [c for c in phone.commands if "et_runner" in c and "--num_executions" in c and "--etdump" not in c]
    executions = [c.split("--num_executions ")[1].split()[0] for c in timed]
    assert executions == ["5", "5", "4", "4"]  # round 1: 2 warm-up + 3 timed; later rounds 1 warm-up + 3
    assert all("--cpu_threads 1" in c for c in timed)
    assert all("MOBILELWT_MEMORY" in c for c in timed)  # every native run is under the memory watch


def test_memory_watch_reads_a_real_process_and_stays_silent_for_a_short_one() -> None:
    from device_bench.android import parse_memory, watched

    grow = f"{shlex.quote(sys.executable)} -c 'import time; b = bytearray(64 << 20); time.sleep(0.5)'"
    out = subprocess.run(["/bin/sh", "-c", watched(grow)], capture_output=True, text=True)
    memory = parse_memory(out.stdout)
    assert out.returncode == 0 and 64 < memory["peak_rss_mb"] < 400 and 0 < memory["pss_mb"] <= memory["peak_rss_mb"]
    failed = subprocess.run(["/bin/sh", "-c", watched("sh -c 'exit 3'")], capture_output=True, text=True)
    assert failed.returncode == 3 and parse_memory(failed.stdout) == {}  # gone before a second poll: nothing


def test_a_runner_without_the_event_tracer_keeps_its_latency_and_says_why_there_is_no_profile(
    phone, exported, tmp_path, native_runner
) -> None:
    from mobilelwt.app.reports import make_report
    from mobilelwt.builddir import BuildDir

    build = _fresh_copy(exported, tmp_path)
    untraced = tmp_path / "executor_runner"  # an executor_runner built without the event tracer: no such flag
    untraced.write_text(
        '#!/bin/sh\ncase "$*" in *--etdump_path*) echo "ERROR: unknown command line flag \'etdump_path\'" >&2; '
        f'exit 1;; esac\nexec {shlex.quote(str(native_runner))} "$@"\n'
    )
    untraced.chmod(0o755)
    ptes = {a["path"] for a in BuildDir(build).artifacts()["artifacts"] if a["path"].endswith(".pte")}
    options = DeviceOptions(runner="native", et_runner=untraced, profile_runs=3)
    records = bench_build(
        build, devices=(phone.serial,), runs=2, rounds=1, threads=1, options=options, paths=ptes, policy=ROUNDS_ONLY
    )
    assert all(r["status"] == "ok" and r["median_ms"] > 0 for r in records)
    for r in records:
        assert "unknown command line flag" in r["op_profile"]["error"] and "event tracer" in r["op_profile"]["error"]
    shown = BuildDir(build).op_profiles()[f"android/tinynet-student-fp32.pte on {phone.serial}"]
    assert "error" in shown
    make_report([build], formats=("html",))
    assert (
        "No operator profile: executor_runner failed: ERROR: unknown command line flag"
        in (build / "report.html").read_text()
    )
