"""Per-operator profiles (ETDump + Inspector) and delegation coverage: what ran where, and how long."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from device_bench.profile import etdump_profile, summarize_events
from targets.executorch import ExecuTorchConfig, delegation, export


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
    coverage = delegation(tmp_path / "m.pte", artifact.summary)
    assert coverage["delegate_calls"] >= 1 and coverage["undelegated_compute_ops"] == ["aten.convolution.default"]
    assert coverage["outside_kernels"] == "portable kernels"

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


def test_operators_are_mapped_to_the_layers_of_the_network_in_graph_order() -> None:
    from device_bench.profile import layer_times

    def op(name, ms):
        return {"name": name, "delegated": True, "ms": ms, "op_types": [], "modules": []}

    rows = [
        op("Transpose (ND, X32) #1", 0.01),
        op("Convolution (NHWC, F32) IGEMM #1", 0.5),
        op("Convolution (NHWC, F32) IGEMM #2", 0.2),
        op("Convolution (NHWC, F32) IGEMM #3", 0.3),
        op("Max Pooling (NHWC, F32) #1", 0.05),
        {"name": "DELEGATE_CALL", "delegated": False, "ms": 1.1,
         "op_types": ["aten.convolution.default", "aten.relu.default", "aten.convolution.default",
                      "aten.convolution.default", "aten.max_pool2d.default"],
         "modules": ["features.0", "features.1", "features.3.vertical", "features.3.horizontal", "features.5"]},
        {"name": "native_call__adaptive_avg_pool2d.out", "delegated": False, "ms": 0.1,
         "op_types": ["aten._adaptive_avg_pool2d.default"], "modules": ["avgpool"]},
        {"name": "OPERATOR_CALL", "delegated": False, "ms": 0.1, "op_types": [], "modules": []},
        op("Fully Connected (NC, F32) GEMM #1", 2.0),
        op("Fully Connected (NC, F32) GEMM #2", 9.0),  # more operators than nodes: counted as unmapped
        {"name": "DELEGATE_CALL", "delegated": False, "ms": 2.1, "op_types": ["aten.view_copy.default",
         "aten.linear.default"], "modules": ["", "classifier.1"]},
    ]  # fmt: skip
    result = layer_times(rows, layers=("features.3", "classifier.1"))
    by_layer = {r["layer"]: r for r in result["rows"]}
    assert list(by_layer) == ["features.0", "features.3", "features.5", "avgpool", "classifier.1"]
    assert by_layer["features.3"]["ms"] == 0.5 and len(by_layer["features.3"]["ops"]) == 2  # both factors
    assert by_layer["features.0"]["ops"] == ["Convolution (NHWC, F32) IGEMM"]
    assert by_layer["avgpool"]["ops"] == ["_adaptive_avg_pool2d"]
    assert result["layout_ms"] == 0.01 and result["unmapped_ms"] == 9.0
    assert result["mapped_share"] == (0.5 + 0.5 + 0.05 + 0.1 + 2.0) / (0.01 + 1.05 + 0.1 + 11.0)


def test_a_damaged_tflite_fails_its_profile_in_a_process_of_its_own(tmp_path) -> None:
    # LiteRT's C API does not verify a model while loading it (a cut file crashes it): the bench must survive
    from targets.litert_profiler import ProfilerError, profile_summary_apart

    damaged = tmp_path / "cut.tflite"
    damaged.write_bytes(b"\x1c\x00\x00\x00TFL3" + bytes(range(256)) * 20)
    with pytest.raises(ProfilerError, match="LiteRT's profiler failed on cut.tflite") as failure:
        profile_summary_apart(damaged, runs=2)
    assert "Re-export" in failure.value.fix


def test_an_undelegated_convolution_in_a_tflite_is_flagged_from_litert_profiler(tmp_path) -> None:
    # the same model through litert-torch: XNNPACK takes the first conv, the one with computed weights runs on
    # TFLite's builtin CONV_2D kernel, which only LiteRT's profiler can tell (the op list shows both alike)
    from targets import tflite
    from targets.litert_profiler import parse_op_profile, profile_summary_apart

    artifact = tflite.export(HalfDelegated().eval(), (torch.randn(1, 3, 16, 16),), tmp_path / "m.tflite")
    coverage = tflite.delegation(tmp_path / "m.tflite", artifact.summary)
    assert coverage["delegated_ops"]["CONV_2D"] == 1 and coverage["builtin_ops"]["CONV_2D"] == 1
    assert coverage["undelegated_compute_ops"] == ["CONV_2D"] and coverage["delegate_calls"] >= 1
    profile = parse_op_profile(profile_summary_apart(tmp_path / "m.tflite", runs=3), runs=3)
    where = {row["op"]: row["where"] for row in profile["ops"]}
    assert where["CONV_2D"] == "builtin" and any(op.startswith("Convolution") for op in where)
    assert profile["undelegated_compute_ops"] == ["CONV_2D"] and profile["execute_ms"] > 0
