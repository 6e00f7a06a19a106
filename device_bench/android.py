"""Android devices over adb: facts, thermal gating, artifacts and runners pushed once (cached by hash), runs.

Runners: the Python runner (``python -m device_bench.runner``, any device with Python and a runtime), or the
native tools the user built for the phone: ExecuTorch's ``executor_runner`` (``--et-runner``) and TFLite's
``benchmark_model`` (``--tflite-runner``). A run counts only when its output shows that it completed.
"""

from __future__ import annotations

import re
import shlex
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from device_bench.parsers import MARKER, RunnerOutputError, parse_benchmark_model, parse_executor_runner, parse_result
from device_bench.transport import AdbTransport, DeviceError
from mobilelwt.hashing import sha256_file

DEVICE_DIR = "/data/local/tmp/mobilelwt"
FACT_PROPS = {
    "model": "ro.product.model",
    "manufacturer": "ro.product.manufacturer",
    "soc": "ro.soc.model",
    "board": "ro.board.platform",
    "abi": "ro.product.cpu.abi",
    "android": "ro.build.version.release",
    "sdk": "ro.build.version.sdk",
}


@dataclass
class DeviceOptions:
    runner: str = "python"  # python | native
    python: str = "python3"
    et_runner: Path | None = None
    tflite_runner: Path | None = None
    core_mask: str | None = None  # taskset mask, e.g. "f0" for the big cores
    max_thermal_status: int = 1  # Android thermal status: 0 none, 1 light, 2 moderate, 3 severe...
    max_battery_c: float = 42.0
    cool_limit_s: float = 300.0
    poll_s: float = 10.0
    timeout_s: float = 600.0
    accuracy_images: int = 0  # > 0: also run that many validation images on the device (Python runner)
    coreml_compute_units: str = "ALL"  # macOS hosts: ALL, CPU_ONLY, CPU_AND_GPU, CPU_AND_NE
    profile_runs: int = 0  # > 0: also profile each ExecuTorch/LiteRT file per operator over that many runs


def device_facts(device: AdbTransport, timeout: float = 30) -> dict[str, Any]:
    out = device.shell(["getprop"], timeout=timeout).stdout
    props = dict(re.findall(r"^\[([^\]]+)\]: \[(.*)\]$", out, re.MULTILINE))
    facts = {key: props.get(prop) for key, prop in FACT_PROPS.items()}
    if not any(facts.values()):
        raise DeviceError(f"{device.serial} answered getprop with nothing usable.", "Is it an Android device?")
    return {"serial": device.serial, **facts}


def thermal_state(device: AdbTransport, timeout: float = 30) -> dict[str, Any]:
    """Android's thermal status (dumpsys thermalservice) and the battery temperature in °C (dumpsys battery)."""
    thermal = device.shell(["dumpsys", "thermalservice"], timeout=timeout).stdout
    battery = device.shell(["dumpsys", "battery"], timeout=timeout).stdout
    status = re.search(r"Thermal Status:\s*(\d+)", thermal)
    temperature = re.search(r"^\s*temperature:\s*(-?\d+)", battery, re.MULTILINE)
    return {
        "thermal_status": int(status.group(1)) if status else None,
        "battery_c": int(temperature.group(1)) / 10 if temperature else None,
    }


def wait_until_cool(
    device: AdbTransport, options: DeviceOptions, *, sleep: Callable[[float], None] = time.sleep
) -> dict[str, Any]:
    """Block until the device is cool enough to measure; a device still hot after the limit is an error."""
    started = time.monotonic()
    while True:
        state = thermal_state(device)
        hot_status = state["thermal_status"] is not None and state["thermal_status"] > options.max_thermal_status
        hot_battery = state["battery_c"] is not None and state["battery_c"] > options.max_battery_c
        waited = time.monotonic() - started
        if not (hot_status or hot_battery):
            return {**state, "cooling_wait_s": round(waited, 1)}
        if waited >= options.cool_limit_s:
            raise DeviceError(
                f"{device.serial} stayed hot for {waited:.0f} s (thermal status {state['thermal_status']}, "
                f"battery {state['battery_c']} °C).",
                "Let it cool (screen off, unplug heavy apps) or raise --cool-limit.",
            )
        sleep(options.poll_s)


def remote_sha256(device: AdbTransport, remote: str, timeout: float) -> str | None:
    """sha256 of a file on the device (toybox ``sha256sum``), or None when it is not there."""
    result = device.shell(["sha256sum", remote], timeout=timeout)
    match = re.match(r"([0-9a-f]{64})\b", result.stdout.strip())
    return match.group(1) if result.code == 0 and match else None


def push_cached(device: AdbTransport, local: Path, timeout: float) -> str:
    """Push ``local`` once: the device path carries the file's hash, and the copy on the device is checked
    against the whole hash before every use, so a truncated or altered copy is replaced, never trusted."""
    digest = sha256_file(local)
    remote = f"{DEVICE_DIR}/{digest[:16]}-{Path(local).name}"
    if remote_sha256(device, remote, timeout) == digest:
        return remote
    device.shell(["mkdir", "-p", DEVICE_DIR], timeout=timeout)
    device.shell(["rm", "-f", remote], timeout=timeout)
    device.push(local, remote, timeout=timeout)
    found = remote_sha256(device, remote, timeout)
    if found != digest:
        state = "missing" if found is None else "corrupt (its sha256 differs)"
        raise DeviceError(
            f"{Path(local).name} is {state} on {device.serial} right after the push.",
            "Check the device's free space and storage (`adb shell df /data/local/tmp`), then re-run.",
        )
    return remote


class DeviceRun:
    """Runs one artifact on a device with the configured runner and returns latency samples (ms)."""

    def __init__(self, device: AdbTransport, options: DeviceOptions) -> None:
        self.device, self.options = device, options
        self._runners: dict[str, str] = {}

    def check(self) -> None:
        """Before any measurement: the Python runner must start on the device (a wrong --python fails here)."""
        if self.options.runner != "python":
            return
        self.device.shell(["mkdir", "-p", DEVICE_DIR], timeout=60)
        argv = [self.options.python, "-c", "import device_bench.runner"]
        result = self.device.shell_script(self._command(argv), timeout=min(self.options.timeout_s, 120))
        if result.code != 0:
            raise self._failure(result, "starting the Python runner")

    def _failure(self, result: Any, what: str) -> Exception:
        """The true cause of a run that printed no result: device gone, wrong --python, runner crash, or a cut
        output."""
        serial, python = self.device.serial, self.options.python
        tail = (result.stderr or result.stdout).strip()[-400:]
        if not self.device.reachable():
            return DeviceError(
                f"Device {serial} went away while {what}.",
                "Reconnect it (`adb devices`) and re-run `mobilelwt bench`: finished records are kept.",
            )
        missing = result.code == 127 or re.search(r"(not found|No such file|can't execute|inaccessible)", tail)
        if missing and "No module named" not in tail:
            return DeviceError(
                f"--python {python!r} does not run on {serial} ({tail.splitlines()[-1] if tail else 'exit 127'}).",
                "Pass --python with the path of a Python that has the runtimes on the device.",
            )
        if "No module named" in tail:
            return DeviceError(
                f"{python} on {serial} cannot import what the runner needs ({tail.splitlines()[-1]}).",
                "Install mobilelwt's device_bench and the runtimes for that Python, or use --runner native.",
            )
        if result.code != 0:
            return RunnerOutputError(
                f"The Python runner crashed on {serial} while {what} (exit {result.code}): {tail or 'no output'}", ""
            )
        return RunnerOutputError(
            f"The Python runner on {serial} exited 0 without its result line while {what} (output cut short).",
            "Re-run the benchmark; if it persists, run `python -m device_bench.runner` by hand on the device.",
        )

    def _native_runner(self, runtime: str) -> str:
        local = self.options.et_runner if runtime == "executorch" else self.options.tflite_runner
        flag = "--et-runner" if runtime == "executorch" else "--tflite-runner"
        if local is None:
            raise DeviceError(f"No {runtime} runner binary for {self.device.serial}.", f"Pass {flag} PATH.")
        if not Path(local).is_file():
            raise DeviceError(f"Runner {local} does not exist.", f"Pass {flag} with the binary built for the phone.")
        if runtime not in self._runners:
            remote = push_cached(self.device, Path(local), self.options.timeout_s)
            self.device.shell(["chmod", "755", remote], timeout=60)
            self._runners[runtime] = remote
        return self._runners[runtime]

    def _runner_line(self, argv: list[str]) -> str:
        command = shlex.join(argv)
        if self.options.core_mask:
            command = f"taskset {shlex.quote(self.options.core_mask)} {command}"
        return command

    def _command(self, argv: list[str]) -> str:
        """``argv`` in the runner's directory (the Python runner imports from there; an executor_runner built with
        the event tracer writes ``model.etdump`` into its working directory on every run)."""
        return f"cd {shlex.quote(DEVICE_DIR)} && {self._runner_line(argv)}"

    def _native(self, argv: list[str], what: str) -> tuple[str, dict[str, Any]]:
        """A native runner under the memory watch; its output and the peak memory the watch saw."""
        script = f"cd {shlex.quote(DEVICE_DIR)} || exit 1; {watched(self._runner_line(argv))}"
        result = self.device.shell_script(script, timeout=self.options.timeout_s)
        if not self.device.reachable():
            raise DeviceError(f"Device {self.device.serial} went away during {what}.", "Reconnect it.")
        return result.stdout + result.stderr, parse_memory(result.stdout)

    def _python(self, argv: list[str], what: str) -> dict[str, Any]:
        result = self.device.shell_script(self._command(argv), timeout=self.options.timeout_s)
        if MARKER not in result.stdout or result.code != 0:
            raise self._failure(result, what)
        return parse_result(result.stdout)  # the marker, not the exit status, proves completion

    def outputs(self, remote: str, runtime: str, remote_inputs: str, local_out: Path, *, input_size: int) -> None:
        """Run every input of ``remote_inputs`` (a .npy) once on the device and pull the logits to ``local_out``."""
        if self.options.runner != "python":
            raise DeviceError("On-device accuracy needs the Python runner.", "Use --runner python, or --accuracy 0.")
        remote_out = f"{remote_inputs}.{Path(remote).name}.out.npy"
        argv = [self.options.python, "-m", "device_bench.runner", remote, "--runtime", runtime, "--runs", "1",
                "--warmup", "0", "--threads", "1", "--input-size", str(input_size),
                "--inputs", remote_inputs, "--outputs", remote_out]  # fmt: skip
        self._python(argv, f"running the accuracy images through {Path(remote).name}")
        self.device.pull(remote_out, local_out, timeout=self.options.timeout_s)

    def interleaved(
        self,
        remotes: list[str],
        runtime: str,
        *,
        input_shape: tuple[int, ...],
        rounds: int,
        per_round: int,
        warmup: int,
        threads: int,
        cache: str = "warm",
    ) -> dict[str, list[float]]:
        """Several files timed interleaved in one Python runner process (``cache``: warm blocks, or a cache flush
        before every call); ms samples by remote file name."""
        if self.options.runner != "python":
            raise DeviceError("Planning on a phone needs the Python runner.", "Use the Python runner on the device.")
        argv = [self.options.python, "-m", "device_bench.runner", *remotes, "--runtime", runtime,
                "--input-shape", ",".join(str(v) for v in input_shape), "--rounds", str(rounds),
                "--per-round", str(per_round), "--warmup", str(warmup), "--threads", str(threads),
                "--cache", cache]  # fmt: skip
        record = self._python(argv, f"timing {len(remotes)} candidate file(s)")
        samples = record.get("samples_ms")
        if not isinstance(samples, dict) or set(samples) != {Path(r).name for r in remotes}:
            raise RunnerOutputError("The Python runner's result does not hold every file's samples.", "Re-run.")
        return samples

    def samples(
        self, remote: str, runtime: str, *, runs: int, warmup: int, threads: int, input_size: int, cache: str = "warm"
    ) -> tuple[list[float], dict[str, Any]]:
        """Timed runs of one file on the device and what the runner said of it (``cache``: the Python runner can
        flush the caches before each run; the native runners time back-to-back runs only, said as ``cache``)."""
        if self.options.runner == "python":
            argv = [self.options.python, "-m", "device_bench.runner", remote, "--runtime", runtime,
                    "--runs", str(runs), "--warmup", str(warmup), "--threads", str(threads),
                    "--input-size", str(input_size), "--cache", cache]  # fmt: skip
            record = self._python(argv, f"timing {Path(remote).name}")
            keys = ("load_ms", "first_run_ms", "peak_rss_mb", "baseline_rss_mb", "pss_mb")
            facts = {k: record[k] for k in keys if record.get(k) is not None}
            if "peak_rss_mb" in facts and "baseline_rss_mb" in facts:
                facts["model_rss_mb"] = facts["peak_rss_mb"] - facts["baseline_rss_mb"]
            return record["samples_ms"], {"runner": "python", "runner_platform": record.get("platform"),
                                          "cache": record.get("cache", "warm"), **facts}  # fmt: skip
        runner = self._native_runner(runtime)
        if runtime == "executorch":
            # executor_runner has no warm-up flag: the warm-up runs are executed and their times dropped
            argv = [runner, "--model_path", remote, "--num_executions", str(warmup + runs),
                    "--cpu_threads", str(threads)]  # fmt: skip
            output, memory = self._native(argv, "executor_runner")
            parsed = parse_executor_runner(output)
            if parsed["mean_ms"] is None:
                raise RunnerOutputError(
                    "This executor_runner build completes but prints no timing.",
                    "Use a build that prints the total or per-run times, or --runner python.",
                )
            timed = parsed["samples_ms"][warmup:]
            info = {"runner": "executor_runner", "iterations": parsed["iterations"], "load_ms": parsed["load_ms"],
                    "cache": "warm", **memory}  # fmt: skip
            if parsed["samples_ms"]:
                info["first_run_ms"] = parsed["samples_ms"][0]
            if not timed:  # a build that prints only the total: one mean, warm-up included (said so)
                return [parsed["mean_ms"]], {**info, "timing": "mean of all executions, cold run included"}
            return timed, info
        argv = [runner, f"--graph={remote}", f"--num_threads={threads}", f"--num_runs={runs}",
                f"--warmup_runs={warmup}", "--report_peak_memory_footprint=true"]  # fmt: skip
        output, memory = self._native(argv, "benchmark_model")
        parsed = parse_benchmark_model(output)
        extra = {k: v for k, v in parsed.items() if k.startswith("memory")}
        info = {"runner": "benchmark_model", "load_ms": parsed["init_ms"], "first_run_ms": parsed["first_inference_ms"],
                "cache": "warm", **extra, **memory}  # fmt: skip
        return [parsed["mean_ms"]], info

    def litert_profile(self, remote: str, local: Path, *, runs: int, threads: int) -> str:
        """Run a .tflite file ``runs`` times on the device with LiteRT's op profiling on; the summary text
        (the Python runner's LiteRT profiler runs on LiteRT's default threads; benchmark_model on ``threads``)."""
        if self.options.runner == "python":
            remote_text = f"{remote}.profile.txt"
            argv = [self.options.python, "-m", "device_bench.runner", remote, "--runtime", "litert",
                    "--runs", str(runs), "--op-profile", remote_text]  # fmt: skip
            self._python(argv, f"profiling {Path(remote).name}")
            self.device.pull(remote_text, local, timeout=self.options.timeout_s)
            return local.read_text()
        argv = [self._native_runner("litert"), f"--graph={remote}", f"--num_threads={threads}",
                f"--num_runs={runs}", "--warmup_runs=1", "--enable_op_profiling=true"]  # fmt: skip
        output, _ = self._native(argv, "benchmark_model (profile)")
        return output

    def etdump(self, remote: str, local: Path, *, runs: int, threads: int, input_size: int) -> None:
        """Run an ExecuTorch file ``runs`` times on the device with ETDump on and pull the ETDump to ``local``."""
        remote_etdump = f"{remote}.etdump"
        self.device.shell(["rm", "-f", remote_etdump], timeout=60)
        if self.options.runner == "python":
            argv = [self.options.python, "-m", "device_bench.runner", remote, "--runtime", "executorch",
                    "--runs", str(runs), "--threads", str(threads), "--input-size", str(input_size),
                    "--etdump", remote_etdump]  # fmt: skip
            self._python(argv, f"profiling {Path(remote).name}")
        else:
            argv = [self._native_runner("executorch"), "--model_path", remote, "--num_executions", str(runs),
                    "--cpu_threads", str(threads), "--etdump_path", remote_etdump]  # fmt: skip
            output, _ = self._native(argv, "executor_runner (profile)")
            parsed = parse_executor_runner(output)
            if parsed["etdump"] is None:
                raise RunnerOutputError(
                    f"executor_runner wrote no ETDump for {Path(remote).name}.",
                    "Build executor_runner with the event tracer (-DEXECUTORCH_ENABLE_EVENT_TRACER=ON).",
                )
        self.device.pull(remote_etdump, local, timeout=self.options.timeout_s)


# A native runner's peak memory, seen from outside: the shell polls the runner's /proc entry (VmHWM, the peak
# resident set; Pss from smaps_rollup, what Android's dumpsys meminfo reports) until it exits, then prints one line.
# Polled every 0.1 s, so a process shorter than that may show less than its peak (a lower bound, never more).
MEMORY_MARKER = "MOBILELWT_MEMORY"
_WATCH = (
    '{command} & pid=$!; hwm=0; pss=0; n=0; while kill -0 "$pid" 2>/dev/null; do n=$((n+1)); '
    "v=$(sed -n 's/^VmHWM:[^0-9]*\\([0-9]*\\).*/\\1/p' /proc/$pid/status 2>/dev/null); "
    '[ -n "$v" ] && hwm=$v; '
    "v=$(sed -n 's/^Pss:[^0-9]*\\([0-9]*\\).*/\\1/p' /proc/$pid/smaps_rollup 2>/dev/null); "
    '[ -n "$v" ] && [ "$v" -gt "$pss" ] && pss=$v; sleep 0.1; done; wait "$pid"; rc=$?; '
    'echo "{marker} vmhwm_kb=$hwm pss_kb=$pss polls=$n"; exit $rc'
)


def watched(command: str) -> str:
    """``command`` (one simple command, already quoted) run in the background under the memory watch; the exit
    status is the runner's. It must be a simple command so that ``$!`` is the runner itself, not a subshell
    (``taskset`` execs the runner, keeping the pid): the caller changes directory before, not in it."""
    return _WATCH.format(command=command, marker=MEMORY_MARKER)


def parse_memory(output: str) -> dict[str, Any]:
    """The watch's line -> peak_rss_mb / pss_mb; absent when the runner ended before the second poll (the first
    one reads the process as it starts, before the model is loaded)."""
    match = re.search(MEMORY_MARKER + r" vmhwm_kb=(\d+) pss_kb=(\d+) polls=(\d+)", output)
    if not match or int(match.group(3)) < 2:  # one poll only: taken as the runner started, before the model
        return {}
    hwm, pss = (int(v) / 1024.0 for v in match.groups()[:2])
    memory: dict[str, Any] = {"memory_source": "native runner, /proc polled every 0.1 s"}
    if hwm > 0:
        memory["peak_rss_mb"] = memory["model_rss_mb"] = hwm  # a native runner carries no interpreter baseline
    if pss > 0:
        memory["pss_mb"] = pss
    return memory if len(memory) > 1 else {}
