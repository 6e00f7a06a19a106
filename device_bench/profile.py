"""Per-operator profiles of ExecuTorch programs on the host: ETDump events read back with the devtools Inspector.

Each XNNPACK operator inside a delegate call is an event ("Convolution (NHWC, F32) IGEMM #3"), so the profile
shows where the time goes *and* what ran outside the delegate on the portable kernels (the usual reason for an
ExecuTorch model that is several times slower than it should be).
"""

from __future__ import annotations

import re
import statistics
import tempfile
from pathlib import Path
from typing import Any

from targets._common import is_compute_op

# Inspector's framework events: not operators
_FRAMEWORK = {"Method::init", "Program::load_method", "Method::execute", "DELEGATE_CALL", "OPERATOR_CALL"}


def etdump_profile(path: Path, *, input_size: int, threads: int = 2, runs: int = 20) -> dict[str, Any]:
    """Run ``path`` ``runs`` times with ETDump on and summarise the events: load/init time, execute time, and
    one row per operator (where it ran, calls, median and mean ms, share of the execute time)."""
    import torch
    from executorch.devtools import Inspector
    from executorch.runtime import Runtime

    from targets.executorch import set_threads

    set_threads(threads)
    program = Runtime.get().load_program(Path(path), enable_etdump=True, debug_buffer_size=0)
    method = program.load_method("forward")
    example = torch.randn(1, 3, input_size, input_size, generator=torch.Generator().manual_seed(0))
    for _ in range(runs):
        method.execute([example])
    with tempfile.TemporaryDirectory() as tmp:
        etdump = Path(tmp) / "profile.etdp"
        program.write_etdump_result_to_file(str(etdump), str(Path(tmp) / "debug.bin"))
        frame = Inspector(etdump_path=str(etdump)).to_dataframe()
    return summarize_events(frame.to_dict("records"), runs=runs)


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
    """Per-operator profiles of every validated ExecuTorch (XNNPACK) artifact of a build: ``DIR/op-profile.json``."""
    from mobilelwt.builddir import OP_PROFILE, BuildDir
    from mobilelwt.io import write_json

    directory = BuildDir(build_dir)
    listing = directory.artifacts()
    profiles = {}
    for artifact in listing["artifacts"]:
        if (
            artifact.get("status") != "ok"
            or artifact["runtime"] != "executorch"
            or artifact.get("backend") != "xnnpack"
        ):
            continue
        profile = etdump_profile(directory / artifact["path"], input_size=artifact["input_size"], threads=threads,
                                 runs=runs)  # fmt: skip
        profiles[artifact["path"]] = {"sha256": artifact["sha256"], "role": artifact["role"], "threads": threads,
                                      **profile}  # fmt: skip
    record = {"compress_key": listing.get("compress_key"), "runtime": "executorch host", "artifacts": profiles}
    write_json(directory / OP_PROFILE, record)
    return record
