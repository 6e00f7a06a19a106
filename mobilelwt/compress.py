"""``compress``: teacher + data -> plan.json, student.pt, metrics.json, manifest.json in one build directory.

Stages: evaluate the teacher, plan, apply the plan with closed-form init, train layer-wise, fine-tune with
distillation, evaluate. Every file is written atomically; an interrupted run resumes from the plan and the last
finished layer.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from mobilelwt.data import DataBundle, iterate_normalized, load_labelled
from mobilelwt.devices import resolve_device
from mobilelwt.distill import DistillConfig, distill
from mobilelwt.errors import ConfigError
from mobilelwt.evaluation import evaluate
from mobilelwt.io import atomic_path, read_json, write_json
from mobilelwt.layerwise import LayerwiseConfig, train_layerwise
from mobilelwt.manifest import build_manifest
from mobilelwt.plan import Plan, apply_plan, default_candidates
from mobilelwt.planners import PLANNERS, PlanningContext, plan_sensitivity, plan_uniform
from mobilelwt.profile import count_macs, count_params
from mobilelwt.progress import ProgressCallback, ProgressEvent, ignore_progress
from mobilelwt.teachers import Teacher, build_teacher, get_teacher_spec
from mobilelwt.train import load_data_for_weights
from mobilelwt.weights import load_checkpoint, load_into

LatencyProbeFactory = Callable[[int], tuple[Callable[[nn.Module], float], str]]
FILES = ("plan.json", "student.pt", "metrics.json", "manifest.json")


@dataclass
class CompressConfig:
    speedup: float = 4.0
    planner: str = "uniform"
    conv_module: str = "lowrank_spatial"
    linear_module: str = "factorized_linear"
    compress_fc: bool = True
    calib_images: int = 64
    layerwise: LayerwiseConfig = field(default_factory=LayerwiseConfig)
    finetune: DistillConfig = field(default_factory=lambda: DistillConfig(epochs=2))
    seed: int = 0

    def __post_init__(self) -> None:
        if self.planner not in PLANNERS:
            raise ConfigError(f"Unknown planner {self.planner!r}.", f"Use one of: {', '.join(PLANNERS)}.")


@dataclass
class CompressResult:
    out: Path
    plan: Plan
    metrics: dict[str, Any]
    student: nn.Module
    teacher: Teacher


def _accuracy(model: nn.Module, data: DataBundle) -> dict[str, float]:
    result = evaluate(model, data.eval_batches(data.val, 128))
    return {"top1": result["top1"], "top5": result["top5"], "loss": result["loss"], "images": result["images"]}


def make_plan(
    teacher: Teacher,
    data: DataBundle,
    config: CompressConfig,
    on_progress: ProgressCallback = ignore_progress,
    *,
    latency_probe: LatencyProbeFactory | None = None,
    cache_path: Path | None = None,
) -> Plan:
    """Run the configured planner; the latency planner needs ``latency_probe`` (see :func:`compress`)."""
    spec = get_teacher_spec(teacher.name)
    candidates = default_candidates(teacher.model, teacher.input_size, spec.head)
    if not config.compress_fc:
        candidates = [c for c in candidates if c.type != "Linear"]
    ctx = PlanningContext(
        teacher.name,
        teacher.model,
        teacher.input_size,
        teacher.num_classes,
        candidates,
        count_macs(teacher.model, teacher.input_size),
        conv_module=config.conv_module,
        linear_module=config.linear_module,
    )
    if config.planner == "uniform":
        return plan_uniform(ctx, config.speedup)
    if config.planner == "sensitivity":
        calibration = data.calibration(config.calib_images, seed=config.seed)
        return plan_sensitivity(ctx, config.speedup, calibration, on_progress=on_progress)
    from mobilelwt.planners.latency import plan_latency

    if latency_probe is None:
        raise ConfigError(
            "The latency planner needs a runtime to time candidates on.", "Run it from the CLI or pass latency_probe."
        )
    probe, probe_key = latency_probe(teacher.input_size)
    return plan_latency(
        ctx, config.speedup, measure=probe, probe_key=probe_key, cache_path=cache_path, on_progress=on_progress
    )


def _settings(model: str, weights: str, data: DataBundle, config: CompressConfig) -> dict[str, Any]:
    return {"model": model, "weights": weights, "data": data.describe(), "compress": asdict(config)}


def compress(
    model: str,
    *,
    out: Path,
    weights: str = "none",
    data: str | Path = "digits",
    val_data: Path | None = None,
    val_fraction: float = 0.1,
    input_size: int | None = None,
    config: CompressConfig | None = None,
    threads: int | None = None,
    device: str = "cpu",
    plan: Plan | None = None,
    latency_probe: LatencyProbeFactory | None = None,
    on_progress: ProgressCallback = ignore_progress,
) -> CompressResult:
    """Compress ``model`` into a student in ``out``; see the module docstring for the stages.

    ``latency_probe(input_size) -> (probe, description)`` supplies the runtime timer of the latency planner
    (``targets.latency_probe``); the core itself knows no runtime. ``plan`` replays a plan made elsewhere (say,
    timed on the target runtime on a laptop, trained on a GPU machine) instead of planning. Training runs on
    ``device``; planning, closed-form init and the saved files stay on the CPU.
    """
    config = config or CompressConfig()
    torch_device = resolve_device(device)
    if threads:
        torch.set_num_threads(threads)
    out = Path(out)
    started = time.perf_counter()
    bundle = load_data_for_weights(
        weights, data, input_size, val_fraction=val_fraction, seed=config.seed, val_data=val_data
    )
    input_size = bundle.input_size
    teacher = build_teacher(model, num_classes=bundle.num_classes, weights=weights, input_size=input_size)
    if plan is not None:
        _check_replayable(plan, model, bundle.num_classes, input_size)
    settings = _settings(model, str(weights), bundle, config)
    if plan is not None:
        settings["replayed_plan"] = _digest(plan.to_dict()["layers"])

    previous = read_json(out / "metrics.json") if (out / "metrics.json").is_file() else None
    if previous and previous.get("settings") == _jsonable(settings) and (out / "student.pt").is_file():
        plan = Plan.load(out / "plan.json")
        student = load_student_model(out, plan)
        return CompressResult(out, plan, previous, student, teacher)

    timings: dict[str, float] = {}
    on_progress(ProgressEvent("stages", 0, 5, {"stage": "evaluate teacher"}))
    teacher_acc = _accuracy(teacher.model.to(torch_device), bundle)
    teacher.model.cpu()

    on_progress(ProgressEvent("stages", 1, 5, {"stage": "plan"}))
    t0 = time.perf_counter()
    plan_path = out / "plan.json"
    if plan is None and _plan_reusable(plan_path, out, settings):
        plan = Plan.load(plan_path)
    if plan is None:
        plan = make_plan(
            teacher, bundle, config, on_progress, latency_probe=latency_probe, cache_path=out / "latency-cache.json"
        )
    plan.details["settings_key"] = _settings_key(settings)
    plan.save(plan_path)
    timings["plan"] = time.perf_counter() - t0

    student = apply_plan(teacher.model, plan, init=True).to(torch_device)
    teacher.model.to(torch_device)
    closed_form_acc = _accuracy(student, bundle)

    on_progress(ProgressEvent("stages", 2, 5, {"stage": "layer-wise training"}))
    t0 = time.perf_counter()
    layer_records = train_layerwise(
        teacher.model,
        student,
        list(plan.layers),
        bundle,
        config.layerwise,
        state_dir=out / "layerwise",
        on_progress=on_progress,
    )
    timings["layerwise"] = time.perf_counter() - t0
    layerwise_acc = _accuracy(student, bundle) if config.layerwise.epochs > 0 else closed_form_acc

    on_progress(ProgressEvent("stages", 3, 5, {"stage": "distillation fine-tune"}))
    t0 = time.perf_counter()
    history = distill(student, teacher.model, bundle, config.finetune, on_progress=on_progress)
    timings["finetune"] = time.perf_counter() - t0
    final_acc = _accuracy(student, bundle) if history else layerwise_acc

    on_progress(ProgressEvent("stages", 4, 5, {"stage": "save"}))
    student.cpu()
    teacher.model.cpu()
    with atomic_path(out / "student.pt") as tmp:
        torch.save(student.state_dict(), tmp)
    student_macs = count_macs(student, input_size)
    teacher_macs = count_macs(teacher.model, input_size)
    metrics = {
        "model": model,
        "input_size": input_size,
        "num_classes": bundle.num_classes,
        "classes": bundle.classes,
        "teacher": {
            **teacher_acc,
            "macs": teacher_macs,
            "params": count_params(teacher.model),
            "weights": str(weights),
        },
        "student": {
            **final_acc,
            "macs": student_macs,
            "params": count_params(student),
            "closed_form": closed_form_acc,
            "layerwise": layerwise_acc,
            "finetune_history": history,
        },
        "mac_speedup": teacher_macs / student_macs,
        "top1_drop": teacher_acc["top1"] - final_acc["top1"],
        "layers": {
            name: {
                **layer_records.get(name, {}),
                "module": choice.module,
                **choice.params,
                "teacher_macs": choice.teacher_macs,
                "student_macs": choice.student_macs,
            }
            for name, choice in plan.layers.items()
        },
        "seconds": {**timings, "total": time.perf_counter() - started},
        "threads": torch.get_num_threads(),
        "device": str(torch_device),
        "settings": _jsonable(settings),
    }
    write_json(out / "metrics.json", metrics)
    write_json(
        out / "manifest.json",
        build_manifest(
            "compress",
            settings=_jsonable(settings),
            seeds={
                "seed": config.seed,
                "split_seed": config.seed,
                "layerwise_seed": config.layerwise.seed,
                "finetune_seed": config.finetune.seed,
            },
            files=[out / name for name in FILES if name != "manifest.json"],
            teacher={
                "model": model,
                # absolute, so the build loads from any working directory
                "weights": str(Path(weights).resolve()) if Path(str(weights)).is_file() else str(weights),
                "num_classes": bundle.num_classes,
                "input_size": input_size,
                "classes": bundle.classes,
                "mean": list(bundle.mean),
                "std": list(bundle.std),
            },
            plan=plan.to_dict(),
        ),
    )
    on_progress(ProgressEvent("stages", 5, 5, {"stage": "done"}))
    return CompressResult(out, plan, metrics, student, teacher)


def _jsonable(value: Any) -> Any:
    return json.loads(json.dumps(value, default=str))


def _digest(value: Any) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _settings_key(settings: dict[str, Any]) -> str:
    planning = {k: v for k, v in settings.items() if k != "compress"}
    planning["compress"] = {k: v for k, v in settings["compress"].items() if k not in ("layerwise", "finetune")}
    return _digest(planning)


def _check_replayable(plan: Plan, model: str, num_classes: int, input_size: int) -> None:
    if plan.model != model:
        raise ConfigError(f"The plan is for {plan.model}, not {model}.", f"Pass --model {plan.model} or another plan.")
    if plan.num_classes != num_classes:
        raise ConfigError(
            f"The plan is for a {plan.num_classes}-class head; the data has {num_classes} classes.",
            "Use a plan made for this dataset's teacher.",
        )
    if plan.input_size != input_size:
        raise ConfigError(
            f"The plan was made at {plan.input_size}² input; this run uses {input_size}².",
            f"Pass --input-size {plan.input_size}, or plan again at this size.",
        )


def _plan_reusable(plan_path: Path, out: Path, settings: dict[str, Any]) -> bool:
    if not plan_path.is_file():
        return False
    try:
        return Plan.load(plan_path).details.get("settings_key") == _settings_key(settings)
    except ConfigError:
        return False


def load_student_model(build_dir: Path, plan: Plan | None = None) -> nn.Module:
    """The student of a build directory (architecture from plan.json, weights from student.pt)."""
    build_dir = Path(build_dir)
    plan = plan or Plan.load(build_dir / "plan.json")
    skeleton = build_teacher(plan.model, num_classes=plan.num_classes, input_size=plan.input_size).model
    student = apply_plan(skeleton, plan, init=False, inplace=True)
    load_into(student, load_checkpoint(build_dir / "student.pt")["state_dict"], str(build_dir / "student.pt"))
    return student.eval()


@dataclass
class Build:
    """A finished compress stage, loaded in one call: teacher, student, plan, preprocessing."""

    dir: Path
    plan: Plan
    teacher: Teacher
    student: nn.Module
    manifest: dict[str, Any]

    @property
    def classes(self) -> list[str]:
        return self.manifest["teacher"]["classes"]


def load_build(build_dir: Path) -> Build:
    build_dir = Path(build_dir)
    if not (build_dir / "manifest.json").is_file():
        raise ConfigError(f"{build_dir} is not a finished build (no manifest.json).", "Run `mobilelwt compress` first.")
    manifest = read_json(build_dir / "manifest.json")
    plan = Plan.load(build_dir / "plan.json")
    info = manifest["teacher"]
    teacher = build_teacher(
        info["model"], num_classes=info["num_classes"], input_size=info["input_size"], weights=info["weights"]
    )
    teacher.classes = info["classes"]
    return Build(build_dir, plan, teacher, load_student_model(build_dir, plan), manifest)


def load_build_data(build: Build) -> DataBundle:
    """The build's data with its train/val split as recorded (for calibration and validation of exports)."""
    from mobilelwt.data import load_data

    recorded = build.manifest["settings"]["data"]
    return load_data(
        recorded["source"],
        build.manifest["teacher"]["input_size"],
        val_fraction=recorded.get("val_fraction", 0.1),
        seed=recorded.get("split_seed", 0),
        val_data=recorded.get("val_source"),
        expected_classes=build.classes,
    )


def evaluate_build(build_dir: Path, data: str | Path, *, batch_size: int = 128) -> dict[str, Any]:
    """Re-evaluate a build's teacher and student on any labelled set with the preprocessing recorded at build time.

    The set's class folders must be exactly the classes the teacher was trained on.
    """
    build = load_build(build_dir)
    info = build.manifest["teacher"]
    images = load_labelled(data, info["input_size"], expected_classes=build.classes)
    mean, std = tuple(info["mean"]), tuple(info["std"])
    return {
        "data": str(data),
        "images": len(images),
        "teacher": evaluate(build.teacher.model, iterate_normalized(images, mean, std, batch_size)),
        "student": evaluate(build.student, iterate_normalized(images, mean, std, batch_size)),
    }
