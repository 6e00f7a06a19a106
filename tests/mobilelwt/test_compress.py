import json

import pytest
import torch

from mobilelwt.compress import CompressConfig, compress, evaluate_build
from mobilelwt.data import load_data
from mobilelwt.distill import DistillConfig
from mobilelwt.errors import ConfigError, DataError
from mobilelwt.layerwise import LayerwiseConfig, layer_budgets, layer_io, train_layerwise
from mobilelwt.loading import load_build, load_student_model
from mobilelwt.plan import Plan, apply_plan
from mobilelwt.settings import RunSettings
from mobilelwt.teachers import build_teacher
from tests.conftest import write_image_folder


def _config(**overrides) -> CompressConfig:
    settings = dict(
        mac_speedup=3.0,
        layerwise=LayerwiseConfig(epochs=1.0, max_steps=60, eval_every=20),
        finetune=DistillConfig(epochs=1, max_steps_per_epoch=15),
    )
    settings.update(overrides)
    return CompressConfig(**settings)


@pytest.fixture(scope="module")
def build(tmp_path_factory, tiny_teacher):
    out = tmp_path_factory.mktemp("build")
    return compress("tinynet", out=out, weights=str(tiny_teacher), run=RunSettings(data="digits"), config=_config())


def test_compress_writes_the_build_directory(build) -> None:
    for name in ("plan.json", "student.pt", "metrics.json", "manifest.json"):
        assert (build.out / name).is_file()
    manifest = json.loads((build.out / "manifest.json").read_text())
    assert set(manifest["files"]) == {"plan.json", "student.pt", "metrics.json"}
    assert manifest["teacher"]["classes"] == [str(i) for i in range(10)]
    assert manifest["seeds"]["seed"] == 0 and manifest["environment"]["versions"]["torch"]


def test_layerwise_training_lowers_every_layers_error_and_keeps_accuracy(build) -> None:
    metrics = build.metrics
    assert metrics["mac_speedup"] >= 3.0
    for name, record in metrics["layers"].items():
        assert record["error_final"] < record["error_init"], name
    teacher, student = metrics["teacher"]["top1"], metrics["student"]["top1"]
    assert teacher > 80.0
    assert student >= teacher - 5.0
    assert metrics["student"]["layerwise"]["top1"] >= metrics["student"]["closed_form"]["top1"] - 1.0


def test_the_final_accuracy_is_the_saved_students_on_the_validation_split(build, tiny_teacher) -> None:
    from mobilelwt.compress import _accuracy
    from mobilelwt.loading import load_build_data

    data = load_build_data(load_build(build.out))
    again = _accuracy(load_student_model(build.out).eval(), data)  # measured anew, not the fine-tune's last epoch
    final = {k: build.metrics["student"][k] for k in ("top1", "top5", "images")}
    assert final == {k: again[k] for k in ("top1", "top5", "images")} and final["images"] > 0
    assert build.metrics["student"]["loss"] == pytest.approx(again["loss"], rel=1e-5)


def test_student_reloads_from_the_build_directory(build) -> None:
    student = load_student_model(build.out)
    x = torch.randn(2, 3, 32, 32)
    assert torch.allclose(student(x), build.student.eval()(x), atol=1e-5)
    loaded = load_build(build.out)
    assert loaded.plan == build.plan and loaded.classes == [str(i) for i in range(10)]


def test_rerun_with_same_settings_returns_the_finished_build(build, tiny_teacher) -> None:
    before = (build.out / "student.pt").stat().st_mtime_ns
    again = compress(
        "tinynet", out=build.out, weights=str(tiny_teacher), run=RunSettings(data="digits"), config=_config()
    )
    assert (build.out / "student.pt").stat().st_mtime_ns == before
    assert again.metrics["student"]["top1"] == build.metrics["student"]["top1"]


def test_evaluate_build_on_another_labelled_set(build, tmp_path) -> None:
    result = evaluate_build(build.out, "digits")
    assert result["images"] == 1797
    assert result["teacher"]["top1"] > 80 and result["student"]["top1"] > 70
    wrong = write_image_folder(tmp_path / "wrong", {"cat": 2, "dog": 2})
    with pytest.raises(DataError, match="missing 0, 1, 2"):
        evaluate_build(build.out, wrong)


def test_layerwise_resumes_after_the_last_finished_layer(tmp_path, tiny_teacher) -> None:
    teacher = build_teacher("tinynet", weights=tiny_teacher)
    data = load_data("digits", 32)
    plan = Plan.load(_plan_for(tmp_path, tiny_teacher))
    layers = list(plan.layers)
    config = LayerwiseConfig(epochs=1.0, max_steps=10, eval_every=5)
    state = tmp_path / "state"

    student = apply_plan(teacher.model, plan)
    first = train_layerwise(teacher.model, student, layers[:1], data, config, state_dir=state)
    progress = json.loads((state / "progress.json").read_text())
    assert list(progress["layers"]) == layers[:1]

    # a "restarted" run: fresh closed-form student, all layers; the first one must come from the saved state
    fresh = apply_plan(teacher.model, plan)
    seen = []
    records = train_layerwise(
        teacher.model, fresh, layers, data, config, state_dir=state, on_progress=lambda e: seen.append(e)
    )
    assert records[layers[0]] == first[layers[0]]
    assert any(e.info.get("resumed") == "yes" and e.info["layer"] == layers[0] for e in seen)
    w_saved = student.get_submodule(layers[0]).state_dict()
    w_resumed = fresh.get_submodule(layers[0]).state_dict()
    assert all(torch.equal(w_saved[k], w_resumed[k]) for k in w_saved)
    assert set(records) == set(layers)


def _plan_for(tmp_path, tiny_teacher):
    from mobilelwt.compress import make_plan

    teacher = build_teacher("tinynet", weights=tiny_teacher)
    return make_plan(teacher, load_data("digits", 32), _config()).save(tmp_path / "plan.json")


def test_teacher_layer_input_trains_layers_independently(tmp_path, tiny_teacher) -> None:
    teacher = build_teacher("tinynet", weights=tiny_teacher)
    plan = Plan.load(_plan_for(tmp_path, tiny_teacher))
    student = apply_plan(teacher.model, plan)
    data = load_data("digits", 32)
    config = LayerwiseConfig(epochs=1.0, max_steps=20, eval_every=10, layer_input="teacher")
    records = train_layerwise(teacher.model, student, list(plan.layers), data, config)
    assert all(r["error_final"] <= r["error_init"] for r in records.values())


def test_layer_budgets_share_one_pool_by_error_within_bounds() -> None:
    even = layer_budgets({"a": 0.2, "b": 0.2, "c": 0.2}, 50)
    assert even == {"a": 50, "b": 50, "c": 50}
    steps = layer_budgets({"a": 0.6, "b": 0.3, "c": 0.1, "d": 0.2}, 56)
    assert sum(steps.values()) == 4 * 56  # the pool of the uniform budget, in whole steps
    assert steps["a"] > steps["b"] > steps["d"] > steps["c"]  # ordered as the errors
    assert abs(steps["b"] / steps["d"] - 1.5) < 0.05  # proportional where no bound holds
    # one layer holds nearly all the error: it is capped at 3x the even share, the others keep a quarter of it
    skewed = layer_budgets({"fc6": 0.61, "conv": 1e-4, "fc7": 2e-4}, 40)
    assert skewed["fc6"] <= 120 and min(skewed["conv"], skewed["fc7"]) >= 10 and sum(skewed.values()) == 120
    assert layer_budgets({"a": 0.0, "b": 0.0}, 7) == {"a": 7, "b": 7}  # nothing to tell the layers apart
    assert layer_budgets({"a": 1.0, "b": 2.0}, 0) == {"a": 0, "b": 0}


def test_a_by_error_budget_spends_the_same_steps_where_the_error_is_and_resumes_with_them(
    tmp_path, tiny_teacher
) -> None:
    teacher = build_teacher("tinynet", weights=tiny_teacher)
    plan = Plan.load(_plan_for(tmp_path, tiny_teacher))
    layers = list(plan.layers)
    data = load_data("digits", 32)
    config = LayerwiseConfig(epochs=1.0, max_steps=12, eval_every=4, patience=100, budget="by-error")
    state = tmp_path / "state"
    records = train_layerwise(teacher.model, apply_plan(teacher.model, plan), layers, data, config, state_dir=state)
    budgets = {name: r["budget"] for name, r in records.items()}
    assert sum(budgets.values()) == 12 * len(layers) and len(set(budgets.values())) > 1
    worst = max(layers, key=lambda name: records[name]["error_init"])
    assert budgets[worst] == max(budgets.values())  # the most steps go to the largest error
    assert all(r["steps"] == r["budget"] for r in records.values())  # patience 100: no early stop
    assert json.loads((state / "progress.json").read_text())["budgets"] == budgets

    # a restart after the first layer keeps the budgets measured before it (a fresh run's), not new ones
    progress = json.loads((state / "progress.json").read_text())
    progress["layers"] = {layers[0]: progress["layers"][layers[0]]}
    (state / "progress.json").write_text(json.dumps(progress))
    again = train_layerwise(teacher.model, apply_plan(teacher.model, plan), layers, data, config, state_dir=state)
    assert {name: r["budget"] for name, r in again.items()} == budgets
    assert again[layers[0]] == records[layers[0]]  # resumed, not retrained


def test_the_first_replaced_layer_trains_on_one_teacher_pass_with_the_same_weights(
    tmp_path, tiny_teacher, monkeypatch
) -> None:
    import mobilelwt.layerwise as layerwise

    teacher = build_teacher("tinynet", weights=tiny_teacher)
    plan = Plan.load(_plan_for(tmp_path, tiny_teacher))
    layers = list(plan.layers)
    assert len(layers) >= 2
    data = load_data("digits", 32)
    config = LayerwiseConfig(epochs=1.0, max_steps=12, eval_every=4, patience=100)
    modes: dict[str, set[str]] = {}
    real_pair = layerwise.layer_pair

    def counting_pair(teacher, student, name, images, layer_input):
        modes.setdefault(name, set()).add(layer_input)
        return real_pair(teacher, student, name, images, layer_input)

    monkeypatch.setattr(layerwise, "layer_pair", counting_pair)
    shortcut = apply_plan(teacher.model, plan)
    train_layerwise(teacher.model, shortcut, layers, data, config)
    assert modes[layers[0]] == {"teacher"}  # its prefix is the teacher's: one pass gives input and target
    assert all(modes[name] == {"student"} for name in layers[1:])  # behind a replaced layer: the student's own

    monkeypatch.setattr(layerwise, "same_input", lambda *a: False)  # the student pass, as before the shortcut
    both = apply_plan(teacher.model, plan)
    train_layerwise(teacher.model, both, layers, data, config)
    a, b = shortcut.state_dict(), both.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)  # the same numbers, one prefix pass fewer


def test_a_new_fine_tune_reads_the_finished_layerwise_stage_back_without_evaluating_it(
    build, tmp_path, tiny_teacher, monkeypatch
) -> None:
    import shutil

    import mobilelwt.compress as compress_module

    out = tmp_path / "copy"
    shutil.copytree(build.out, out)
    evaluated = []
    real_accuracy = compress_module._accuracy

    def counted(model, data):
        evaluated.append(1)
        return real_accuracy(model, data)

    monkeypatch.setattr(compress_module, "_accuracy", counted)
    config = _config(finetune=DistillConfig(epochs=1, max_steps_per_epoch=8))
    again = compress("tinynet", out=out, weights=str(tiny_teacher), run=RunSettings(data="digits"), config=config)
    assert len(evaluated) == 1  # the teacher (a new session); not the stage reused (the fine-tune evaluates its own)
    for stage in ("closed_form", "layerwise"):
        assert again.metrics["student"][stage] == build.metrics["student"][stage]
    assert again.metrics["layers"] == build.metrics["layers"]

    # a damaged record is measured again, not trusted
    (out / "layerwise" / "accuracy.json").write_text("{not json")
    evaluated.clear()
    config = _config(finetune=DistillConfig(epochs=1, max_steps_per_epoch=9))
    third = compress("tinynet", out=out, weights=str(tiny_teacher), run=RunSettings(data="digits"), config=config)
    assert len(evaluated) == 3
    assert third.metrics["student"]["layerwise"] == build.metrics["student"]["layerwise"]  # measured, the same


def test_layer_io_stops_after_the_layer() -> None:
    model = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.ReLU(), torch.nn.Linear(3, 2))
    calls = []
    model[2].register_forward_hook(lambda *a: calls.append(1))
    x, y = layer_io(model, "0", torch.randn(5, 4))
    assert x.shape == (5, 4) and y.shape == (5, 3) and not calls


def test_bad_options() -> None:
    with pytest.raises(ConfigError, match="Unknown planner"):
        CompressConfig(planner="magic")
    with pytest.raises(ConfigError, match="layer-input"):
        LayerwiseConfig(layer_input="both")
    with pytest.raises(ConfigError, match="--layer-budget 'most'"):
        LayerwiseConfig(budget="most")


def test_replayed_plan_rebuilds_the_same_student(build, tmp_path, tiny_teacher) -> None:
    plan = Plan.load(build.out / "plan.json")
    config = _config(layerwise=LayerwiseConfig(epochs=0), finetune=DistillConfig(epochs=0), planner="sensitivity")
    replayed = compress(
        "tinynet",
        out=tmp_path / "replay",
        weights=str(tiny_teacher),
        run=RunSettings(data="digits"),
        config=config,
        plan=plan,
    )
    assert replayed.plan.layers == build.plan.layers  # the sensitivity planner was not consulted
    assert replayed.metrics["device"] == "cpu" and replayed.metrics["inputs"]["replayed_plan"]
    assert [type(m).__name__ for m in replayed.student.modules()] == [type(m).__name__ for m in build.student.modules()]


def test_replaying_a_plan_for_another_model_or_size_is_refused(build, tmp_path, tiny_teacher) -> None:
    plan = Plan.load(build.out / "plan.json")
    other_size = Plan.from_dict({**plan.to_dict(), "input_size": 48})
    with pytest.raises(ConfigError, match="made at 48² input"):
        compress(
            "tinynet", out=tmp_path / "b", weights=str(tiny_teacher), run=RunSettings(data="digits"), plan=other_size
        )
    other_model = Plan.from_dict({**plan.to_dict(), "model": "alexnet"})
    with pytest.raises(ConfigError, match="for alexnet, not tinynet"):
        compress(
            "tinynet", out=tmp_path / "c", weights=str(tiny_teacher), run=RunSettings(data="digits"), plan=other_model
        )


def test_build_records_absolute_paths_so_it_loads_from_anywhere(tmp_path, tiny_teacher, monkeypatch) -> None:
    import shutil

    work = tmp_path / "work"
    (work / "data").mkdir(parents=True)
    shutil.copyfile(tiny_teacher, work / "t.pt")
    write_image_folder(work / "data" / "imgs", {str(i): 3 for i in range(10)}, size=32)
    monkeypatch.chdir(work)
    config = _config(layerwise=LayerwiseConfig(epochs=0), finetune=DistillConfig(epochs=0), mac_speedup=2.0)
    compress("tinynet", out=tmp_path / "b", weights="t.pt", run=RunSettings(data="data/imgs"), config=config)
    manifest = json.loads((tmp_path / "b" / "manifest.json").read_text())
    assert manifest["teacher"]["weights"] == str(work / "t.pt")
    assert manifest["settings"]["data"]["source"] == str(work / "data" / "imgs")
    monkeypatch.chdir(tmp_path)
    assert load_build(tmp_path / "b").plan.model == "tinynet"
