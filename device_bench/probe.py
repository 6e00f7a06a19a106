"""Latency probes for planning: time modules on the target (this host's runtimes, or a phone over adb).

A probe answers the two questions a latency planner asks, always from interleaved measurements with an interval:

- :meth:`time_modules`: each module (a teacher layer and its candidate replacements, lowered alone) on one input,
  interleaved with the reference, with its speedup over the reference and that speedup's 95 % interval;
- :meth:`compare`: a teacher and a student, interleaved and repeated until the interval of the speedup is narrow
  enough to decide whether it meets a target.

Both go through the one timing protocol (:mod:`device_bench.protocol`) in the cache state the probe was made for,
which is part of the table's context: a table timed warm never serves a cold plan.

``facts`` names the machine (CPU or phone model) and ``context`` the runtime, precision and threads: together they
key the latency tables the planner keeps, so a table measured on one device is never taken for another's.
"""

from __future__ import annotations

import contextlib
import itertools
import tempfile
from collections import OrderedDict
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch
from torch import nn

from device_bench.android import DeviceOptions, DeviceRun, device_facts, push_cached
from device_bench.bench import host_facts
from device_bench.load import LoadMeter, NoLoadMeter
from device_bench.protocol import PROTOCOL_RULES, TimingPolicy, host_batches, measure_ratios
from device_bench.transport import AdbServer, AdbTransport, resolve_devices
from targets import RUNTIMES, export_file, host_runner
from targets._common import TargetError
from targets.formats import by_runtime

TABLE_CAP_S = 10.0  # seconds at most per table entry (one layer and its candidates)
# lowered programs a host probe keeps: the teacher of a plan's rounds (and of a frontier's rungs) is lowered once,
# and a plan timed again is not lowered again; a few, because an AlexNet program holds its weights (~230 MB)
LOWERED_KEPT = 3
# the reference's batches a probe remembers per program, which the machine's speed is judged over in its next
# timing of that program: enough to outvote a stretch at another speed, few enough that a lasting change of the
# machine takes over within about one capped timing
HISTORY_KEPT = 60

# the facts that say which hardware a table was measured on (the serial is not one: a phone of the same model is
# the same hardware)
IDENTITY = ("device", "cpu", "cpu_count", "machine", "manufacturer", "model", "soc", "board", "abi", "sdk")


def _calibration(shape: tuple[int, ...], count: int = 8) -> torch.Tensor:
    """Inputs that calibrate int8 for timing: values do not change an op's latency, shapes do."""
    return torch.randn(count, *shape[1:], generator=torch.Generator().manual_seed(1))


def runtime_version(runtime: str) -> str | None:
    from importlib import metadata

    package = {"executorch": "executorch", "litert": "ai-edge-litert"}.get(runtime, runtime)
    with contextlib.suppress(metadata.PackageNotFoundError):
        return metadata.version(package)
    return None


class _Probe:
    """What host and phone probes share: the timing policy and the keys of their tables."""

    def __init__(
        self,
        runtime: str,
        *,
        precision: str = "fp32",
        threads: int = 2,
        policy: TimingPolicy | None = None,
    ) -> None:
        if runtime not in RUNTIMES:
            raise TargetError(f"Unknown runtime {runtime!r}.", f"Use one of: {', '.join(RUNTIMES)}.")
        if precision not in by_runtime(runtime).precisions:
            raise TargetError(
                f"{runtime} has no {precision} timing.", f"Use one of: {', '.join(by_runtime(runtime).precisions)}."
            )
        self.runtime, self.precision, self.threads = runtime, precision, threads
        self.policy = policy or TimingPolicy()
        # per reference program: its median per quiet batch in this probe's earlier timings (device_bench.protocol)
        # (the module is kept too: its id stays its own while the entry lives, as in HostProbe's lowered programs)
        self._history: OrderedDict[tuple[Any, ...], tuple[nn.Module, list[float]]] = OrderedDict()

    @property
    def cache(self) -> str:
        return self.policy.cache

    def context(self) -> dict[str, Any]:
        return {
            "runtime": self.runtime,
            "runtime_version": runtime_version(self.runtime),
            "precision": self.precision,
            "threads": self.threads,
            "cache": self.policy.cache,
            "timing_rules": PROTOCOL_RULES,  # a table timed by older rules is timed again
        }

    def identity(self) -> dict[str, Any]:
        facts = self.facts()
        return {k: facts[k] for k in IDENTITY if facts.get(k) is not None}

    def facts(self) -> dict[str, Any]:
        raise NotImplementedError

    def meter(self) -> LoadMeter:
        """What says whether the machine that runs the models was busy."""
        return LoadMeter()

    def _batches(self, modules: dict[str, nn.Module], input_shape: tuple[int, ...], *, kept: str | None = None):
        """A context manager giving ``batch() -> {name: ms samples}``, one interleaved round per call. ``kept``:
        the module whose lowered program may be reused from an earlier call (the others are lowered afresh)."""
        raise NotImplementedError

    def measure(
        self, modules: dict[str, nn.Module], input_shape: tuple[int, ...], *, reference: str,
        target: float | None = None,
    ) -> dict[str, Any]:  # fmt: skip
        """The protocol's record for ``modules`` lowered as export lowers them, timed interleaved. The reference
        (the teacher, the same in every round of a plan) may be a program lowered before; the others are lowered
        afresh, so that a confirming timing is independent of the first. The machine's speed is judged over the
        reference's batches in this probe's earlier timings too: a round timed wholly while the machine ran at
        another speed waits for the speed its neighbours were timed at (README, "Machine speed")."""
        key = (weights_fingerprint(modules[reference]), tuple(input_shape), self.policy.cache)
        _, history = self._history.pop(key, (None, []))
        with self._batches(modules, tuple(input_shape), kept=reference) as batch:
            record = measure_ratios(batch, reference=reference, policy=self.policy, target=target,
                                    meter=self.meter(), history=history)  # fmt: skip
        self._history[key] = (modules[reference], history[-HISTORY_KEPT:])
        while len(self._history) > LOWERED_KEPT:  # the programs a search times again are few: its teachers
            self._history.popitem(last=False)
        return record

    def time_modules(
        self, modules: dict[str, nn.Module], input_shape: tuple[int, ...], *, reference: str
    ) -> dict[str, dict[str, Any]]:
        """Every module lowered alone and timed interleaved on ``input_shape``; speedups are over ``reference``.
        Per module: median ms, CV, runs, speedup and interval, and how the measurement went."""
        # a table entry is a prediction the whole-student timings correct: it gets a shorter cap than they do
        policy = replace(self.policy, max_seconds=min(self.policy.max_seconds, TABLE_CAP_S))
        with self._batches(modules, tuple(input_shape)) as batch:
            record = measure_ratios(batch, reference=reference, policy=policy, meter=self.meter())
        how = {k: record[k] for k in ("cache", "converged", "stopped", "batches")}
        return {name: {**{k: v for k, v in model.items() if k != "samples_ms"}, **how, "quiet": record["load"]["quiet"]}
                for name, model in record["models"].items()}  # fmt: skip

    def compare(
        self, teacher: nn.Module, student: nn.Module, input_shape: tuple[int, ...], *, target: float | None = None
    ) -> dict[str, Any]:
        """Teacher vs student, interleaved until the speedup's interval is within the policy's width (or decides
        ``target``, or the cap is hit)."""
        record = self.measure({"teacher": teacher, "student": student}, input_shape, reference="teacher",
                              target=target)  # fmt: skip
        return compare_record(record)

    def layer(self, module: nn.Module, input_shape: tuple[int, ...]) -> float:
        """Median ms of one module alone (to say which layers hold the time; no comparison needed)."""
        with self._batches({"m": module}, tuple(input_shape)) as batch:
            samples: list[float] = []
            for _ in range(self.policy.min_batches):
                samples.extend(batch()["m"])
        return float(torch.tensor(samples).median())


def compare_record(record: dict[str, Any]) -> dict[str, Any]:
    """A teacher-vs-student protocol record in the shape the planners keep per round."""
    t, s = record["models"]["teacher"], record["models"]["student"]
    return {
        "teacher_ms": t["median_ms"],
        "student_ms": s["median_ms"],
        "speedup": s["speedup"],
        "speedup_ci95": s["speedup_ci95"],
        "runs": s["runs"],
        "cv": [t["cv"], s["cv"]],
        **{k: record[k] for k in ("cache", "batches", "quiet_batches", "seconds", "converged", "stopped", "load")},
        "state": record.get("state"),
    }


def weights_fingerprint(module: nn.Module) -> tuple[Any, ...]:
    """Which module, holding which tensors in which state: any in-place change of a weight (an optimiser step, a
    load) bumps its version, and any surgery replaces a tensor, so an equal fingerprint means the same program."""
    tensors = itertools.chain(module.parameters(), module.buffers())
    return (id(module), tuple((t.data_ptr(), t._version, tuple(t.shape), t.dtype) for t in tensors))


class HostProbe(_Probe):
    """Models lowered in memory for a host runtime (ExecuTorch-XNNPACK, LiteRT) and timed in this process.

    Lowering takes seconds (about 3 s for a small CNN): the last few reference programs are kept, keyed by the
    module's weights, so the teacher is lowered once for all of a plan's rounds (and a search's rungs)."""

    def __init__(self, runtime: str, **options: Any) -> None:
        super().__init__(runtime, **options)
        self._lowered: OrderedDict[tuple[Any, ...], tuple[nn.Module, Any]] = OrderedDict()
        self.lowered_reused = 0

    def _runner(self, module: nn.Module, example: torch.Tensor, calibration: torch.Tensor | None, *, keep: bool) -> Any:
        key = (weights_fingerprint(module), tuple(example.shape)) if keep else None
        if key in self._lowered:
            self._lowered.move_to_end(key)
            self.lowered_reused += 1
            return self._lowered[key][1]
        runner = host_runner(self.runtime, module, (example,), self.threads, precision=self.precision,
                             calibration=calibration)  # fmt: skip
        if key is not None:
            self._lowered[key] = (module, runner)  # the module too: its id stays its own while the entry lives
            while len(self._lowered) > LOWERED_KEPT:
                self._lowered.popitem(last=False)
        return runner

    def facts(self) -> dict[str, Any]:
        facts = host_facts(self.threads)
        return {k: facts[k] for k in ("device", "cpu", "cpu_count", "machine", "platform")}

    @property
    def description(self) -> str:
        return f"{self.runtime} {self.precision} host, {self.threads} threads"

    @contextlib.contextmanager
    def _batches(self, modules: dict[str, nn.Module], input_shape: tuple[int, ...], *, kept: str | None = None):
        example = torch.randn(*input_shape, generator=torch.Generator().manual_seed(0))
        calibration = _calibration(input_shape) if self.precision == "int8" else None
        runners = {name: self._runner(module.eval(), example, calibration, keep=name == kept)
                   for name, module in modules.items()}  # fmt: skip
        yield host_batches(runners, example, self.policy)


class AdbProbe(_Probe):
    """Models exported to files, pushed to a phone once (cached by hash) and timed there by the Python runner,
    interleaved in one process per batch of rounds."""

    def __init__(
        self,
        serial: str,
        runtime: str,
        *,
        adb: str | None = None,
        server: str = "local",
        python: str = "python3",
        timeout_s: float = 600.0,
        rounds_per_call: int = 2,
        per_round: int = 3,
        **kwargs: Any,
    ) -> None:
        super().__init__(runtime, **kwargs)
        servers = (AdbServer.parse(server),)
        [(found_server, found_serial)], _ = resolve_devices([serial], adb, servers)
        self.device = AdbTransport(found_serial, adb=adb, server=found_server)
        self.options = DeviceOptions(python=python, timeout_s=timeout_s)
        self.run = DeviceRun(self.device, self.options)
        self.run.check()
        self.rounds_per_call, self.per_round = rounds_per_call, per_round
        self._facts: dict[str, Any] | None = None

    def facts(self) -> dict[str, Any]:
        if self._facts is None:
            self._facts = {"device": "android", **device_facts(self.device)}
        return self._facts

    def meter(self) -> LoadMeter:
        return NoLoadMeter()  # this host's /proc says nothing of the phone's load

    @property
    def description(self) -> str:
        facts = self.facts()
        phone = " ".join(str(facts[k]) for k in ("manufacturer", "model") if facts.get(k)) or self.device.serial
        return f"{self.runtime} {self.precision} on {phone} ({self.device.name}), {self.threads} threads"

    @contextlib.contextmanager
    def _batches(self, modules: dict[str, nn.Module], input_shape: tuple[int, ...], *, kept: str | None = None):
        example = torch.randn(*input_shape, generator=torch.Generator().manual_seed(0))
        calibration = _calibration(input_shape) if self.precision == "int8" else None
        with tempfile.TemporaryDirectory(prefix="mobilelwt-probe-") as tmp:
            remote: dict[str, str] = {}
            for index, (name, module) in enumerate(modules.items()):
                ext = "pte" if self.runtime == "executorch" else "tflite"
                path = Path(tmp) / f"m{index}.{ext}"
                export_file(self.runtime, module.eval(), (example,), path, precision=self.precision,
                            calibration=calibration)  # fmt: skip
                remote[name] = push_cached(self.device, path, self.options.timeout_s)
            by_file = {Path(r).name: name for name, r in remote.items()}

            def batch() -> dict[str, list[float]]:
                got = self.run.interleaved(list(remote.values()), self.runtime, input_shape=input_shape,
                                           rounds=self.rounds_per_call, per_round=self.per_round,
                                           warmup=self.policy.warmup, threads=self.threads,
                                           cache=self.policy.cache)  # fmt: skip
                return {by_file[Path(k).name]: v for k, v in got.items()}

            yield batch


def make_probe(
    runtime: str,
    *,
    device: str = "host",
    precision: str = "fp32",
    threads: int = 2,
    adb: str | None = None,
    server: str = "local",
    python: str = "python3",
    policy: TimingPolicy | None = None,
) -> HostProbe | AdbProbe:
    """The probe for ``device``: ``host`` or an adb serial."""
    if device == "host":
        return HostProbe(runtime, precision=precision, threads=threads, policy=policy)
    return AdbProbe(device, runtime, adb=adb, server=server, python=python, precision=precision, threads=threads,
                    policy=policy)  # fmt: skip
