"""``compress``: teacher + data -> plan.json, student.pt, metrics.json, manifest.json in one build directory.

Stages: evaluate the teacher, plan, apply the plan with closed-form init, train layer-wise, fine-tune with
distillation, evaluate. Every file is written atomically; an interrupted run resumes from the plan and the last
finished layer.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
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
from mobilelwt.checks import check_writable_dir, interval_width, non_negative, one_of, positive, ratio, whole
from mobilelwt.data import DataBundle, iterate_normalized, load_labelled
from mobilelwt.devices import resolve_device
from mobilelwt.distill import DistillConfig, distill
from mobilelwt.distributed import broadcast_module, init_distributed, on_main, rank_batch_size, world
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
from mobilelwt.plan import CONV_KINDS, LINEAR_KINDS, LayerChoice, Plan, apply_plan, default_candidates
from mobilelwt.planners import PLANNERS, PlanMemory, PlanningContext, PlanRequest
from mobilelwt.planners.table import LatencyProbe
from mobilelwt.profile import count_macs, count_params
from mobilelwt.progress import ProgressCallback, ProgressEvent, ignore_progress
from mobilelwt.settings import RunSettings
from mobilelwt.teachers import Teacher, build_teacher, find_head, get_teacher_spec
from mobilelwt.train import check_model_options, load_data_for_weights, loader_settings, throughput

LatencyProbeFactory = Callable[["LatencyTarget"], LatencyProbe]
LAYERWISE_ACCURACY = "accuracy.json"  # in LAYERWISE: the finished stage's accuracies, keyed like its progress

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
    cache: str = "cold"  # the cache state the speedup is planned for (warm: back-to-back runs)
    timing_width: float = 0.05  # each timing runs until its speedup's 95 % interval is within ± this share ...
    timing_cap_s: float = 60.0  # ... or this many seconds have passed
    band: float | None = None  # the share above the target that still meets it (None: timing_width; a frontier rung
    # spans its ladder's step, so the first plan timed inside it is taken)

    def __post_init__(self) -> None:
        self.modules = tuple(self.modules)
        unknown = [m for m in self.modules if m not in CONV_KINDS]
        if unknown:
            raise ConfigError(f"Unknown candidate module(s) {', '.join(unknown)}.", f"Use: {', '.join(CONV_KINDS)}.")
        if self.precision not in ("fp32", "int8"):
            raise ConfigError(f"--latency-precision {self.precision!r} is not timed.", "Use fp32 or int8.")
        whole(self.threads, "--latency-threads", low=1)
        whole(self.grid_points, "--rank-grid", low=2)
        one_of(self.cache, "--cache", known=("cold", "warm"))
        interval_width(self.timing_width, "--timing-width")
        positive(self.timing_cap_s, "--timing-cap", high=24 * 3600)
        positive(self.band, "the target's band", high=10.0, optional=True)
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
    MAC reduction (planners uniform, sensitivity). Neither given: a measured 4×. ``max_drop``: search the frontier
    (:mod:`mobilelwt.frontier`) for the fastest student within this many top-1 points of the teacher; a target
    given with it is then a floor ("at least X"), and none means no floor."""

    speedup: float | None = None
    mac_speedup: float | None = None
    max_drop: float | None = None
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
        if self.planner not in PLANNERS:
            raise ConfigError(f"Unknown planner {self.planner!r}.", f"Use one of: {', '.join(PLANNERS)}.")
        planner = PLANNERS.get(self.planner)
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
        non_negative(self.max_drop, "--max-drop", high=100.0, optional=True)
        default = None if self.max_drop is not None else 4.0  # a frontier search without a floor starts low
        if planner.measured:
            self.speedup = default if self.speedup is None else self.speedup
            ratio(self.speedup, "--speedup", optional=self.max_drop is not None)
        else:
            self.mac_speedup = default if self.mac_speedup is None else self.mac_speedup
            ratio(self.mac_speedup, "--mac-speedup", optional=self.max_drop is not None)
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
    def target(self) -> float | None:
        """The number the plan must meet: the measured speedup, or the MAC reduction (None: a frontier search
        without a floor)."""
        return self.speedup if self.measured else self.mac_speedup

    def aiming_at(self, target: float) -> CompressConfig:
        """This configuration planned for ``target`` (same kind of speedup), without a frontier search."""
        kind = "speedup" if self.measured else "mac_speedup"
        return replace(self, max_drop=None, **{kind: float(target)})


@dataclass
class CompressResult:
    out: Path
    plan: Plan
    metrics: dict[str, Any]
    student: nn.Module | None  # None on ranks other than 0 when a finished build was reused
    teacher: Teacher
    frontier: dict[str, Any] | None = None  # a --max-drop search: every point tried, and which was chosen


def _accuracy(model: nn.Module, data: DataBundle) -> dict[str, float]:
    result = evaluate_set(model, data, data.val, 128)
    return {"top1": result["top1"], "top5": result["top5"], "loss": result["loss"], "images": result["images"]}


def _last_epoch_accuracy(history: list[dict[str, Any]]) -> dict[str, float]:
    last = history[-1]
    return {"top1": last["val_top1"], "top5": last["val_top5"], "loss": last["val_loss"], "images": last["val_images"]}


def make_plan(
    teacher: Teacher,
    data: DataBundle,
    config: CompressConfig,
    on_progress: ProgressCallback = ignore_progress,
    *,
    latency_probe: LatencyProbeFactory | None = None,
    table_path: Path | None = None,
    memory: PlanMemory | None = None,
) -> Plan:
    """Run the configured planner; the latency planner needs ``latency_probe`` (see :func:`compress`);
    ``memory``: timings shared with the other plans of one search."""
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
        band=config.latency.band,
        memory=memory,
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
    return _keyed(base, config)


def _keyed(base: dict[str, Any], config: CompressConfig) -> dict[str, Any]:
    """The content hashes in ``base`` with ``config``'s settings and the stage and sub-stage keys."""
    settings = asdict(config)
    # a latency table's path is where timings are kept, not what a plan is made from (the device, runtime,
    # precision and threads it times on are keyed): a moved or copied build directory keeps its keys
    keyed = {**settings, "latency": {**settings["latency"], "table": settings["latency"]["table"] is not None}}
    planning = {k: v for k, v in keyed.items() if k not in ("layerwise", "finetune")}
    plan_key = digest({**base, "planning": planning})
    layerwise_key = digest({"plan": plan_key, "layerwise": settings["layerwise"]})
    return {**base, "settings": settings, "plan_key": plan_key, "layerwise_key": layerwise_key,
            "key": digest({**base, "settings": keyed})}  # fmt: skip


@dataclass
class CompressSession:
    """One compress call, opened: its inputs checked and loaded, what every stage reads."""

    model: str
    out: Path
    weights: str
    config: CompressConfig
    bundle: DataBundle
    teacher: Teacher
    inputs: dict[str, Any]
    settings: dict[str, Any]
    device: torch.device
    started: float
    _teacher_accuracy: dict[str, float] | None = None

    def teacher_accuracy(self) -> dict[str, float]:
        """The teacher's accuracy on the validation split (evaluated once per session)."""
        if self._teacher_accuracy is None:
            self._teacher_accuracy = _accuracy(self.teacher.model.to(self.device), self.bundle)
            self.teacher.model.cpu()
        return self._teacher_accuracy


@dataclass
class _Trained:
    """What the training stages produced: the student and its accuracy after each stage."""

    student: nn.Module
    accuracy: dict[str, dict[str, float]]  # teacher, closed_form, layerwise, final
    layers: dict[str, dict[str, Any]]  # layer-wise records by layer name
    history: list[dict[str, Any]]  # the fine-tune's epochs
    seconds: dict[str, float]


def compress(
    model: str,
    *,
    out: Path,
    weights: str = "none",
    run: RunSettings | None = None,
    config: CompressConfig | None = None,
    plan: Plan | None = None,
    latency_probe: LatencyProbeFactory | None = None,
    on_progress: ProgressCallback = ignore_progress,
) -> CompressResult:
    """Compress ``model`` into a student in ``out``; see the module docstring for the stages.

    ``run``: the data, its split and the machine (:class:`mobilelwt.settings.RunSettings`). ``latency_probe(
    config.latency) -> probe`` supplies the target the latency planners time on (``device_bench.probe.make_probe``);
    the core itself knows no runtime. ``plan`` replays a plan made elsewhere (say, timed on the target runtime on a
    laptop, trained on a GPU machine) instead of planning. Training runs on ``run.device``; planning, closed-form
    init and the saved files stay on the CPU.

    Freshness: a finished build whose recorded inputs (teacher weights, data, settings, replayed plan) equal
    this call's is returned as it is; otherwise its files and everything exported or measured from them are
    removed first, keeping only a plan or layer-wise progress whose own inputs still match.

    Under torchrun (``mobilelwt.distributed``) the ranks evaluate, train layer-wise and fine-tune data-parallel;
    rank 0 alone checks and writes the directory and plans; ``run.workers`` DataLoader processes per rank decode a
    set that is not held in memory. ``student`` is None on the other ranks of a build that was already finished.
    """
    session = open_session(model, Path(out), weights, run or RunSettings(), config or CompressConfig(), plan)
    return compress_opened(session, plan, latency_probe, on_progress)


def compress_opened(
    session: CompressSession,
    replayed: Plan | None = None,
    latency_probe: LatencyProbeFactory | None = None,
    on_progress: ProgressCallback = ignore_progress,
) -> CompressResult:
    """:func:`compress` on an opened session (the frontier search opens the teacher and data once for all its
    points)."""
    build_dir = BuildDir(session.out)
    state = on_main(lambda: _prepare(build_dir, session.inputs, replaying=replayed is not None),
                    "checking the build directory")  # fmt: skip
    if "reused" in state:
        reused_plan = Plan.from_dict(state["plan"])
        student = load_student_model(session.out, reused_plan) if world().is_main else None
        return CompressResult(session.out, reused_plan, state["reused"], student, session.teacher)
    on_progress(ProgressEvent("stages", 0, 5, {"stage": "evaluate teacher"}))
    teacher_accuracy = session.teacher_accuracy()
    on_progress(ProgressEvent("stages", 1, 5, {"stage": "plan"}))
    t0 = time.perf_counter()
    plan = _plan_stage(session, replayed, state["keep"], latency_probe, on_progress)
    plan_seconds = time.perf_counter() - t0
    trained = _train_stages(session, plan, on_progress)
    trained.accuracy["teacher"] = teacher_accuracy
    trained.seconds = {"plan": plan_seconds, **trained.seconds}
    on_progress(ProgressEvent("stages", 4, 5, {"stage": "save"}))
    metrics = _metrics(session, plan, trained)
    on_main(lambda: _save(session, trained.student, metrics, plan), "saving the student")
    on_progress(ProgressEvent("stages", 5, 5, {"stage": "done"}))
    return CompressResult(session.out, plan, metrics, trained.student, session.teacher)


def plan_opened(
    session: CompressSession,
    latency_probe: LatencyProbeFactory | None = None,
    on_progress: ProgressCallback = ignore_progress,
    memory: PlanMemory | None = None,
) -> Plan:
    """The plan :func:`compress_opened` would train, made (or kept) without training: plan.json is written and
    kept for the compress run that follows while its inputs hold. ``memory``: see :func:`make_plan`."""
    build_dir = BuildDir(session.out)
    state = on_main(lambda: _prepare(build_dir, session.inputs, replaying=False), "checking the build directory")
    if "reused" in state:
        return Plan.from_dict(state["plan"])
    return _plan_stage(session, None, state["keep"], latency_probe, on_progress, memory)


def finished_metrics(session: CompressSession) -> dict[str, Any] | None:
    """The metrics of a finished compress build in ``session.out`` made from exactly this session's inputs."""
    return _finished(BuildDir(session.out), session.inputs["key"])


def session_for(session: CompressSession, out: Path, config: CompressConfig) -> CompressSession:
    """The same teacher and data, another directory and configuration (one point of a search)."""
    # the teacher's and the data's hashes are the session's: hashed once, not once per point
    base = {k: session.inputs[k] for k in ("model", "teacher_sha256", "data", "input_size")}
    inputs = _keyed({**base, "replayed_plan": None}, config)
    settings = _settings(session.model, str(session.weights), session.bundle, config)
    return replace(session, out=Path(out), config=config, inputs=inputs, settings=settings, started=time.perf_counter())


def open_session(
    model: str, out: Path, weights: str, run: RunSettings, config: CompressConfig, plan: Plan | None = None
) -> CompressSession:
    """Check every option that can be checked before work, join the ranks, load the data and build the teacher."""
    out = check_writable_dir(out)
    model = check_model_options(model, run)
    _, device = init_distributed(resolve_device(run.device))
    rank_batch_size(config.layerwise.batch_size, "--layer-batch-size")
    rank_batch_size(config.finetune.batch_size, "--finetune-batch-size")
    if run.threads is not None:
        torch.set_num_threads(run.threads)
    started = time.perf_counter()
    bundle = load_data_for_weights(weights, run, seed=config.seed)
    bundle.use_loader(loader_settings(run.workers, device))
    teacher = build_teacher(
        model, num_classes=bundle.num_classes, weights=weights, input_size=bundle.input_size, seed=config.seed
    )
    if plan is not None:
        _check_replayable(plan, model, bundle.num_classes, bundle.input_size)
    return CompressSession(
        model=model,
        out=out,
        weights=weights,
        config=config,
        bundle=bundle,
        teacher=teacher,
        inputs=compress_inputs(model, teacher, bundle, config, plan),
        settings=_settings(model, str(weights), bundle, config),
        device=device,
        started=started,
    )


def _plan_stage(
    session: CompressSession,
    replayed: Plan | None,
    keep: list[str],
    latency_probe: LatencyProbeFactory | None,
    on_progress: ProgressCallback,
    memory: PlanMemory | None = None,
) -> Plan:
    """The replayed plan, a kept one whose inputs still match, or a new one (rank 0 plans; every rank gets it)."""
    plan_path = session.out / PLAN

    def planned() -> dict[str, Any]:  # rank 0: the planner may time candidates on a device, and writes plan.json
        chosen = replayed
        if chosen is None and PLAN in keep:
            chosen = Plan.load(plan_path)
        if chosen is None:
            chosen = make_plan(session.teacher, session.bundle, session.config, on_progress,
                               latency_probe=latency_probe, table_path=session.out / LATENCY_TABLE,
                               memory=memory)  # fmt: skip
        chosen.details["inputs_key"] = session.inputs["plan_key"]
        chosen.save(plan_path)
        return chosen.to_dict()

    return Plan.from_dict(on_main(planned, "planning"))


def _train_stages(session: CompressSession, plan: Plan, on_progress: ProgressCallback) -> _Trained:
    """Closed-form init, layer-wise training, distillation fine-tune; the student's accuracy after each."""
    config, bundle, device = session.config, session.bundle, session.device
    teacher = session.teacher.model
    # the closed-form init (SVDs) on rank 0 alone, handed to the others: N ranks of a node would run N at once
    student = apply_plan(teacher, plan, init=world().is_main).to(device)
    broadcast_module(student, "the closed-form init")
    teacher.to(device)
    state_dir, state_key = session.out / LAYERWISE, session.inputs["layerwise_key"]
    # a finished layer-wise stage (a frontier point's fine-tune after its estimate, a resumed build) was evaluated
    # when it finished: its accuracies are read back, not measured again on the whole validation split
    saved = on_main(lambda: _saved_layerwise_accuracy(state_dir, state_key), "reading the layer-wise stage")
    accuracy = {"closed_form": saved["closed_form"] if saved else _accuracy(student, bundle)}

    on_progress(ProgressEvent("stages", 2, 5, {"stage": "layer-wise training"}))
    t0 = time.perf_counter()
    layers = train_layerwise(teacher, student, list(plan.layers), bundle, config.layerwise,
                             state_dir=state_dir, state_key=state_key, on_progress=on_progress)  # fmt: skip
    seconds = {"layerwise": time.perf_counter() - t0}
    if saved and saved["layers"] == layers:  # every layer resumed as it was evaluated
        accuracy["layerwise"] = saved["layerwise"]
    else:
        trained = config.layerwise.epochs > 0
        accuracy["layerwise"] = _accuracy(student, bundle) if trained else accuracy["closed_form"]
        facts = {"key": state_key, "layers": layers, **accuracy}
        on_main(lambda: write_json(state_dir / LAYERWISE_ACCURACY, jsonable(facts)), "saving the layer-wise stage")

    on_progress(ProgressEvent("stages", 3, 5, {"stage": "distillation fine-tune"}))
    t0 = time.perf_counter()
    history = distill(student, teacher, bundle, config.finetune, on_progress=on_progress)
    seconds["finetune"] = time.perf_counter() - t0
    # the last epoch evaluated the final student on the validation split (the same batches): not measured twice
    accuracy["final"] = _last_epoch_accuracy(history) if history else accuracy["layerwise"]
    student.cpu()
    teacher.cpu()
    return _Trained(student, accuracy, layers, history, seconds)


def _metrics(session: CompressSession, plan: Plan, trained: _Trained) -> dict[str, Any]:
    """``metrics.json``: accuracy after every stage, MACs, the plan's target, per-layer records, facts of the run."""
    bundle, config, accuracy = session.bundle, session.config, trained.accuracy
    student_macs = count_macs(trained.student, bundle.input_size)
    teacher_macs = count_macs(session.teacher.model, bundle.input_size)
    return {
        "model": session.model,
        "input_size": bundle.input_size,
        "num_classes": bundle.num_classes,
        "classes": bundle.classes,
        "teacher": {
            **accuracy["teacher"],
            "macs": teacher_macs,
            "params": count_params(session.teacher.model),
            "weights": str(session.weights),
        },  # fmt: skip
        "student": {
            **accuracy["final"],
            "macs": student_macs,
            "params": count_params(trained.student),
            "closed_form": accuracy["closed_form"],
            "layerwise": accuracy["layerwise"],
            "finetune_history": trained.history,
        },
        "mac_speedup": teacher_macs / student_macs,
        "plan_target": plan_target(plan),
        "top1_drop": accuracy["teacher"]["top1"] - accuracy["final"]["top1"],
        "layers": {name: _layer_metrics(choice, trained.layers.get(name, {})) for name, choice in plan.layers.items()},
        "seconds": {**trained.seconds, "total": time.perf_counter() - session.started},
        "threads": torch.get_num_threads(),
        "device": str(session.device),
        "distributed": {
            **world().describe(),
            "global_batch": {"layerwise": config.layerwise.batch_size, "finetune": config.finetune.batch_size},
        },
        "data_loader": {**bundle.loader_facts(), **_throughput(trained.layers, trained.history)},
        "settings": jsonable(session.settings),
        "inputs": session.inputs,
    }


def _layer_metrics(choice: LayerChoice, record: dict[str, Any]) -> dict[str, Any]:
    """One replaced layer: its layer-wise record, module and MACs, and the latency planner's table times (the
    teacher layer's and this module's time alone on the target)."""
    timed = "predicted_ms" in choice.notes
    return {
        **record,
        "module": choice.module,
        **choice.params,
        "teacher_macs": choice.teacher_macs,
        "student_macs": choice.student_macs,
        **(
            {"predicted_teacher_ms": choice.notes["teacher_ms"], "predicted_ms": choice.notes["predicted_ms"]}
            if timed
            else {}
        ),  # fmt: skip
    }


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


def _save(session: CompressSession, student: nn.Module, metrics: dict[str, Any], plan: Plan) -> None:
    """Rank 0: the student, its metrics, and last the manifest (whose presence marks the stage finished)."""
    out, config, bundle, weights = session.out, session.config, session.bundle, session.weights
    with atomic_path(out / STUDENT) as tmp:
        torch.save(student.state_dict(), tmp)
    write_json(out / METRICS, metrics)
    write_json(
        out / MANIFEST,
        build_manifest(
            "compress",
            settings=jsonable(session.settings),
            seeds={
                "seed": config.seed,
                "split_seed": config.seed,
                "layerwise_seed": config.layerwise.seed,
                "finetune_seed": config.finetune.seed,
            },
            files=[out / name for name in (PLAN, STUDENT, METRICS)],
            teacher={
                "model": session.model,
                # absolute, so the build loads from any working directory
                "weights": str(Path(weights).resolve()) if Path(str(weights)).is_file() else str(weights),
                "num_classes": bundle.num_classes,
                "input_size": bundle.input_size,
                "classes": bundle.classes,
                "mean": list(bundle.mean),
                "std": list(bundle.std),
                "seed": config.seed,  # a random teacher (--weights none) is rebuilt from it
                "sha256": session.inputs["teacher_sha256"],
                "code": session.teacher.code,  # a user model's file and hash: later stages load exactly that code
            },
            inputs=session.inputs,
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
        "cache": d.get("cache"),  # the cache state it was timed in (warm or cold)
        "converged": d.get("converged"),
        "overshoot": d.get("overshoot"),  # no plan landed in the target's band: the nearest faster one was taken
        "band": d.get("band"),  # that band's width, as a share of the target
        "load": d.get("load"),
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


def _saved_layerwise_accuracy(state_dir: Path, layerwise_key: str) -> dict[str, Any] | None:
    """The accuracies (after the closed-form init and after layer-wise training) and layer records saved when a
    layer-wise stage of these inputs finished; None when there is none (or it is damaged or of other inputs)."""
    path = state_dir / LAYERWISE_ACCURACY
    try:
        saved = read_json(path) if path.is_file() else None
    except ValueError:
        return None
    wanted = ("closed_form", "layerwise", "layers")
    if not isinstance(saved, dict) or saved.get("key") != layerwise_key or not all(k in saved for k in wanted):
        return None
    return saved


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
