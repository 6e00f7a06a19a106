"""The latency planner: per-layer latency tables measured on the target, an accuracy-aware allocation, and a
whole-student check on the target that corrects the prediction until the *measured* speedup meets the target.

1. Table: every replaceable layer and each candidate (module kind × a grid of ranks, widths in multiples of 8) is
   lowered alone and timed on the target interleaved with the teacher layer (:mod:`mobilelwt.planners.table`).
2. Accuracy proxy: each candidate's closed-form reconstruction error on calibration images (teacher inputs),
   weighted by how much an error at that layer moves the logits (noise of known energy injected there).
3. Allocation: per layer one option (or the teacher layer) minimising the weighted error subject to the latency the
   table predicts (:func:`mobilelwt.planners.allocate.allocate`).
4. Check: the whole student is lowered as export lowers it and timed against the teacher by the one timing
   protocol (:mod:`device_bench.protocol`, through the probe); the prediction is corrected by what was measured
   and the allocation repeated until the interval meets the target: holds it, or lies above it but within the
   target's band. An overshoot is cut back, since speed beyond the target costs accuracy for nothing asked.
   Every layer's predicted latency and every round's measurement are recorded.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from mobilelwt.errors import ConfigError
from mobilelwt.hashing import digest, state_dict_sha256, tensor_sha256
from mobilelwt.layerwise import normalized_mse
from mobilelwt.modules import build_replacement
from mobilelwt.plan import Candidate, LayerChoice, Plan, allowed_kinds, apply_plan
from mobilelwt.planners._common import PlanningContext
from mobilelwt.planners._registry import PlanRequest, register_planner
from mobilelwt.planners.allocate import Option, allocate
from mobilelwt.planners.memory import PlanMemory
from mobilelwt.planners.reach import (
    MEETS,
    MISSES,
    OVERSHOOTS,
    band_of,
    first_meet_settles,
    judge,
    measure_confirmed,
    nothing_to_gain,
    rel_width_of,
)
from mobilelwt.planners.sensitivity import capture_io, rank_grid
from mobilelwt.planners.table import (
    LatencyProbe,
    LatencyTable,
    describe_device,
    entry_key,
    layer_signature,
    open_table,
)
from mobilelwt.progress import ProgressCallback, ProgressEvent, ignore_progress

MAX_MAC_SHARE = 0.5


def candidate_options(
    ctx: PlanningContext, candidate: Candidate, kinds: tuple[str, ...], grid_points: int
) -> list[tuple[str, dict[str, Any]]]:
    """(kind, params) of every candidate replacement of one layer: each allowed kind at ``grid_points`` ranks."""
    layer = ctx.layer(candidate)
    allowed = allowed_kinds(candidate, layer)
    wanted = [k for k in kinds if k in allowed] or ([ctx.kind_for(candidate)] if ctx.kind_for(candidate) else [])
    options = []
    for kind in wanted:
        # a replacement keeping over half a layer's MACs buys little time (the teacher layer itself is always an
        # option), and leaving those ranks out keeps the closed-form SVDs of big FC layers truncated and fast
        most = MAX_MAC_SHARE * candidate.macs
        ranks = [r for r in ctx.ranks(candidate, kind) if ctx.macs(candidate, kind, r) <= most]
        for rank in rank_grid(ranks, grid_points, geometric=True):
            options.append((kind, ctx.params(kind, rank)))
    return options


def measure_table(
    ctx: PlanningContext,
    layers: dict[str, list[tuple[str, dict[str, Any]]]],
    probe: LatencyProbe,
    table: LatencyTable,
    *,
    foreign: bool,
    save: Callable[[], None],
    on_progress: ProgressCallback,
) -> int:
    """Fill in the entries the table lacks, one layer at a time (saved after each); returns how many were timed."""
    by_name = {c.name: c for c in ctx.candidates}
    timed = 0
    for index, (name, options) in enumerate(layers.items()):
        candidate, layer = by_name[name], ctx.layer(by_name[name])
        signature = layer_signature(layer, candidate.input_shape)
        keys = {"teacher": entry_key(signature, "teacher")}
        keys.update({f"{k}:{p}": entry_key(signature, k, p) for k, p in options})
        missing = [label for label, key in keys.items() if key not in table.entries]
        if missing and foreign:
            raise ConfigError(
                f"The latency table from {describe_device(table.identity)} lacks {len(missing)} entries for layer "
                f"{name} of {ctx.model_name} at {ctx.input_size}² (it was measured for other layers or sizes).",
                "Measure the table on that device for this model and input size, then share it again.",
            )
        if missing:
            modules: dict[str, nn.Module] = {"teacher": layer}
            for kind, params in options:
                label = f"{kind}:{params}"
                if label in missing:
                    modules[label] = build_replacement(kind, layer, init=False, **params)
            measured = probe.time_modules(modules, (1, *candidate.input_shape), reference="teacher")
            for label, stats in measured.items():
                kind, params = ("teacher", {}) if label == "teacher" else _option_of(label, options)
                entry = {"layer": signature, "module": kind, "params": params, **stats}
                if label == "teacher":
                    entry.update(speedup=1.0, speedup_ci95=[1.0, 1.0])
                table.entries[keys[label]] = entry
            timed += len(measured)
            save()
        on_progress(ProgressEvent("latency table", index + 1, len(layers), {"layer": name, "timed": timed}))
    return timed


def _option_of(label: str, options: list[tuple[str, dict[str, Any]]]) -> tuple[str, dict[str, Any]]:
    return next((k, p) for k, p in options if f"{k}:{p}" == label)


def predicted_ms(table: LatencyTable, layer: nn.Module, candidate: Candidate, kind: str, params: dict) -> float:
    """A candidate's latency: the teacher layer's time over the candidate's speedup measured beside it."""
    signature = layer_signature(layer, candidate.input_shape)
    teacher = table.entries[entry_key(signature, "teacher")]["median_ms"]
    if kind == "teacher":
        return float(teacher)
    return float(teacher) / float(table.entries[entry_key(signature, kind, params)]["speedup"])


@torch.no_grad()
def output_sensitivity(
    model: nn.Module, names: list[str], images: torch.Tensor, noise: float = 0.1
) -> dict[str, float]:
    """How much each layer's error moves the logits: noise of relative energy ``noise²`` is added to the layer's
    output, and the normalised change of the logits is divided by it (about 1 for a layer whose error passes
    straight through, less where later layers absorb it)."""
    model.eval()
    clean = model(images)
    weights: dict[str, float] = {}
    generator = torch.Generator().manual_seed(0)
    for name in names:

        def perturb(_m, _inputs, output):
            scale = noise * output.pow(2).mean().sqrt()
            return output + scale * torch.randn(output.shape, generator=generator)

        handle = model.get_submodule(name).register_forward_hook(perturb)
        try:
            noisy = model(images)
        finally:
            handle.remove()
        weights[name] = float(normalized_mse(noisy, clean)) / noise**2
    return weights


@torch.no_grad()
def proxy_costs(
    ctx: PlanningContext,
    layers: dict[str, list[tuple[str, dict[str, Any]]]],
    calibration: torch.Tensor,
    *,
    weight_images: int = 8,
    on_progress: ProgressCallback = ignore_progress,
) -> tuple[dict[str, dict[str, float]], dict[str, float]]:
    """Closed-form reconstruction error of every option on ``calibration`` (teacher inputs), and each layer's
    output-sensitivity weight."""
    names = list(layers)
    weights = output_sensitivity(ctx.model, names, calibration[:weight_images])
    io = capture_io(ctx.model, names, calibration)
    errors: dict[str, dict[str, float]] = {}
    for index, name in enumerate(names):
        x, y = io.pop(name)
        layer = ctx.model.get_submodule(name)
        errors[name] = {}
        # largest rank first: the truncated SVD is computed once and every smaller rank reuses its prefix
        for kind, params in sorted(layers[name], key=lambda option: -option[1]["rank"]):
            module = build_replacement(kind, layer, init=True, **params).eval()
            errors[name][f"{kind}:{params}"] = float(normalized_mse(module(x), y))
        on_progress(ProgressEvent("accuracy proxy", index + 1, len(names), {"layer": name}))
    return errors, weights


@dataclass
class _Allocator:
    """The per-layer options of one planning run (table time and weighted proxy error each), and what turns a
    goal into a plan: the most accurate allocation the table predicts to run ``goal`` times faster."""

    ctx: PlanningContext
    speedup: float
    by_name: dict[str, Candidate]
    options: dict[str, list[Option]]
    errors: dict[str, dict[str, float]]
    weights: dict[str, float]
    teacher_layer_ms: dict[str, float]

    @property
    def replaceable_ms(self) -> float:
        return sum(self.teacher_layer_ms.values())

    def plan_for(self, goal: float, rest: float, *, fastest: bool = False) -> tuple[Plan, float] | None:
        """The allocation predicted to run ``goal`` times faster than the teacher, in table units: the replaceable
        layers' own times plus ``rest``, the time of everything else (kept layers, activations, overheads).
        ``fastest``: every layer at its fastest option instead. Returns the plan and its predicted speedup."""
        if fastest:
            chosen = {name: min(opts, key=lambda o: o.ms) for name, opts in self.options.items()}
        else:
            chosen = allocate(self.options, (self.replaceable_ms + rest) / goal - rest)
        if chosen is None:
            return None
        layer_choices = {}
        for name, option in chosen.items():
            if option.choice is None:
                continue
            kind, params = option.choice
            layer_choices[name] = _choice(self.ctx, self.by_name[name], kind, params, option,
                                          self.teacher_layer_ms[name], self.errors[name][f"{kind}:{params}"],
                                          self.weights[name])  # fmt: skip
        student_ms = rest + sum(option.ms for option in chosen.values())
        return self.ctx.plan("latency", self.speedup, layer_choices), (self.replaceable_ms + rest) / student_ms

    def predicted(self, plan: Plan, rest: float) -> float:
        """The speedup the table predicts for ``plan`` under ``rest``."""
        return (self.replaceable_ms + rest) / (self.student_layers_ms(plan) + rest)

    def student_layers_ms(self, plan: Plan) -> float:
        """The table's time of ``plan``'s layers (replaced and kept alike)."""
        replaced = sum(c.notes["predicted_ms"] for c in plan.layers.values())
        return replaced + sum(ms for name, ms in self.teacher_layer_ms.items() if name not in plan.layers)


def plan_measured(
    ctx: PlanningContext,
    speedup: float,
    calibration: torch.Tensor,
    *,
    probe: LatencyProbe,
    table_path: Path,
    shared_table: Path | None = None,
    allow_foreign_table: bool = False,
    kinds: tuple[str, ...] = (),
    grid_points: int = 8,
    max_rounds: int = 8,
    band: float | None = None,
    memory: PlanMemory | None = None,
    on_progress: ProgressCallback = ignore_progress,
) -> Plan:
    """The most accurate plan (by the proxy) whose measured speedup on ``probe`` meets ``speedup``: its interval
    holds the target or lies above it, but not above the target's band (``band``: its width as a share of the
    target, by default the timing width; a wider band takes the first plan in it); see the module docstring.
    ``memory``: timings and the rest shared with the other plans of one search (read and extended)."""
    if speedup <= 1.0:
        raise ConfigError(f"--speedup must be above 1, got {speedup}.", "Pass e.g. --speedup 4.")
    candidates = [c for c in ctx.candidates if ctx.kind_for(c)]
    layers = {c.name: candidate_options(ctx, c, kinds, grid_points) for c in candidates}
    layers = {name: options for name, options in layers.items() if options}
    if not layers:  # no replacement cuts even half of any layer's MACs
        raise nothing_to_gain(ctx, speedup, probe, [])

    table, foreign = open_table(probe, table_path, shared_table, allow_foreign=allow_foreign_table,
                                on_progress=on_progress)  # fmt: skip

    def save() -> None:
        table.save(table_path)
        if shared_table is not None and not foreign:
            table.save(shared_table)

    timed = measure_table(ctx, layers, probe, table, foreign=foreign, save=save, on_progress=on_progress)
    save()
    allocator = _allocator(ctx, speedup, candidates, layers, table, calibration, on_progress, memory)
    kept_ms, kept_timed = time_kept_layers(ctx, set(layers), probe, table, foreign=foreign, save=save)
    details: dict[str, Any] = {
        "target": "measured speedup",
        "probe": probe.description,
        "device": table.identity,
        "context": table.context,
        "table": {
            "path": str(shared_table or table_path),
            "entries": len(table.entries),
            "timed_now": timed + kept_timed,
            "foreign": foreign,
        },  # fmt: skip
        "kinds": sorted({k for opts in layers.values() for k, _ in opts}),
        "grid_points": grid_points,
        "calibration_images": len(calibration),
        "layer_weights": allocator.weights,
        "replaceable_ms": allocator.replaceable_ms,
        "kept_layers_ms": kept_ms,
    }
    if foreign:  # nothing can be timed on that device from here: the plan is the table's prediction
        return _foreign_plan(ctx, speedup, allocator.plan_for, kept_ms, details, table)
    # The first guess of the rest: the kept layers' time, but never more than half the whole teacher (one busy
    # moment can inflate a single small timing).
    # a search's later targets are its own business: only its first out-of-reach answer names the time holders
    holders = memory is None or not memory.timings
    if memory is not None and memory.rest_ms is not None:
        rest = memory.rest_ms  # what the last plan of this search learnt about the rest
    else:
        rest = min(kept_ms, 0.5 * probe.layer(ctx.model, (1, 3, ctx.input_size, ctx.input_size)))
    best, rounds = _search(allocator, probe, rest, max_rounds=max_rounds, band=band, memory=memory,
                           on_progress=on_progress)  # fmt: skip
    if best is None:
        raise nothing_to_gain(ctx, speedup, probe, rounds, next((r for r in rounds if r.get("fastest")), None),
                              holders=holders)  # fmt: skip
    plan, record = best
    # the independent timing (when it was confirmed): the more recent, and no better chosen than the first
    final = record["confirmation"] or record
    plan.details.update(details, rounds=rounds, teacher_ms=final["teacher_ms"], student_ms=final["student_ms"],
                        measured_speedup=final["speedup"], measured_ci95=final["speedup_ci95"],
                        cache=final.get("cache"), converged=final.get("converged"), load=final.get("load"),
                        first_measurement={"speedup": record["speedup"], "ci95": record["speedup_ci95"]},
                        predicted_speedup=record["predicted_speedup"], verified=True,
                        overshoot=record["overshoot"], band=band_of(probe, band))  # fmt: skip
    return plan


def _allocator(
    ctx: PlanningContext,
    speedup: float,
    candidates: list[Candidate],
    layers: dict[str, list[tuple[str, dict[str, Any]]]],
    table: LatencyTable,
    calibration: torch.Tensor,
    on_progress: ProgressCallback,
    memory: PlanMemory | None = None,
) -> _Allocator:
    """Each layer's options: the teacher layer itself (no error) and every candidate with its table time and its
    closed-form error weighted by how much that layer's error moves the logits (computed once per ``memory``)."""
    by_name = {c.name: c for c in candidates}

    def compute() -> tuple[dict[str, dict[str, float]], dict[str, float]]:
        return proxy_costs(ctx, layers, calibration, on_progress=on_progress)

    errors, weights = compute() if memory is None else memory.proxy(proxy_key(ctx, layers, calibration), compute)
    options: dict[str, list[Option]] = {}
    teacher_layer_ms: dict[str, float] = {}
    for name, layer_options in layers.items():
        candidate, layer = by_name[name], ctx.layer(by_name[name])
        teacher_layer_ms[name] = predicted_ms(table, layer, candidate, "teacher", {})
        options[name] = [Option(0.0, teacher_layer_ms[name], None)] + [
            Option(weights[name] * errors[name][f"{k}:{p}"], predicted_ms(table, layer, candidate, k, p), (k, p))
            for k, p in layer_options
        ]
    return _Allocator(ctx, speedup, by_name, options, errors, weights, teacher_layer_ms)


def proxy_key(
    ctx: PlanningContext, layers: dict[str, list[tuple[str, dict[str, Any]]]], calibration: torch.Tensor
) -> str:
    """What the accuracy proxy is computed from, by content: the teacher's weights, every layer's options and the
    calibration images (the target is not among them: every rung of a search shares one proxy)."""
    return digest({"teacher": state_dict_sha256(ctx.model), "layers": layers,
                   "calibration": tensor_sha256(calibration)})  # fmt: skip


def _measure_round(
    allocator: _Allocator, probe: LatencyProbe, plan: Plan, predicted: float, band: float, **facts: Any
) -> dict[str, Any]:
    """One whole-student timing (confirmed when it meets the target), recorded with what was predicted."""
    ctx, speedup = allocator.ctx, allocator.speedup
    student = apply_plan(ctx.model, plan, init=False)
    shape = (1, 3, ctx.input_size, ctx.input_size)
    first, confirmation, verdict = measure_confirmed(probe, ctx.model, student, shape, speedup, band)
    return {
        **facts,
        "feasible": True,
        "mac_speedup": plan.mac_speedup,
        "predicted_speedup": predicted,
        "predicted_student_ms": (allocator.replaceable_ms + facts["rest_ms"]) / predicted,
        **first,
        "confirmation": confirmation,
        "verdict": verdict,
        "accepted": verdict == MEETS,
        "correction": predicted / first["speedup"],  # prediction over measurement: 1 is a perfect table
        "proxy_cost": sum(c.notes["weighted_error"] for c in plan.layers.values()),
    }


def _search(
    allocator: _Allocator,
    probe: LatencyProbe,
    rest: float,
    *,
    max_rounds: int,
    band: float | None = None,
    memory: PlanMemory | None = None,
    on_progress: ProgressCallback,
) -> tuple[tuple[Plan, dict[str, Any]] | None, list[dict[str, Any]]]:
    """Allocate, time the whole student, correct the estimate of the rest, and allocate again, until a plan's
    interval meets the target: holds it or lies above it, but not above the target's band. An overshoot is cut
    back (less compression, more accuracy); after a plan that meets the target with room to spare, cheaper plans
    are tried. Returns the most accurate plan that met it (else the nearest overshoot, marked as such) and the
    rounds.

    Each measurement says what the rest really is: a student predicted from layer times L_t (teacher) and L_s
    (student) that measures M = (L_t + R) / (L_s + R) has R = (L_t - M L_s) / (M - 1). Ratios only: the scale of
    the table and of whole-network runs may differ. Once plans on both sides of the target are known, the rest is
    frozen and the goal bisected between them: under one rest, a higher goal never gives a cheaper plan, so the
    plans that border the target are found without timing any plan twice."""
    speedup, replaceable_ms = allocator.speedup, allocator.replaceable_ms
    width, settles = band_of(probe, band), first_meet_settles(probe, band)
    # the median a little above the target, its interval then holds the target; a wide band aims there too, since
    # the slower end of a rung is the more accurate one
    aim = speedup * (1 + rel_width_of(probe) / 2)
    goal, rounds, frozen = aim, [], False
    best: tuple[float, Plan, dict] | None = None
    nearest_over: tuple[float, Plan, dict] | None = None
    seen: dict[str, tuple[Plan, dict[str, Any]]] = {}  # a plan already timed is not timed again (the grid is discrete)
    goal_below, goal_above = 1.0, math.inf  # goals known, under the current rest, to give too slow / too fast plans

    def faster_than_needed(record: dict[str, Any]) -> bool:
        low = (record["confirmation"] or record)["speedup_ci95"][0]
        return record["verdict"] == OVERSHOOTS or (record["verdict"] == MEETS and low >= aim and not settles)

    if settles and memory is not None:  # a rung takes the first plan inside its band: one may be timed already
        known = _known_inside(allocator, probe, memory, speedup, width, rest)
        if known is not None:
            plan, record = known
            seen[_plan_key(plan)] = known
            rounds.append(record)
            if record["verdict"] == MEETS:
                memory.rest_ms = rest
                return (plan, {**record, "overshoot": False}), rounds
    for _ in range(6 * max_rounds):
        changed = False
        found = allocator.plan_for(goal, rest)
        if found is None and not seen:
            # the table alone says no; a measurement of the fastest allocation says how far off that is
            found = allocator.plan_for(1.0 + 1e-9, rest, fastest=True)
        elif found is None:
            rounds.append({"goal": goal, "rest_ms": rest, "feasible": False})
            goal_above = min(goal_above, goal)
            goal = math.sqrt(goal_below * goal_above)
            continue
        plan, predicted_now = found
        key = _plan_key(plan)
        repeated = key in seen
        if not repeated:
            if len(seen) >= max_rounds:
                break
            record = _recalled(memory, key, speedup, width, goal=goal, rest_ms=rest, predicted_speedup=predicted_now)
            if record is None:
                record = _measure_round(allocator, probe, plan, predicted_now, width, goal=goal, rest_ms=rest)
                if memory is not None:
                    memory.remember(key, plan, record)
            seen[key] = (plan, record)
            rounds.append(record)
        record = seen[key][1]
        verdict, ratio = record["verdict"], (record["confirmation"] or record)["speedup"]
        on_progress(ProgressEvent("latency plan", len(seen), max_rounds, {"measured": ratio, "verdict": verdict}))
        if not repeated:
            if verdict == MEETS and (best is None or record["proxy_cost"] < best[0]):
                best = (record["proxy_cost"], plan, record)
            elif verdict == OVERSHOOTS and (nearest_over is None or ratio < nearest_over[2]["speedup"]):
                nearest_over = (record["proxy_cost"], plan, record)
            if verdict == MEETS and not faster_than_needed(record):
                break  # the interval reaches down to the target: a cheaper plan would miss
            if not frozen and ratio > 1.0 + 1e-6:
                student_layers = allocator.student_layers_ms(plan)
                corrected = (replaceable_ms - ratio * student_layers) / (ratio - 1.0)
                # a rest below minus half the student's layers is no overhead the table missed: the layers
                # themselves run faster in the network than alone, and no one rest explains every plan; then the
                # goal is scaled by the measurement instead
                changed = corrected >= -0.5 * student_layers and abs(corrected - rest) > 0.02 * (replaceable_ms + rest)
                if changed:
                    goal_below, goal_above = 1.0, math.inf  # goals under another rest say nothing under this one
                    rest = corrected
        measured = [r for _, r in seen.values()]
        if not frozen and any(r["verdict"] == MISSES for r in measured) and any(map(faster_than_needed, measured)):
            frozen, goal_below, goal_above = True, 1.0, math.inf  # from now on one rest: bisect between the plans
        elif not changed:  # this goal's plan misses, or is faster than needed: so is every goal beyond it
            if verdict == MISSES:
                goal_below = max(goal_below, goal)
            else:
                goal_above = min(goal_above, goal)
        below, above = goal_below, goal_above
        if frozen:  # under the frozen rest the plans timed bound the goals too: their predictions are comparable
            below = max([below] + [allocator.predicted(p, rest) for p, r in seen.values() if r["verdict"] == MISSES])
            above = min([above] + [allocator.predicted(p, rest) for p, r in seen.values() if faster_than_needed(r)])
        if above <= below * 1.002:
            break  # no plan lies between the fastest that misses and the slowest that is too fast
        if frozen or repeated:
            step = math.sqrt(below * above) if above < math.inf else max(goal, below) * 1.1
        elif changed:  # the corrected rest makes the table predict this plan right: aim at the target again
            step = aim
        else:  # scale the goal by what the measurement missed or overshot it by
            step = goal * aim / ratio
        goal = step if below < step < above else math.sqrt(below * min(above, 4 * below))
    if memory is not None:
        memory.rest_ms = rest
    if best is None and nearest_over is None and seen:
        # the search never met it: the fastest allocation is the last word (it may still, by a little)
        plan, predicted_now = allocator.plan_for(1.0 + 1e-9, rest, fastest=True)
        record = _measure_round(allocator, probe, plan, predicted_now, width, goal=math.inf, rest_ms=rest,
                                fastest=True)  # fmt: skip
        rounds.append(record)
        if record["verdict"] == MEETS:
            best = (record["proxy_cost"], plan, record)
        elif record["verdict"] == OVERSHOOTS:
            nearest_over = (record["proxy_cost"], plan, record)
    chosen = best or nearest_over
    if chosen is None:
        return None, rounds
    chosen[2]["overshoot"] = best is None  # no plan landed in the target's band: the nearest faster one, said so
    return (chosen[1], chosen[2]), rounds


def _plan_key(plan: Plan) -> str:
    return digest({name: [c.module, c.params] for name, c in plan.layers.items()})


def _known_inside(
    allocator: _Allocator, probe: LatencyProbe, memory: PlanMemory, speedup: float, band: float, rest: float
) -> tuple[Plan, dict[str, Any]] | None:
    """The most accurate plan this search already timed in the lower quarter of the target's band (where a new
    plan would be aimed: the band's upper end costs accuracy), confirmed (by one more timing when it had none): the
    plan and its record, judged against this target."""

    def low_in_band(record: dict[str, Any]) -> bool:
        counted = record["confirmation"] or record
        return counted["speedup"] <= speedup * (1 + band / 4) and judge(counted["speedup_ci95"], speedup, band) == MEETS

    found = memory.most_accurate(low_in_band)
    if found is None:
        return None
    key, timed, known = found
    ctx = allocator.ctx
    plan = ctx.plan("latency", speedup, dict(timed.layers))  # the same layers, planned for this target
    confirmation, verdict = known["confirmation"], MEETS
    if confirmation is None:
        student = apply_plan(ctx.model, plan, init=False)
        confirmation = probe.compare(ctx.model, student, (1, 3, ctx.input_size, ctx.input_size), target=speedup)
        verdict = judge(confirmation["speedup_ci95"], speedup, band)
    record = _reused(memory, {**known, "confirmation": confirmation}, verdict, goal=speedup, rest_ms=rest,
                     predicted_speedup=allocator.predicted(plan, rest))  # fmt: skip
    memory.remember(key, plan, record)
    return plan, record


def _recalled(memory: PlanMemory | None, key: str, speedup: float, band: float, **facts: Any) -> dict[str, Any] | None:
    """A plan timed earlier in this search, judged against this target, when its timing decides without a new one:
    it misses or overshoots, or it meets and was confirmed by a second timing (as a new one must be)."""
    known = memory.recall(key) if memory is not None else None
    if known is None:
        return None
    counted = known["confirmation"] or known
    verdict = judge(counted["speedup_ci95"], speedup, band)
    if verdict == MEETS and known["confirmation"] is None:
        return None
    return _reused(memory, known, verdict, **facts)


def _reused(memory: PlanMemory, known: dict[str, Any], verdict: str, **facts: Any) -> dict[str, Any]:
    """A remembered round's timing, recorded as a round of this target (its facts, its verdict), and counted."""
    memory.reused += 1
    return {**known, **facts, "verdict": verdict, "accepted": verdict == MEETS, "reused": True,
            "correction": facts["predicted_speedup"] / known["speedup"]}  # fmt: skip


def time_kept_layers(
    ctx: PlanningContext, replaced: set[str], probe: LatencyProbe, table: LatencyTable, *, foreign: bool,
    save: Callable[[], None],
) -> tuple[float, int]:  # fmt: skip
    """The conv/linear layers no plan replaces (first conv, head, grouped ones), timed alone into the table."""
    total, timed = 0.0, 0
    for layer in ctx.all_layers():
        if layer.name in replaced:
            continue
        module = ctx.layer(layer)
        signature = layer_signature(module, layer.input_shape)
        key = entry_key(signature, "teacher")
        if key not in table.entries:
            if foreign:
                continue  # counted as 0 ms: that device's table does not hold it
            stats = probe.time_modules({"teacher": module}, (1, *layer.input_shape), reference="teacher")["teacher"]
            table.entries[key] = {"layer": signature, "module": "teacher",
                                  "params": {}, **stats, "speedup": 1.0, "speedup_ci95": [1.0, 1.0]}  # fmt: skip
            timed += 1
            save()
        total += float(table.entries[key]["median_ms"])
    return total, timed


def _choice(
    ctx: PlanningContext,
    candidate: Candidate,
    kind: str,
    params: dict[str, Any],
    option: Option,
    teacher_ms: float,
    error: float,
    weight: float,
) -> LayerChoice:
    return LayerChoice(
        module=kind,
        params=params,
        teacher_macs=candidate.macs,
        student_macs=ctx.macs(candidate, kind, params["rank"]),
        notes={
            "teacher_ms": teacher_ms,
            "predicted_ms": option.ms,
            "predicted_speedup": teacher_ms / option.ms if option.ms else math.nan,
            "closed_form_error": error,
            "weight": weight,
            "weighted_error": option.cost,
        },
    )


def _foreign_plan(ctx, speedup, plan_for, kept_ms, details, table) -> Plan:
    """With a table from another device the plan meets the target by prediction only, and says so."""
    found = plan_for(speedup, kept_ms)
    if found is None:
        raise ConfigError(
            f"By the table from {describe_device(table.identity)}, a {speedup}× speedup is out of reach for "
            f"{ctx.model_name} even with every layer at its smallest candidate.",
            "Ask for less --speedup.",
        )
    plan, predicted = found
    plan.details.update(
        details,
        verified=False,
        predicted_speedup=predicted,
        note=f"predicted from a table measured on {describe_device(table.identity)} (layer times "
        "summed, activations and overheads not counted); not timed on that device from here",
    )
    return plan  # fmt: skip


@register_planner(
    "latency", measured=True, summary="per-layer latency tables, an accuracy-aware allocation, whole-student checks"
)
def _latency(request: PlanRequest) -> Plan:
    return plan_measured(
        request.ctx,
        request.speedup,
        request.calibration(),
        probe=request.latency_probe(),
        table_path=request.table_path,
        shared_table=request.shared_table,
        allow_foreign_table=request.allow_foreign_table,
        kinds=request.kinds,
        grid_points=request.grid_points,
        band=request.band,
        memory=request.memory,
        on_progress=request.on_progress,
    )
