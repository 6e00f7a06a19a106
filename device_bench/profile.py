"""Per-operator profiles of ExecuTorch programs on the host: ETDump events read back with the devtools Inspector.

Each XNNPACK operator inside a delegate call is an event ("Convolution (NHWC, F32) IGEMM #3"), so the profile
shows where the time goes *and* what ran outside the delegate on the portable kernels (the usual reason for an
ExecuTorch model that is several times slower than it should be).
"""

from __future__ import annotations

import re
import statistics
import tempfile
import threading
from pathlib import Path
from typing import Any

import torch

from device_bench.parsers import RunnerOutputError
from device_bench.runner import write_op_profile
from mobilelwt.builddir import OP_PROFILE, BuildDir
from mobilelwt.errors import MobileLWTError
from mobilelwt.io import write_json
from mobilelwt.loading import load_build
from targets._common import is_compute_op
from targets.formats import by_runtime
from targets.litert_profiler import ProfilerError, parse_op_profile, profile_summary_apart

# Inspector's framework events: not operators
_FRAMEWORK = {"Method::init", "Program::load_method", "Method::execute", "DELEGATE_CALL", "OPERATOR_CALL"}


def profiled(artifact: dict[str, Any]) -> bool:
    """The files an operator profile exists for: ExecuTorch programs lowered to XNNPACK, and LiteRT files."""
    return artifact["runtime"] == "litert" or (
        artifact["runtime"] == "executorch" and artifact.get("backend") == "xnnpack"
    )


def etdump_profile(
    path: Path,
    *,
    input_size: int,
    threads: int = 2,
    runs: int = 20,
    etrecord: Path | None = None,
    layers: tuple[str, ...] = (),
) -> dict[str, Any]:
    """Run ``path`` ``runs`` times with ETDump on and summarise the events: load/init time, execute time, and
    one row per operator (where it ran, calls, median and mean ms, share of the execute time). With the program's
    ``etrecord`` also the time of each layer in the network (:func:`layer_times`; ``layers``: the names to
    report, e.g. a plan's, each covering its sub-modules)."""
    with tempfile.TemporaryDirectory() as tmp:
        etdump = Path(tmp) / "profile.etdp"
        write_op_profile(Path(path), "executorch", etdump, runs=runs, threads=threads, input_size=input_size)
        return summarize_etdump(etdump, runs=runs, etrecord=etrecord, layers=layers)


def summarize_etdump(
    etdump: Path, *, runs: int, etrecord: Path | None = None, layers: tuple[str, ...] = ()
) -> dict[str, Any]:
    """The profile record of an ETDump file, wherever it was written: by this host's runtime, or by
    ``executor_runner`` (or the Python runner) on a phone and pulled back."""
    from executorch.devtools import Inspector

    try:
        inspector = Inspector(etdump_path=str(etdump), etrecord=str(etrecord) if etrecord else None,
                              enable_module_hierarchy=etrecord is not None)  # fmt: skip
        frame = inspector.to_dataframe()
    except Exception as exc:  # Inspector raises bare Exceptions/ValueErrors on files it cannot read
        raise RunnerOutputError(
            f"{etdump} is not an ETDump the devtools Inspector can read ({type(exc).__name__}: {exc}).",
            "Use an executor_runner built with the event tracer (-DEXECUTORCH_ENABLE_EVENT_TRACER=ON).",
        ) from None
    result = summarize_events(frame.to_dict("records"), runs=runs)
    if etrecord is not None:
        result["layers"] = layer_times(event_rows(inspector), layers)
    return result


# XNNPACK operator names -> the ATen ops of the graph they come from (ReLU and the like are fused, not listed)
_XNN_FAMILIES = (
    ("Convolution", ("convolution",)),
    ("Deconvolution", ("convolution",)),
    ("Fully Connected", ("linear", "addmm", "mm")),
    ("Max Pooling", ("max_pool2d", "max_pool2d_with_indices")),
    ("Average Pooling", ("avg_pool2d", "mean", "adaptive_avg_pool2d")),
    ("Global Average Pooling", ("avg_pool2d", "mean", "adaptive_avg_pool2d")),
    ("Add", ("add",)),
    ("Multiply", ("mul",)),
)


def event_rows(inspector: Any) -> list[dict[str, Any]]:
    """The Execute events of an Inspector (with an ETRecord) as plain rows: name, delegated, per-run median ms,
    and for delegate calls and portable ops the graph nodes they stand for (ATen op, module path)."""
    rows = []
    for block in inspector.event_blocks:
        if block.name != "Execute":
            continue
        for event in block.events:
            # one entry per graph node, keyed by node name, in the order of op_types
            hierarchy = event.module_hierarchy if isinstance(event.module_hierarchy, dict) else {}
            modules = [list(levels.values())[-1][0] if levels else "" for levels in hierarchy.values()]
            raw = list(getattr(event.perf_data, "raw", None) or [])
            rows.append({"name": str(event.name), "delegated": bool(event.is_delegated_op),
                         "ms": statistics.median(raw) if raw else 0.0, "op_types": list(event.op_types or []),
                         "modules": modules})  # fmt: skip
    return rows


def layer_times(rows: list[dict[str, Any]], layers: tuple[str, ...] = ()) -> dict[str, Any]:
    """Per-run ms of each layer inside the whole network, from ETDump rows (separate so it is tested on fixed rows).

    A delegate call's XNNPACK operators come just before its DELEGATE_CALL event, in graph order; each compute one
    is matched, in order, to the next graph node of its kind in that call (a convolution to ``aten.convolution``,
    a fully connected to ``aten.linear``), whose module path names the layer; layout operators (transposes,
    reshapes) are counted apart. A module path is reported under the longest of ``layers`` that covers it."""
    by_layer: dict[str, dict[str, Any]] = {}
    layout_ms = unmapped_ms = total_ms = 0.0
    pending: list[dict[str, Any]] = []

    def add(module: str, op: str, ms: float) -> None:
        name = max((n for n in layers if module == n or module.startswith(n + ".")), key=len, default=module)
        row = by_layer.setdefault(name or "(model)", {"layer": name or "(model)", "ms": 0.0, "ops": []})
        row["ms"] += ms
        row["ops"].append(op)

    for row in rows:
        name = row["name"]
        if row["delegated"]:
            pending.append(row)
            continue
        if name == "DELEGATE_CALL":
            nodes = [(str(t).split(".")[1] if "." in str(t) else str(t), m)
                     for t, m in zip(row["op_types"], row["modules"], strict=False)]  # fmt: skip
            for op in pending:
                total_ms += op["ms"]
                kinds = next((k for prefix, k in _XNN_FAMILIES if op["name"].startswith(prefix)), None)
                if kinds is None:
                    layout_ms += op["ms"]
                    continue
                match = next((i for i, (aten, _) in enumerate(nodes) if aten in kinds), None)
                if match is None:
                    unmapped_ms += op["ms"]
                    continue
                add(nodes.pop(match)[1], re.sub(r"\s+#\d+$", "", op["name"]), op["ms"])
            pending = []
        elif name not in _FRAMEWORK and row["modules"]:
            total_ms += row["ms"]
            add(row["modules"][0], re.sub(r"^native_call_", "", name).removesuffix(".out"), row["ms"])
    mapped = sum(r["ms"] for r in by_layer.values())
    return {
        "rows": list(by_layer.values()),  # in execution order
        "layout_ms": layout_ms,
        "unmapped_ms": unmapped_ms,
        "mapped_share": mapped / total_ms if total_ms else None,
    }


def summarize_events(events: list[dict[str, Any]], *, runs: int) -> dict[str, Any]:
    """Inspector rows -> the profile record (separate so it is tested on fixed rows)."""
    by_name = {e["event_name"]: e for e in events}

    def ms(name: str) -> float | None:
        event = by_name.get(name)
        return float(event["avg (ms)"]) if event is not None else None

    execute_ms = ms("Method::execute")
    ops: dict[str, dict[str, Any]] = {}
    for event in events:
        name = str(event["event_name"])
        if event.get("event_block_name") != "Execute" or name in _FRAMEWORK:
            continue
        delegated = bool(event.get("is_delegated_op"))
        op = re.sub(r"\s+#\d+$", "", name)  # one row per operator type: "... IGEMM #3" -> "... IGEMM"
        if not delegated:
            op = re.sub(r"^native_call_", "", op).removesuffix(".out")
        raw = [float(x) for x in event.get("raw") or []]
        per_run = statistics.median(raw) if raw else float(event["p50 (ms)"])
        row = ops.setdefault(op, {"op": op, "where": "delegate" if delegated else "portable", "instances": 0,
                                  "median_ms": 0.0, "mean_ms": 0.0})  # fmt: skip
        row["instances"] += 1
        row["median_ms"] += per_run
        row["mean_ms"] += float(event["avg (ms)"])
    rows = sorted(ops.values(), key=lambda r: -r["mean_ms"])
    for row in rows:
        row["share"] = row["mean_ms"] / execute_ms if execute_ms else None
    undelegated = [r["op"] for r in rows if r["where"] == "portable"]
    return {
        "runs": runs,
        "program_load_ms": ms("Program::load_method"),
        "method_init_ms": ms("Method::init"),
        "execute_ms": execute_ms,
        "delegate_calls_per_run": _count(events, "DELEGATE_CALL"),
        "ops": rows,
        "undelegated_ops": undelegated,
        "undelegated_compute_ops": [op for op in undelegated if is_compute_op(op)],
    }


def _count(events: list[dict[str, Any]], name: str) -> int:
    """How many times ``name`` ran per execution (Inspector keeps one row per event instance)."""
    return sum(1 for e in events if e["event_name"] == name)


def profile_build(build_dir: Path, *, threads: int = 2, runs: int = 20) -> dict[str, Any]:
    """Per-operator profiles of every validated ExecuTorch (XNNPACK, ETDump) and LiteRT (its profiler) artifact
    of a build on this host: ``DIR/op-profile.json``."""
    directory = BuildDir(build_dir)
    listing = directory.artifacts()
    profiles = {}
    with tempfile.TemporaryDirectory() as tmp:
        maps = LayerMaps(build_dir, Path(tmp))
        for artifact in listing["artifacts"]:
            if artifact.get("status") != "ok" or not profiled(artifact):
                continue
            sha = artifact["sha256"]
            if artifact["runtime"] == "litert":
                profile = _litert(directory / artifact["path"], runs)
                profiles[artifact["path"]] = {"sha256": sha, "role": artifact["role"], "runtime": "litert",
                                              "threads": "LiteRT default", **profile}  # fmt: skip
                continue
            profile = etdump_profile(directory / artifact["path"], input_size=artifact["input_size"], threads=threads,
                                     runs=runs, etrecord=maps.etrecord(artifact), layers=maps.layers)  # fmt: skip
            profiles[artifact["path"]] = {"sha256": sha, "role": artifact["role"], "runtime": "executorch",
                                          "threads": threads, **profile}  # fmt: skip
    record = {"compress_key": listing.get("compress_key"), "device": "host", "artifacts": profiles}
    write_json(directory / OP_PROFILE, record)
    return record


def _litert(path: Path, runs: int) -> dict[str, Any]:
    """LiteRT's profile of one file, or why there is none (its profiler runs in a process of its own)."""
    try:
        return parse_op_profile(profile_summary_apart(path, runs=runs), runs=runs)
    except ProfilerError as exc:
        return {"error": str(exc)}


class LayerMaps:
    """What maps a build's ExecuTorch operators back to its layers: the plan's layer names, and the ETRecord of
    each program (by its bytes: the ios and android fp32 files are often the same), made once in ``workdir`` and
    shared by the threads that bench several phones."""

    def __init__(self, build_dir: Path, workdir: Path) -> None:
        directory = BuildDir(build_dir)
        self.layers = tuple(directory.plan().layers) if directory.is_compressed() else ()
        self._models, self._workdir = _BuildModels(build_dir), workdir
        self._etrecords: dict[str, Path | None] = {}
        self._lock = threading.Lock()

    def etrecord(self, artifact: dict[str, Any]) -> Path | None:
        with self._lock:
            sha = artifact["sha256"]
            if sha not in self._etrecords:
                path = self._workdir / f"{len(self._etrecords)}.etrecord"
                self._etrecords[sha] = _etrecord_for(self._models, artifact, path)
            return self._etrecords[sha]


class _BuildModels:
    """A build's teacher and student, loaded on first use and once (None when the build cannot be loaded)."""

    def __init__(self, build_dir: Path) -> None:
        self.build_dir, self._build, self._loaded = build_dir, None, False

    def get(self, role: str) -> Any:
        if not self._loaded:
            self._loaded = True
            try:
                self._build = load_build(self.build_dir)
            except MobileLWTError:
                self._build = None
        if self._build is None:
            return None
        return self._build.teacher.model if role == "teacher" else self._build.student


def _etrecord_for(models: _BuildModels, artifact: dict[str, Any], path: Path) -> Path | None:
    """The ETRecord of an fp32 artifact, made by lowering its model again: used only when that gives the very bytes
    of the artifact (then the debug handles are the artifact's); None otherwise (int8, another backend, a build
    whose models cannot be loaded)."""
    if artifact.get("precision") != "fp32" or artifact.get("role") not in ("teacher", "student"):
        return None
    model = models.get(artifact["role"])
    if model is None:
        return None
    size = artifact["input_size"]
    return by_runtime(artifact["runtime"]).module.layer_record(
        model, (torch.zeros(1, 3, size, size),), path, expected_sha256=artifact.get("sha256", "")
    )
