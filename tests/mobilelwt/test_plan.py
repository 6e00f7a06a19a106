import json

import pytest
import torch

from mobilelwt.errors import ConfigError
from mobilelwt.modules import FactorizedLinear, LowRankSpatialConv
from mobilelwt.plan import Plan, apply_plan, default_candidates, trace
from mobilelwt.planners import PlanningContext, plan_sensitivity, plan_uniform
from mobilelwt.profile import count_macs
from mobilelwt.teachers import build_teacher, get_teacher_spec


def _context(name="alexnet", size=64, **kwargs) -> PlanningContext:
    teacher = build_teacher(name, num_classes=10, input_size=size)
    candidates = default_candidates(teacher.model, size, get_teacher_spec(name).head)
    return PlanningContext(name, teacher.model, size, 10, candidates, count_macs(teacher.model, size), **kwargs)


def test_trace_finds_layers_with_shapes() -> None:
    model = build_teacher("alexnet", num_classes=10, input_size=64).model
    layers = {c.name: c for c in trace(model, 64)}
    assert layers["features.3"].input_shape == (64, 7, 7) and layers["features.3"].output_shape == (192, 7, 7)
    assert layers["classifier.1"].input_shape == (9216,)
    names = [c.name for c in default_candidates(model, 64, "classifier.6")]
    assert "features.0" not in names and "classifier.6" not in names and "classifier.4" in names


@pytest.mark.parametrize("speedup", [2.0, 4.0])
def test_uniform_plan_meets_the_mac_target(speedup) -> None:
    ctx = _context()
    plan = plan_uniform(ctx, speedup)
    assert plan.mac_speedup >= speedup
    assert plan.mac_speedup < speedup * 1.15  # close to the target, not far beyond it
    student = apply_plan(ctx.model, plan, init=False)
    assert count_macs(student, 64) == plan.student_macs
    assert isinstance(student.get_submodule("features.3"), LowRankSpatialConv)
    assert isinstance(student.get_submodule("classifier.1"), FactorizedLinear)
    assert all(choice.params["rank"] % 8 == 0 for choice in plan.layers.values())


def test_impossible_target_is_a_clear_error() -> None:
    with pytest.raises(ConfigError, match="out of reach"):
        plan_uniform(_context(), 200.0)


def test_plan_json_round_trip_rebuilds_identical_student(tmp_path) -> None:
    ctx = _context("tinynet", 32, conv_module="bottleneck")
    plan = plan_uniform(ctx, 2.0)
    path = plan.save(tmp_path / "plan.json")
    again = Plan.load(path)
    assert again == plan
    assert json.loads(path.read_text())["format"] == "mobilelwt.plan/1"
    fresh = build_teacher("tinynet", num_classes=10, input_size=32).model  # a different teacher instance
    a, b = apply_plan(ctx.model, plan), apply_plan(fresh, again, init=False)
    assert str(a) == str(b)
    assert {k: v.shape for k, v in a.state_dict().items()} == {k: v.shape for k, v in b.state_dict().items()}


def test_plan_for_another_model_is_refused() -> None:
    plan = plan_uniform(_context(), 2.0)
    plan.layers["features.99"] = plan.layers["features.3"]
    with pytest.raises(ConfigError, match="features.99"):
        apply_plan(build_teacher("alexnet", num_classes=10, input_size=64).model, plan, init=False)


def test_sensitivity_plan_spends_budget_where_error_is_low() -> None:
    ctx = _context("tinynet", 32)
    torch.manual_seed(0)
    calibration = torch.randn(16, 3, 32, 32)
    plan = plan_sensitivity(ctx, 2.5, calibration, grid_points=6)
    assert plan.mac_speedup >= 2.5
    errors = plan.details["closed_form_errors"]
    assert set(errors) == {c.name for c in ctx.candidates}
    assert all(choice.notes["closed_form_error"] >= 0 for choice in plan.layers.values())

    # at the same MAC budget, the greedy allocation loses less (summed closed-form error) than the uniform one
    from mobilelwt.planners.sensitivity import capture_io, normalized_error

    io = capture_io(ctx.model, [c.name for c in ctx.candidates], calibration)

    def total_error(p) -> float:
        student = apply_plan(ctx.model, p)
        return sum(normalized_error(student.get_submodule(n)(io[n][0]), io[n][1]) for n in p.layers)

    uniform = plan_uniform(ctx, plan.mac_speedup)
    assert uniform.mac_speedup >= plan.mac_speedup * 0.97
    with torch.no_grad():
        assert total_error(plan) <= total_error(uniform)
