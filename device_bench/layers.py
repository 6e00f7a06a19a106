"""Per-layer latency on a host runtime: each replaced teacher layer against its replacement, lowered alone.

Whole-network timings say whether a student is fast; this says *where* the time went, layer by layer, next to the
MAC ratio of each replacement (a low-rank conv that realises little of its MAC cut shows up here).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from device_bench.protocol import TimingPolicy, measure_runners
from mobilelwt.builddir import LAYER_LATENCY
from mobilelwt.io import write_json
from mobilelwt.loading import load_build
from targets import host_runner


def layer_inputs(model: nn.Module, names: list[str], input_size: int) -> dict[str, tuple[int, ...]]:
    """The input shape each named layer sees in a batch-1 forward pass."""
    shapes: dict[str, tuple[int, ...]] = {}

    def recorder(name: str):
        def hook(_module: nn.Module, inputs: tuple[torch.Tensor, ...], _output: torch.Tensor) -> None:
            shapes.setdefault(name, tuple(inputs[0].shape))  # returns None: the output is left alone

        return hook

    handles = [model.get_submodule(name).register_forward_hook(recorder(name)) for name in names]
    try:
        with torch.no_grad():
            model.eval()(torch.zeros(1, 3, input_size, input_size))
    finally:
        for handle in handles:
            handle.remove()
    return shapes


def layer_latency(
    build_dir: Path, *, runtime: str = "executorch", threads: int = 2, policy: TimingPolicy | None = None
) -> list[dict[str, Any]]:
    """Teacher layer vs replacement, timed by the protocol on ``runtime``; written to ``DIR/layer-latency.json``."""
    policy = policy or TimingPolicy()
    build = load_build(Path(build_dir))
    names = list(build.plan.layers)
    shapes = layer_inputs(build.teacher.model, names, build.plan.input_size)
    rows = []
    for name in names:
        x = torch.randn(shapes[name], generator=torch.Generator().manual_seed(0))
        runners = {
            "teacher": host_runner(runtime, build.teacher.model.get_submodule(name).eval(), (x,), threads),
            "student": host_runner(runtime, build.student.get_submodule(name).eval(), (x,), threads),
        }
        measured = measure_runners(runners, x, reference="teacher", policy=policy)
        teacher, student = measured["models"]["teacher"], measured["models"]["student"]
        choice = build.plan.layers[name]
        mac_ratio = choice.teacher_macs / choice.student_macs if choice.student_macs else float("nan")
        speedup = student["speedup"]
        rows.append(
            {
                "layer": name,
                "module": choice.module,
                **choice.params,
                "input": list(shapes[name]),
                "teacher_ms": teacher["median_ms"],
                "student_ms": student["median_ms"],
                "teacher_cv": teacher["cv"],
                "student_cv": student["cv"],
                "speedup": speedup,
                "speedup_ci95": student["speedup_ci95"],
                "converged": measured["converged"],
                "quiet": measured["load"]["quiet"],
                "mac_ratio": mac_ratio,
                "realised_ratio": speedup / mac_ratio,
            }
        )
    record = {"compress_key": build.key, "runtime": runtime, "threads": threads, "cache": policy.cache,
              "timing": policy.describe(), "layers": rows}  # fmt: skip
    write_json(Path(build_dir) / LAYER_LATENCY, record)
    return rows
