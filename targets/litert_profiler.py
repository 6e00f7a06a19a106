"""Per-operator profiles of ``.tflite`` files from LiteRT's own profiler, through its C API (``libLiteRt.so``).

The Python interpreter of ``ai-edge-litert`` has no profiler, and TFLite's ``benchmark_model`` cannot be installed
from the package registries. The wheel's ``libLiteRt.so`` can profile: a compiled model created with the runtime
option ``enable_profiling = true`` owns a profiler, and ``LiteRtGetProfileSummary`` prints TFLite's op-profiling
summary, the same ``ProfileSummarizer`` text that ``benchmark_model --enable_op_profiling=true`` prints. This module
drives that C API with ctypes (torch-free, so the device runner can use it too), and :func:`parse_op_profile` reads
the text, from here or from ``benchmark_model`` on a phone. The C API does not verify a model as it loads it (a cut
file crashes the process): :func:`profile_summary_apart` runs it in a process of its own.

    python targets/litert_profiler.py MODEL.tflite --runs 20 --out SUMMARY.txt

This module imports neither torch nor the rest of ``targets`` (whose adapters do): run as a script, as above, its
process starts in a fraction of a second.
"""

from __future__ import annotations

import ctypes
import re
from pathlib import Path
from typing import Any

from mobilelwt.errors import MobileLWTError


class ProfilerError(MobileLWTError):
    """LiteRT's profiler failed, or the text holds no profile."""


_CPU = 1  # kLiteRtHwAcceleratorCpu
_WRITE = 1  # kLiteRtTensorBufferLockModeWrite
_FLOAT32 = 1  # kLiteRtElementTypeFloat32


class _Layout(ctypes.Structure):
    # rank (7 bits) and has_strides (1 bit) share one unsigned int in litert_layout.h
    _fields_ = [("packed", ctypes.c_uint32), ("dimensions", ctypes.c_int32 * 8), ("strides", ctypes.c_uint32 * 8)]


class _RankedTensorType(ctypes.Structure):
    _fields_ = [("element_type", ctypes.c_int32), ("layout", _Layout)]


def _library() -> ctypes.CDLL:
    import importlib.util

    spec = importlib.util.find_spec("ai_edge_litert")
    if spec is None or not spec.submodule_search_locations:
        raise ProfilerError("ai-edge-litert is not installed: no LiteRT profiler.", "pip install ai-edge-litert")
    path = Path(next(iter(spec.submodule_search_locations))) / "libLiteRt.so"
    try:
        return ctypes.CDLL(str(path))
    except OSError as exc:
        raise ProfilerError(f"LiteRT's C library does not load ({exc}).", "Reinstall ai-edge-litert.") from None


class _Api:
    """The C functions used here, each checked: a non-zero LiteRtStatus raises naming the call."""

    def __init__(self) -> None:
        self.lib = _library()
        self.libc = ctypes.CDLL(None)
        self.libc.malloc.restype = ctypes.c_void_p
        self.libc.malloc.argtypes = [ctypes.c_size_t]
        self.libc.free.argtypes = [ctypes.c_void_p]

    def __call__(self, name: str, *args: Any) -> None:
        status = getattr(self.lib, name)(*args)
        if status != 0:
            raise ProfilerError(f"LiteRT's {name} failed (status {status}).", "Check the .tflite file.")


def profile_summary(path: Path, *, runs: int = 20) -> str:
    """Run ``path`` ``runs`` times on LiteRT's CPU path (XNNPACK, LiteRT's default threads: 2.3's C API takes the
    CPU thread count only through an options struct it does not publish) with profiling on; the summary text."""
    api = _Api()
    lib = api.lib
    handle = ctypes.c_void_p
    env, model, options, opaque, compiled, signature = (handle() for _ in range(6))
    api("LiteRtCreateEnvironment", ctypes.c_int(0), None, ctypes.byref(env))
    api("LiteRtCreateModelFromFile", env, str(path).encode(), ctypes.byref(model))
    api("LiteRtCreateOptions", ctypes.byref(options))
    api("LiteRtSetOptionsHardwareAccelerators", options, ctypes.c_int(_CPU))
    for identifier, toml in ((b"runtime_options_string", "enable_profiling = true\n"),):
        payload = _c_string(api, toml)  # owned by the options from here on: freed by their destructor
        free = ctypes.cast(api.libc.free, ctypes.c_void_p)
        api("LiteRtCreateOpaqueOptions", identifier, ctypes.c_void_p(payload), free, ctypes.byref(opaque))
        api("LiteRtAddOpaqueOptions", options, opaque)
    api("LiteRtCreateCompiledModel", env, model, options, ctypes.byref(compiled))
    api("LiteRtGetModelSignature", model, ctypes.c_size_t(0), ctypes.byref(signature))
    inputs = _buffers(api, env, model, compiled, signature, output=False)
    outputs = _buffers(api, env, model, compiled, signature, output=True)
    in_array = (handle * len(inputs))(*inputs)
    out_array = (handle * len(outputs))(*outputs)

    def run() -> None:
        api("LiteRtRunCompiledModel", compiled, ctypes.c_size_t(0), ctypes.c_size_t(len(inputs)), in_array,
            ctypes.c_size_t(len(outputs)), out_array)  # fmt: skip

    profiler = handle()
    api("LiteRtCompiledModelGetProfiler", compiled, ctypes.byref(profiler))
    if not profiler.value:
        raise ProfilerError("This LiteRT build made no profiler for the model.", "Use ai-edge-litert 2.3.")
    run()  # the first run (allocation, XNNPACK packing) is not what the profile is about
    api("LiteRtResetProfiler", profiler)
    api("LiteRtStartProfiler", profiler)
    for _ in range(runs):
        run()
    api("LiteRtStopProfiler", profiler)
    summary = ctypes.c_void_p()
    api("LiteRtGetProfileSummary", profiler, compiled, ctypes.byref(summary))
    text = ctypes.string_at(summary.value).decode(errors="replace") if summary.value else ""
    api.libc.free(summary)
    for buffer in (*inputs, *outputs):
        lib.LiteRtDestroyTensorBuffer(handle(buffer))
    lib.LiteRtDestroyCompiledModel(compiled)
    lib.LiteRtDestroyModel(model)
    lib.LiteRtDestroyEnvironment(env)
    return text


def _c_string(api: _Api, text: str) -> int:
    data = text.encode() + b"\0"
    address = api.libc.malloc(len(data))
    ctypes.memmove(address, data, len(data))
    return address


def _buffers(api: _Api, env: Any, model: Any, compiled: Any, signature: Any, *, output: bool) -> list[int]:
    """One host buffer per input (filled with ones) or output of signature 0, as the compiled model requires."""
    kind = "Output" if output else "Input"
    count = ctypes.c_size_t()
    api(f"LiteRtGetNumSignature{kind}s", signature, ctypes.byref(count))
    buffers = []
    for index in range(count.value):
        tensor, requirements, buffer = ctypes.c_void_p(), ctypes.c_void_p(), ctypes.c_void_p()
        tensor_type = _RankedTensorType()
        api(f"LiteRtGetSignature{kind}TensorByIndex", signature, ctypes.c_size_t(index), ctypes.byref(tensor))
        api("LiteRtGetRankedTensorType", tensor, ctypes.byref(tensor_type))
        api(f"LiteRtGetCompiledModel{kind}BufferRequirements", compiled, ctypes.c_size_t(0), ctypes.c_size_t(index),
            ctypes.byref(requirements))  # fmt: skip
        api("LiteRtCreateManagedTensorBufferFromRequirements", env, ctypes.byref(tensor_type), requirements,
            ctypes.byref(buffer))  # fmt: skip
        if not output and tensor_type.element_type == _FLOAT32:
            size, address = ctypes.c_size_t(), ctypes.c_void_p()
            api("LiteRtGetTensorBufferSize", buffer, ctypes.byref(size))
            api("LiteRtLockTensorBuffer", buffer, ctypes.byref(address), ctypes.c_int(_WRITE))
            ctypes.memmove(address, (ctypes.c_float * (size.value // 4))(*([1.0] * (size.value // 4))), size.value)
            api("LiteRtUnlockTensorBuffer", buffer)
        buffers.append(buffer.value)
    return buffers


_SECTION = re.compile(
    r"=+ (Run Order|Top by Computation Time|Top by Memory Use|Summary by node type|"
    r"Delegate Statistics) =+"
)
_COLUMNS = re.compile(r"\[([^\]]+)\]")
# builtin ops that do the arithmetic: outside the delegate they run on TFLite's own kernels
_COMPUTE = ("CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED", "BATCH_MATMUL", "TRANSPOSE_CONV", "CONV_3D")


def parse_op_profile(text: str, *, runs: int | None = None) -> dict[str, Any]:
    """TFLite's op-profiling summary (LiteRT's profiler here, or ``benchmark_model --enable_op_profiling`` on a
    phone) -> the profile record: every node of the "Run Order" table (type, name, avg ms per run, share), and one
    row per node type, ``delegate`` for XNNPACK's operators ("Delegate/Convolution (NHWC, F32) IGEMM") and
    ``builtin`` for TFLite kernels that ran outside the delegate."""
    rows = _table(text, "Run Order")
    if not rows:
        raise ProfilerError(
            "The op profile holds no 'Run Order' table: profiling was off or the run failed.",
            "Run benchmark_model with --enable_op_profiling=true (or check the .tflite file).",
        )
    nodes = [
        {"type": r["node type"], "name": r["Name"], "first_ms": float(r["first"]), "avg_ms": float(r["avg ms"]),
         "share": float(r["%"].rstrip("%")) / 100, "times_called": int(float(r["times called"])),
         "where": _where(r["node type"])}
        for r in rows
    ]  # fmt: skip
    total = sum(n["avg_ms"] for n in nodes)
    by_type: dict[str, dict[str, Any]] = {}
    for node in nodes:
        op = node["type"].removeprefix("Delegate/")
        row = by_type.setdefault(op, {"op": op, "where": node["where"], "instances": 0, "median_ms": 0.0,
                                      "mean_ms": 0.0})  # fmt: skip
        row["instances"] += 1
        row["mean_ms"] += node["avg_ms"]
        row["median_ms"] += node["avg_ms"]  # the summary gives each node's average only
    ops = sorted(by_type.values(), key=lambda r: -r["mean_ms"])
    for row in ops:
        row["share"] = row["mean_ms"] / total if total else None
    outside = [r["op"] for r in ops if r["where"] == "builtin"]
    return {
        "runs": runs,
        "execute_ms": total,
        "delegate_calls_per_run": _partitions(nodes),
        "nodes": nodes,
        "ops": ops,
        "undelegated_ops": outside,
        "undelegated_compute_ops": [op for op in outside if op.upper() in _COMPUTE],
        "statistic": "mean of each node over the profiled runs (TFLite's summary has no median)",
    }


def _partitions(nodes: list[dict[str, Any]]) -> int:
    """Delegate partitions run per inference: stretches of delegate nodes in run order, split by builtin ones."""
    return sum(
        1 for i, n in enumerate(nodes) if n["where"] == "delegate" and (i == 0 or nodes[i - 1]["where"] != "delegate")
    )


def _where(node_type: str) -> str:
    # "Delegate/..." are XNNPACK's own operators; a delegate node profiled as a whole is TfLiteXNNPackDelegate
    return "delegate" if node_type.startswith("Delegate/") or "Delegate" in node_type.split()[0] else "builtin"


def _table(text: str, section: str) -> list[dict[str, str]]:
    """The rows of one section of the summary, keyed by its own column headings (versions differ: newer
    summaries add ``[start]``); node types hold spaces, so cells are taken from the right."""
    rows: list[dict[str, str]] = []
    columns: list[str] | None = None
    inside = False
    for line in text.splitlines():
        heading = _SECTION.search(line)
        if heading:
            if inside:
                break
            inside, columns = heading.group(1) == section, None
            continue
        if not inside or not line.strip():
            continue
        if columns is None:
            columns = _COLUMNS.findall(line)
            continue
        tokens = line.split()
        numbers = len(columns) - 2  # all but the node type (first) and the name (last)
        if len(tokens) < numbers + 2:
            continue
        cells = tokens[-1 - numbers : -1]
        rows.append({columns[0]: " ".join(tokens[: -1 - numbers]), **dict(zip(columns[1:-1], cells, strict=True)),
                     columns[-1]: tokens[-1]})  # fmt: skip
    return rows


def profile_summary_apart(path: Path, *, runs: int = 20, timeout: float = 1800) -> str:
    """:func:`profile_summary` in a Python process of its own: a crash there fails this profile only."""
    import subprocess
    import sys
    import tempfile

    from mobilelwt.children import child_env

    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "summary.txt"
        # run as a file, not with -m: importing the targets package would import torch (seconds per profile)
        argv = [sys.executable, str(Path(__file__).resolve()), str(path), "--runs", str(runs), "--out", str(out)]
        try:
            proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, env=child_env())
        except subprocess.TimeoutExpired:
            raise ProfilerError(
                f"LiteRT's profiler took over {timeout:.0f} s on {path.name}.", "Use fewer runs."
            ) from None
        if proc.returncode != 0 or not out.is_file():
            cause = f"signal {-proc.returncode}" if proc.returncode < 0 else f"exit {proc.returncode}"
            errors = [line for line in proc.stderr.splitlines() if "ERROR" in line or "error:" in line]
            tail = (errors or proc.stderr.strip().splitlines() or ["no output"])[-1][:300]
            raise ProfilerError(
                f"LiteRT's profiler failed on {path.name} ({cause}): {tail}",
                "Re-export the file (`mobilelwt export`), then run `bench --profile` again.",
            )
        return out.read_text()


def delegation(profile: dict[str, Any], model_ops: dict[str, int]) -> dict[str, Any]:
    """What XNNPACK took of a .tflite, from one profiled run: partitions, the TFLite ops left to builtin kernels
    (by type), how many of the model's ops that leaves delegated, and which builtins carry compute."""
    builtin: dict[str, int] = {}
    for node in profile["nodes"]:
        if node["where"] == "builtin":
            builtin[node["type"]] = builtin.get(node["type"], 0) + 1
    delegated = {op: count - builtin.get(op, 0) for op, count in model_ops.items() if count - builtin.get(op, 0) > 0}
    return {
        "delegate_calls": profile["delegate_calls_per_run"],
        "delegated_ops": delegated,
        "builtin_ops": builtin,
        "undelegated_compute_ops": sorted(op for op in builtin if op.upper() in _COMPUTE),
    }


def main(argv: list[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(description="Profile a .tflite with LiteRT's profiler; write its summary.")
    parser.add_argument("model", type=Path)
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    text = profile_summary(args.model, runs=args.runs)
    partial = args.out.with_name(args.out.name + ".partial")
    partial.write_text(text)
    partial.replace(args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
