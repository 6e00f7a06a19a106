"""``compress``: teacher + data -> plan.json, student.pt, metrics.json, manifest.json in one build directory.

Stages: evaluate the teacher, plan, apply the plan with closed-form init, train layer-wise, fine-tune with
distillation, evaluate. Every file is written atomically; an interrupted run resumes from the plan and the last
finished layer.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from mobilelwt.builddir import (
    LATENCY_TABLE,
    LAYERWISE,
    MANIFEST,
    METRICS,
    PLAN,
    STUDENT,
    BuildDir,
)
from mobilelwt.checks import check_writable_dir, finite, whole
from mobilelwt.data import DataBundle, iterate_normalized, load_labelled
from mobilelwt.devices import resolve_device
from mobilelwt.distill import DistillConfig, distill
from mobilelwt.distributed import broadcast_module, init_distributed, on_main, rank_batch_size
from mobilelwt.errors import ConfigError
from mobilelwt.evaluation import evaluate, evaluate_set
from mobilelwt.hashing import digest
from mobilelwt.io import atomic_path, jsonable, read_json, write_json
from mobilelwt.layerwise import LayerwiseConfig, train_layerwise
from mobilelwt.loading import (
    Build,
    data_fingerprint,
    load_build,
    load_build_data,
    load_student_model,
    teacher_fingerprint,
)
from mobilelwt.manifest import build_manifest
from mobilelwt.plan import CONV_KINDS, LINEAR_KINDS, Plan, apply_plan, default_candidates
from mobilelwt.planners import PLANNERS, PlanningContext, PlanRequest
from mobilelwt.planners.table import LatencyProbe
from mobilelwt.profile import count_macs, count_params
from mobilelwt.progress import ProgressCallback, ProgressEvent, ignore_progress
from mobilelwt.teachers import Teacher, build_teacher, find_head, get_teacher_spec
from mobilelwt.train import check_model_options, check_workers, load_data_for_weights, loader_settings, throughput

LatencyProbeFactory = Callable[["LatencyTarget"], LatencyProbe]
__all__ = ["Build", "CompressConfig", "CompressResult", "compress", "evaluate_build", "load_build", "load_build_data"]


@dataclass
class LatencyTarget:
    """Where a measured speedup is measured: runtime, device (``host`` or an adb serial), precision, threads, and
    the latency table to plan from (``table``: a shared file, read and extended; ``allow_foreign_table``: plan from
    another device's table without timing on it)."""

    runtime: str = "executorch"
    device: str = "host"
    precision: str = "fp32"
    threads: int = 2
    table: str | None = None
    allow_foreign_table: bool = False
    modules: tuple[str, ...] = ()  # candidate kinds for convolutions (default: --conv-module only)
    grid_points: int = 8

    def __post_init__(self) -> None:
        self.modules = tuple(self.modules)
        unknown = [m for m in self.modules if m not in CONV_KINDS]
        if unknown:
            raise ConfigError(f"Unknown candidate module(s) {', '.join(unknown)}.", f"Use: {', '.join(CONV_KINDS)}.")
        if self.precision not in ("fp32", "int8"):
            raise ConfigError(f"--latency-precision {self.precision!r} is not timed.", "Use fp32 or int8.")
        whole(self.threads, "--latency-threads", low=1)
        whole(self.grid_points, "--rank-grid", low=2)
        if not str(self.device).strip():
            raise ConfigError("--latency-device names no device.", "Pass host or an adb serial.")
        if self.table is not None:
            table = Path(self.table)
            if table.is_dir() or not (table.is_file() or table.parent.is_dir()):
                where = "a directory" if table.is_dir() else "in a folder that does not exist"
                raise ConfigError(
                    f"--latency-table {table} is {where}.",
                    "Pass a JSON file path (an existing table, or a new file in an existing folder).",
                )


@dataclass
class CompressConfig:
    """``speedup`` is a *measured* speedup on ``latency`` (planners latency, latency-uniform); ``mac_speedup`` a
    MAC reduction (planners uniform, sensitivity). Neither given: a measured 4×."""

    speedup: float | None = None
    mac_speedup: float | None = None
    planner: str | None = None
    conv_module: str = "lowrank_spatial"
    linear_module: str = "factorized_linear"
    compress_fc: bool = True
    calib_images: int = 64
    latency: LatencyTarget = field(default_factory=LatencyTarget)
    layerwise: LayerwiseConfig = field(default_factory=LayerwiseConfig)
    finetune: DistillConfig = field(default_factory=lambda: DistillConfig(epochs=2))
    seed: int = 0

    def __post_init__(self) -> None:
        if self.speedup is not None and self.mac_speedup is not None:
            raise ConfigError(
                "--speedup (measured on the target) and --mac-speedup (MACs) were both given.", "Pass one of them."
            )
        if self.planner is None:
            self.planner = "uniform" if self.mac_speedup is not None else "latency"
        planner = PLANNERS.get(self.planner)  # an unknown name is one error listing the known ones
        if planner.measured and self.mac_speedup is not None:
            raise ConfigError(
                f"The {self.planner} planner meets a measured speedup; --mac-speedup asks for MACs.",
                f"Pass --speedup {self.mac_speedup:g} for a measured target, or --planner uniform/sensitivity.",
            )
        if not planner.measured and self.speedup is not None:
            raise ConfigError(
                f"The {self.planner} planner plans MACs, and --speedup means a measured speedup on the target.",
                f"Pass --mac-speedup {self.speedup:g} for a MAC target, or drop --planner (the latency planner "
                "meets --speedup as measured).",
            )
        if planner.measured:
            self.speedup = 4.0 if self.speedup is None else self.speedup
            finite(self.speedup, "--speedup", low=1, strict=True, high=1000)
        else:
            self.mac_speedup = 4.0 if self.mac_speedup is None else self.mac_speedup
            finite(self.mac_speedup, "--mac-speedup", low=1, strict=True, high=1000)
        if self.conv_module not in CONV_KINDS:
            raise ConfigError(f"Unknown --conv-module {self.conv_module!r}.", f"Use one of: {', '.join(CONV_KINDS)}.")
        if self.linear_module not in LINEAR_KINDS:
            raise ConfigError(f"Unknown linear module {self.linear_module!r}.", f"Use {', '.join(LINEAR_KINDS)}.")
        whole(self.calib_images, "--calib-images", low=1)

    @property
    def measured(self) -> bool:
        """Whether the plan meets a speedup measured on the target (else a MAC reduction)."""
        return PLANNERS.get(self.planner).measured

    @property
    def target(self) -> float:
        """The number the plan must meet: the measured speedup, or the MAC reduction."""
        return self.speedup if self.measured else self.mac_speedup


@dataclass
class CompressResult:
    out: Path
    plan: Plan
    metrics: dict[str, Any]
    student: nn.Module | None  # None on ranks other than 0 when a finished build was reused
    teacher: Teacher


def _accuracy(model: nn.Module, data: DataBundle) -> dict[str, float]:
    result = evaluate_set(model, data, data.val, 128)
    return {"top1": result["top1"], "top5": result["top5"], "loss": result["loss"], "images": result["images"]}


def make_plan(
    teacher: Teacher,
    data: DataBundle,
    config: CompressConfig,
    on_progress: ProgressCallback = ignore_progress,
    *,
    latency_probe: LatencyProbeFactory | None = None,
    table_path: Path | None = None,
) -> Plan:
    """Run the configured planner; the latency planner needs ``latency_probe`` (see :func:`compress`)."""
    head = get_teacher_spec(teacher.name).head or find_head(teacher.model, teacher.input_size)
    candidates = default_candidates(teacher.model, teacher.input_size, head)
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
    request = PlanRequest(
        ctx,
        speedup=config.speedup,
        mac_speedup=config.mac_speedup,
        calibration=lambda: data.calibration(config.calib_images, seed=config.seed),
        probe=(lambda: latency_probe(config.latency)) if latency_probe is not None else None,
        table_path=table_path,
        shared_table=Path(config.latency.table) if config.latency.table else None,
        allow_foreign_table=config.latency.allow_foreign_table,
        kinds=config.latency.modules or (config.conv_module,),
        grid_points=config.latency.grid_points,
        on_progress=on_progress,
    )
    return PLANNERS.get(config.planner).run(request)


def _settings(model: str, weights: str, data: DataBundle, config: CompressConfig) -> dict[str, Any]:
    return {"model": model, "weights": weights, "data": data.describe(), "compress": asdict(config)}


def compress_inputs(
    model: str, teacher: Teacher, bundle: DataBundle, config: CompressConfig, plan: Plan | None
) -> dict[str, Any]:
    """Everything the compress stage is made from, as content hashes and settings, with the digests of the
    planning and layer-wise sub-stages (each reused only while its own inputs hold)."""
    base = {
        "model": model,
        "teacher_sha256": teacher_fingerprint(teacher),
        "data": data_fingerprint(bundle),
        "input_size": bundle.input_size,
        "replayed_plan": digest(plan.to_dict()["layers"]) if plan is not None else None,
    }
    settings = asdict(config)
    planning = {k: v for k, v in settings.items() if k not in ("layerwise", "finetune")}
    plan_key = digest({**base, "planning": planning})
    layerwise_key = digest({"plan": plan_key, "layerwise": settings["layerwise"]})
    return {**base, "settings": settings, "plan_key": plan_key, "layerwise_key": layerwise_key,
            "key": digest({**base, "settings": settings})}  # fmt: skip


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
    workers: int | None = None,
    on_progress: ProgressCallback = ignore_progress,
) -> CompressResult:
    """Compress ``model`` into a student in ``out``; see the module docstring for the stages.

    ``latency_probe(config.latency) -> probe`` supplies the target the latency planners time on
    (``device_bench.probe.make_probe``); the core itself knows no runtime. ``plan`` replays a plan made elsewhere (say,
    timed on the target runtime on a laptop, trained on a GPU machine) instead of planning. Training runs on
    ``device``; planning, closed-form init and the saved files stay on the CPU.

    Freshness: a finished build whose recorded inputs (teacher weights, data, settings, replayed plan) equal
    this call's is returned as it is; otherwise its files and everything exported or measured from them are
    removed first, keeping only a plan or layer-wise progress whose own inputs still match.

    Under torchrun (``mobilelwt.distributed``) the ranks evaluate, train layer-wise and fine-tune data-parallel;
    rank 0 alone checks and writes the directory and plans; ``workers`` DataLoader processes per rank decode a
    set that is not held in memory. ``student`` is None on the other ranks of a build that was already finished.
    """
    config = config or CompressConfig()
    out = check_writable_dir(Path(out))
    model = check_model_options(model, input_size, threads)
    check_workers(workers)
    w, torch_device = init_distributed(resolve_device(device))
    rank_batch_size(config.layerwise.batch_size, "--layer-batch-size")
    rank_batch_size(config.finetune.batch_size, "--finetune-batch-size")
    if threads is not None:
        torch.set_num_threads(threads)
    started = time.perf_counter()
    bundle = load_data_for_weights(
        weights, data, input_size, val_fraction=val_fraction, seed=config.seed, val_data=val_data
    )
    bundle.use_loader(loader_settings(workers, torch_device))
    input_size = bundle.input_size
    teacher = build_teacher(
        model, num_classes=bundle.num_classes, weights=weights, input_size=input_size, seed=config.seed
    )
    if plan is not None:
        _check_replayable(plan, model, bundle.num_classes, input_size)
    settings = _settings(model, str(weights), bundle, config)
    inputs = compress_inputs(model, teacher, bundle, config, plan)
    build_dir = BuildDir(out)

    state = on_main(lambda: _prepare(build_dir, inputs, replaying=plan is not None), "checking the build directory")
    if "reused" in state:
        reused_plan = Plan.from_dict(state["plan"])
        student = load_student_model(out, reused_plan) if w.is_main else None
        return CompressResult(out, reused_plan, state["reused"], student, teacher)
    keep = state["keep"]

    timings: dict[str, float] = {}
    on_progress(ProgressEvent("stages", 0, 5, {"stage": "evaluate teacher"}))
    teacher_acc = _accuracy(teacher.model.to(torch_device), bundle)
    teacher.model.cpu()

    on_progress(ProgressEvent("stages", 1, 5, {"stage": "plan"}))
    t0 = time.perf_counter()
    plan_path = out / PLAN

    def planned() -> dict[str, Any]:  # rank 0: the planner may time candidates on a device, and writes plan.json
        chosen = plan
        if chosen is None and PLAN in keep:
            chosen = Plan.load(plan_path)
        if chosen is None:
            chosen = make_plan(
                teacher, bundle, config, on_progress, latency_probe=latency_probe, table_path=out / LATENCY_TABLE
            )
        chosen.details["inputs_key"] = inputs["plan_key"]
        chosen.save(plan_path)
        return chosen.to_dict()

    plan = Plan.from_dict(on_main(planned, "planning"))
    timings["plan"] = time.perf_counter() - t0

    # the closed-form init (SVDs) on rank 0 alone, handed to the others: N ranks of a node would run N at once
    student = apply_plan(teacher.model, plan, init=w.is_main).to(torch_device)
    broadcast_module(student, "the closed-form init")
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
        state_dir=out / LAYERWISE,
        state_key=inputs["layerwise_key"],
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
        "plan_target": plan_target(plan),
        "top1_drop": teacher_acc["top1"] - final_acc["top1"],
        "layers": {
            name: {
                **layer_records.get(name, {}),
                "module": choice.module,
                **choice.params,
                "teacher_macs": choice.teacher_macs,
                "student_macs": choice.student_macs,
                # the latency planner's table: the teacher layer's and this module's time alone on the target
                **(
                    {"predicted_teacher_ms": choice.notes["teacher_ms"], "predicted_ms": choice.notes["predicted_ms"]}
                    if "predicted_ms" in choice.notes
                    else {}
                ),
            }
            for name, choice in plan.layers.items()
        },
        "seconds": {**timings, "total": time.perf_counter() - started},
        "threads": torch.get_num_threads(),
        "device": str(torch_device),
        "distributed": {
            **w.describe(),
            "global_batch": {"layerwise": config.layerwise.batch_size, "finetune": config.finetune.batch_size},
        },
        "data_loader": {**bundle.loader_facts(), **_throughput(layer_records, history)},
        "settings": jsonable(settings),
        "inputs": inputs,
    }
    on_main(lambda: _save(out, student, metrics, settings, config, model, weights, bundle, inputs, teacher, plan),
            "saving the student")  # fmt: skip
    on_progress(ProgressEvent("stages", 5, 5, {"stage": "done"}))
    return CompressResult(out, plan, metrics, student, teacher)


def _prepare(build_dir: BuildDir, inputs: dict[str, Any], *, replaying: bool) -> dict[str, Any]:
    """Rank 0: a finished build of these inputs (``reused``), else what of the old one may be kept (``keep``),
    the rest removed."""
    reused = _finished(build_dir, inputs["key"])
    if reused is not None:
        return {"reused": reused, "plan": build_dir.plan().to_dict()}
    keep = [LATENCY_TABLE]  # keyed by the device, runtime and layer shapes it timed
    if not replaying and _plan_reusable(build_dir, inputs["plan_key"]):
        keep.append(PLAN)
    if _layerwise_reusable(build_dir, inputs["layerwise_key"]):
        keep.append(LAYERWISE)
    build_dir.invalidate("compress", keep=tuple(keep))
    build_dir.path.mkdir(parents=True, exist_ok=True)
    return {"keep": keep}


def _throughput(layer_records: dict[str, dict[str, Any]], history: list[dict[str, Any]]) -> dict[str, Any]:
    """Training images per second (all ranks) of the layer-wise stage and of the fine-tune."""
    trained = [r for r in layer_records.values() if r.get("images_per_s") is not None and r.get("steps")]
    seconds = sum(r["seconds"] for r in trained)
    layerwise = sum(r["images_per_s"] * r["seconds"] for r in trained) / seconds if seconds > 0 else None
    return {"layerwise_images_per_s": layerwise, "finetune": throughput(history)}


def _save(
    out: Path,
    student: nn.Module,
    metrics: dict[str, Any],
    settings: dict[str, Any],
    config: CompressConfig,
    model: str,
    weights: str,
    bundle: DataBundle,
    inputs: dict[str, Any],
    teacher: Teacher,
    plan: Plan,
) -> None:
    """Rank 0: the student, its metrics, and last the manifest (whose presence marks the stage finished)."""
    with atomic_path(out / STUDENT) as tmp:
        torch.save(student.state_dict(), tmp)
    write_json(out / METRICS, metrics)
    write_json(
        out / MANIFEST,
        build_manifest(
            "compress",
            settings=jsonable(settings),
            seeds={
                "seed": config.seed,
                "split_seed": config.seed,
                "layerwise_seed": config.layerwise.seed,
                "finetune_seed": config.finetune.seed,
            },
            files=[out / name for name in (PLAN, STUDENT, METRICS)],
            teacher={
                "model": model,
                # absolute, so the build loads from any working directory
                "weights": str(Path(weights).resolve()) if Path(str(weights)).is_file() else str(weights),
                "num_classes": bundle.num_classes,
                "input_size": bundle.input_size,
                "classes": bundle.classes,
                "mean": list(bundle.mean),
                "std": list(bundle.std),
                "seed": config.seed,  # a random teacher (--weights none) is rebuilt from it
                "sha256": inputs["teacher_sha256"],
                "code": teacher.code,  # a user model's file and hash: later stages load exactly that code
            },
            inputs=inputs,
            plan=plan.to_dict(),
        ),
    )


def plan_target(plan: Plan) -> dict[str, Any]:
    """What the plan was made to meet, and what the planner measured for it (a measured target's interval)."""
    d = plan.details
    measured = d.get("target") == "measured speedup"
    return {
        "kind": "measured speedup" if measured else "MAC reduction",
        "value": plan.target_speedup,
        "planner": plan.planner,
        "probe": d.get("probe"),
        "measured_speedup": d.get("measured_speedup"),
        "measured_ci95": d.get("measured_ci95"),
        "predicted_speedup": d.get("predicted_speedup"),
        "verified": d.get("verified"),
    }


def _finished(build_dir: BuildDir, key: str) -> dict[str, Any] | None:
    """The metrics of a finished compress stage made from exactly these inputs, else None."""
    if not build_dir.is_compressed():
        return None
    try:
        manifest = build_dir.manifest()
        if manifest["inputs"].get("key") != key:
            return None
        build_dir.check_student(manifest)
        metrics = build_dir.metrics()
    except ConfigError:
        return None  # damaged files: redo the stage
    return metrics if metrics["inputs"].get("key") == key else None


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


def _plan_reusable(build_dir: BuildDir, plan_key: str) -> bool:
    if not (build_dir / PLAN).is_file():
        return False
    try:
        return build_dir.plan().details.get("inputs_key") == plan_key
    except ConfigError:
        return False


def _layerwise_reusable(build_dir: BuildDir, layerwise_key: str) -> bool:
    progress = build_dir / LAYERWISE / "progress.json"
    try:
        return progress.is_file() and read_json(progress).get("key") == layerwise_key
    except ValueError:
        return False


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
