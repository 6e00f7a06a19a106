"""Per-operator profiles (ETDump + Inspector) and delegation coverage: what ran where, and how long."""

import torch
import torch.nn.functional as F
from torch import nn

from device_bench.profile import etdump_profile, summarize_events
from targets.build_export import delegation_coverage
from targets.executorch import ExecuTorchConfig, export


class HalfDelegated(nn.Module):
    """A conv XNNPACK takes, then one whose weights come from activations: XNNPACK cannot take that one."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv(x)
        return F.conv2d(y, y[:1, :8, :3, :3].expand(8, 8, 3, 3), padding=1).mean((2, 3))


def test_an_undelegated_convolution_is_flagged_at_export_and_in_the_profile(tmp_path) -> None:
    artifact = export(HalfDelegated().eval(), (torch.randn(1, 3, 16, 16),), tmp_path / "m.pte", ExecuTorchConfig())
    coverage = delegation_coverage(artifact.summary)
    assert coverage["delegate_calls"] >= 1 and coverage["undelegated_compute_ops"] == ["aten.convolution.default"]

    profile = etdump_profile(tmp_path / "m.pte", input_size=16, threads=1, runs=5)
    assert profile["runs"] == 5 and profile["execute_ms"] > 0 and profile["program_load_ms"] > 0
    where = {row["op"]: row["where"] for row in profile["ops"]}
    assert where["convolution"] == "portable" and any("Convolution (NHWC, F32)" in op for op in where)
    assert any(w == "delegate" for w in where.values())
    assert profile["undelegated_compute_ops"] == ["convolution"]
    assert sum(row["share"] for row in profile["ops"]) <= 1.05  # operators add up to at most the execute time


def test_events_are_grouped_per_operator_type() -> None:
    def event(name, avg, delegated, block="Execute"):
        return {"event_block_name": block, "event_name": name, "avg (ms)": avg, "p50 (ms)": avg,
                "raw": [avg, avg], "is_delegated_op": delegated}  # fmt: skip

    events = [
        event("Program::load_method", 2.0, False, "Default"),
        event("Method::init", 1.5, False, "Default"),
        event("Convolution (NHWC, F32) IGEMM #1", 0.5, True),
        event("Convolution (NHWC, F32) IGEMM #2", 0.25, True),
        event("DELEGATE_CALL", 0.8, False),
        event("native_call__adaptive_avg_pool2d.out", 0.1, False),
        event("OPERATOR_CALL", 0.12, False),
        event("Method::execute", 1.0, False),
    ]
    profile = summarize_events(events, runs=2)
    assert profile["program_load_ms"] == 2.0 and profile["method_init_ms"] == 1.5 and profile["execute_ms"] == 1.0
    conv, pool = profile["ops"]
    assert conv == {"op": "Convolution (NHWC, F32) IGEMM", "where": "delegate", "instances": 2,
                    "median_ms": 0.75, "mean_ms": 0.75, "share": 0.75}  # fmt: skip
    assert pool["op"] == "_adaptive_avg_pool2d" and pool["where"] == "portable"
    assert profile["undelegated_ops"] == ["_adaptive_avg_pool2d"] and profile["undelegated_compute_ops"] == []
    assert profile["delegate_calls_per_run"] == 1
