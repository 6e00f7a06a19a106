"""Per-layer latency tables: each teacher layer and each candidate replacement, lowered alone and timed on the target.

A table belongs to one device (its hardware facts) and one runtime context (runtime and its version, precision,
threads); its entries are keyed by the layer's geometry and input shape and by the candidate (module kind and
parameters), never by a model's layer names, so one table serves every build of any model on that device and can
be shared between machines as a file. A table measured on another device is refused unless the user asks for it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from torch import nn

from mobilelwt.builddir import read_json
from mobilelwt.errors import ConfigError
from mobilelwt.hashing import digest
from mobilelwt.io import write_json
from mobilelwt.progress import ProgressCallback, ignore_progress, notice

TABLE_FORMAT = "mobilelwt.latency-table/1"


class LatencyProbe(Protocol):
    """What a latency planner needs from a target (``device_bench.probe`` has the host and adb ones)."""

    description: str

    def facts(self) -> dict[str, Any]: ...

    def identity(self) -> dict[str, Any]: ...

    def context(self) -> dict[str, Any]: ...

    def time_modules(
        self, modules: dict[str, nn.Module], input_shape: tuple[int, ...], *, reference: str
    ) -> dict[str, dict[str, Any]]: ...

    def compare(
        self, teacher: nn.Module, student: nn.Module, input_shape: tuple[int, ...], *, target: float | None = None
    ) -> dict[str, Any]: ...

    def layer(self, module: nn.Module, input_shape: tuple[int, ...]) -> float: ...


def layer_signature(layer: nn.Module, input_shape: tuple[int, ...]) -> dict[str, Any]:
    """What a layer's latency depends on: its type, geometry and input shape (batch 1)."""
    signature: dict[str, Any] = {"type": type(layer).__name__, "input": [1, *input_shape]}
    if isinstance(layer, nn.Conv2d):
        signature.update(
            in_channels=layer.in_channels,
            out_channels=layer.out_channels,
            kernel=list(layer.kernel_size),
            stride=list(layer.stride),
            padding=list(layer.padding) if not isinstance(layer.padding, str) else layer.padding,
            dilation=list(layer.dilation),
            groups=layer.groups,
            bias=layer.bias is not None,
        )
    elif isinstance(layer, nn.Linear):
        signature.update(in_features=layer.in_features, out_features=layer.out_features, bias=layer.bias is not None)
    return signature


def entry_key(signature: dict[str, Any], module: str, params: dict[str, Any] | None = None) -> str:
    """The table key of ``module`` (``teacher`` for the layer itself) with ``params`` replacing that layer."""
    return digest({"layer": signature, "module": module, "params": params or {}})[:24]


def describe_device(identity: dict[str, Any]) -> str:
    if identity.get("device") == "host":
        return f"host {identity.get('cpu') or identity.get('machine')} ({identity.get('cpu_count')} cores)"
    parts = [identity.get(k) for k in ("manufacturer", "model") if identity.get(k)]
    soc = identity.get("soc") or identity.get("board")
    return " ".join(str(p) for p in parts) + (f" ({soc})" if soc else "") or "an unknown device"


def describe_context(context: dict[str, Any]) -> str:
    version = f" {context['runtime_version']}" if context.get("runtime_version") else ""
    return f"{context.get('runtime')}{version} {context.get('precision')}, {context.get('threads')} threads"


@dataclass
class LatencyTable:
    identity: dict[str, Any]
    context: dict[str, Any]
    facts: dict[str, Any] = field(default_factory=dict)
    entries: dict[str, dict[str, Any]] = field(default_factory=dict)

    @classmethod
    def for_probe(cls, probe: LatencyProbe) -> LatencyTable:
        return cls(identity=probe.identity(), context=probe.context(), facts=probe.facts())

    def to_dict(self) -> dict[str, Any]:
        return {"format": TABLE_FORMAT, "identity": self.identity, "context": self.context, "facts": self.facts,
                "entries": self.entries}  # fmt: skip

    @classmethod
    def load(cls, path: Path) -> LatencyTable:
        fix = "Remove it to measure a new table, or pass a table written by mobilelwt."
        data = read_json(Path(path), what="latency table", fix=fix, required=("format", "identity", "context"))
        if data["format"] != TABLE_FORMAT:
            raise ConfigError(f"{path} is not a {TABLE_FORMAT} latency table (format {data['format']!r}).", fix)
        entries = data.get("entries", {})
        if not isinstance(entries, dict) or not all(
            isinstance(e, dict) and isinstance(e.get("median_ms"), int | float) for e in entries.values()
        ):
            raise ConfigError(f"{path} has damaged entries (each needs a median_ms).", fix)
        return cls(data["identity"], data["context"], data.get("facts", {}), entries)

    def save(self, path: Path) -> Path:
        return write_json(Path(path), self.to_dict())

    def same_device(self, probe: LatencyProbe) -> bool:
        return self.identity == probe.identity()

    def same_context(self, probe: LatencyProbe) -> bool:
        return self.context == probe.context()


def open_table(
    probe: LatencyProbe,
    build_table: Path,
    shared: Path | None = None,
    *,
    allow_foreign: bool = False,
    on_progress: ProgressCallback = ignore_progress,
) -> tuple[LatencyTable, bool]:
    """The table to plan with, and whether it comes from another device.

    ``shared`` (``--latency-table FILE``) must time the same runtime context, and the same device unless
    ``allow_foreign``; the build's own cache (``build_table``) is reused only for the same device and context,
    otherwise a new table is started.
    """
    if shared is not None and Path(shared).is_file():
        table = LatencyTable.load(Path(shared))
        if not table.same_context(probe):
            raise ConfigError(
                f"Latency table {shared} times {describe_context(table.context)}; this plan needs "
                f"{describe_context(probe.context())}.",
                "Pass the matching --latency-runtime/--latency-precision/--latency-threads, or another table "
                "(a path that does not exist yet starts a new one there).",
            )
        if not table.same_device(probe):
            if not allow_foreign:
                raise ConfigError(
                    f"Latency table {shared} was measured on {describe_device(table.identity)}, not on "
                    f"{describe_device(probe.identity())} where this plan is timed.",
                    "Measure a table on this device (another --latency-table path, or none), or pass "
                    "--allow-foreign-table to plan from that device's table without timing on it.",
                )
            return table, True
        return table, False
    if build_table.is_file():
        try:
            table = LatencyTable.load(build_table)
        except ConfigError as exc:
            table = None  # a damaged cache is measured again, and the user is told
            notice(on_progress, f"{exc.problem} It is a cache: the latency table is measured again.")
        if table is not None and table.same_context(probe) and table.same_device(probe):
            return table, False
    return LatencyTable.for_probe(probe), False
