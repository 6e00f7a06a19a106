"""The frontier: the fastest student within an accuracy budget (``--max-drop``), and the trade-off curve.

A search over a ladder of speedup targets, each point one compress build in ``DIR/frontier/x<target>``:

1. **Estimate**, climbing the ladder: plan the point (measured on the latency target, by the same timing
   protocol as every other speedup) and train it layer-wise, without the fine-tune. Its accuracy after layer-wise
   training ranks the candidates. A rung is a sample of the curve, not a user's target: any plan measured between
   it and the next rung meets it, so the first plan timed there is taken. While the estimates are comfortably
   within the budget the climb skips every other rung; the first estimate that is not (or a rung out of reach)
   sends it back to fill the rung it skipped, and from there it climbs rung by rung. The climb stops where the
   estimate's drop is hopeless, where the planner cannot go faster, or at the ladder's end.
2. **Full training** where the budget is decided: starting at the fastest point whose estimate the fine-tune may
   bring within the budget (at most ``Ladder.recoverable`` points past it), fine-tune (the layer-wise stage is
   reused as it is: same plan, same settings), then climb while the fine-tuned point stays within the budget and
   step down while it does not (estimating a skipped rung first), so that the chosen point and the next faster one
   are both fully trained, unless that faster one's estimate is hopeless: it misses as it is, with no fine-tune.
3. **Between**: where that faster point misses the budget and runs far faster (a rung's band is wide, and the
   planner may jump across the knee), points between the two are planned (where the line through their estimates
   crosses what a fine-tune recovers), estimated and fine-tuned (unless the estimate is hopeless), narrowing the
   bracket to where the accuracy falls off.
4. **Choose** the fastest fully trained point within the budget (and at least the ``--speedup`` floor) and
   install it as the build's student: export, bench and report read it as any other. A build hands the search a
   ``choose`` hook that exports the fine-tuned points and times their files side by side
   (``device_bench.frontier.files_choice``): then the fastest *file* within the budget is chosen, since the
   planner's in-process timing of the plans and the files' timings can disagree.

Everything is keyed like the compress stage: a point whose teacher, data or settings changed is redone; a point
already finished is reused, so a second search with another budget trains nothing it already has. The ladder's
latency table is shared by all points. ``frontier.json`` records every point tried.
"""

from __future__ import annotations

import math
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from mobilelwt.builddir import (
    FRONTIER,
    FRONTIER_BENCH,
    FRONTIER_DIR,
    LATENCY_TABLE,
    MANIFEST,
    METRICS,
    PLAN,
    STUDENT,
    BuildDir,
    chosen_point,
)
from mobilelwt.compress import (
    CompressConfig,
    CompressResult,
    CompressSession,
    LatencyProbeFactory,
    compress,
    compress_opened,
    finished_metrics,
    open_session,
    plan_opened,
    session_for,
)
from mobilelwt.distributed import on_main, world
from mobilelwt.errors import ConfigError, OutOfReachError
from mobilelwt.hashing import digest
from mobilelwt.io import atomic_path, read_json, write_json
from mobilelwt.loading import load_student_model
from mobilelwt.plan import Plan
from mobilelwt.planners import PlanMemory
from mobilelwt.progress import ProgressCallback, ProgressEvent, ignore_progress
from mobilelwt.settings import RunSettings

FRONTIER_FORMAT = "mobilelwt.frontier/1"
# Raise when the search's rules change (which points it trains, where the bracket starts): a frontier.json chosen
# under other rules is then searched again. Its points stay keyed by their own inputs and are reused as they are.
# 2: the bracket starts at the fastest recoverable estimate; 3: a hopeless estimate bounds it; 4: a point between
# is aimed where the estimates cross what a fine-tune recovers, not halfway; 5: the fine-tune cap no longer stops
# a step down that has found no point within the budget yet
SEARCH_RULES = 5
OUT_OF_REACH = "out-of-reach.json"  # a point whose target no plan meets (so a second search does not time it again)
LONGER_FROM = "longer-from.json"  # what the fine-tune a longer distillation replaced had lost, and its key


@dataclass(frozen=True)
class Ladder:
    """The speedup targets a search climbs: ``start`` × ``step``ᵏ, at most ``points`` of them; ``max_full`` caps
    the fine-tunes; ``gallop`` skips every other rung while the estimates are comfortable; a fine-tuned point that
    misses the budget by at most ``recoverable`` points is distilled again ``longer`` times as long (1: never), and
    the fine-tunes start at the fastest point whose estimate is at most that far past the budget."""

    start: float = 1.5
    step: float = 1.5
    points: int = 10  # up to 57×: the climb ends sooner, where the estimate is hopeless or out of reach
    max_full: int = 4
    gallop: bool = True
    # measured at 17-20x on AlexNet/digits (bench/frontier_recipes.py): twice the distillation lowered the KL from
    # the teacher on 9 of 9 (point, seed) pairs and recovered up to 1.7 points; at 11x it changed nothing
    longer: int = 2
    recoverable: float = 2.0
    # between the chosen point and a faster one that misses the budget, at least ``gap`` times faster, up to
    # ``between`` points are tried halfway (a rung's band is wide: the planner can jump from 12x to 21x, AlexNet 64²)
    between: int = 2
    gap: float = 1.3

    def targets(self, floor: float | None) -> list[float]:
        first = floor if floor is not None else self.start
        return [round(first * self.step**k, 2) for k in range(self.points)]

    @property
    def band(self) -> float:
        """A rung's band: from its target up to the next rung's."""
        return self.step - 1.0


def comfortable(estimate_drop: float, max_drop: float) -> bool:
    """An estimate so far inside the budget that the rung above it is worth skipping (the fill-in comes back for
    it once an estimate is not)."""
    return estimate_drop <= 0.5 * max_drop


def hopeless(estimate_drop: float, max_drop: float) -> bool:
    """An estimate (layer-wise, before the fine-tune) so far past the budget that no fine-tune brings it back:
    measured, the fine-tune recovers a few points, never tens."""
    return estimate_drop > 2 * max_drop + 3.0


def recoverable(estimate_drop: float, max_drop: float, ladder: Ladder) -> bool:
    """A drop a fine-tune (or, after one, a longer distillation) may bring within the budget: at most
    ``ladder.recoverable`` points past it (measured, the fine-tune recovers one to three points)."""
    return estimate_drop <= max_drop + ladder.recoverable


def check_not_replaying(config: CompressConfig, plan: Plan | None) -> None:
    """A replayed plan and a frontier search exclude each other (checked before any work)."""
    if config.max_drop is not None and plan is not None:
        raise ConfigError("--plan replays one plan; --max-drop searches for one.", "Pass one of them.")


def make_student(
    model: str,
    *,
    out: Path,
    weights: str = "none",
    run: RunSettings | None = None,
    config: CompressConfig,
    plan: Plan | None = None,
    latency_probe: LatencyProbeFactory | None = None,
    choose: ChooseHook | None = None,
    on_progress: ProgressCallback = ignore_progress,
) -> CompressResult:
    """The build's student: the fastest within ``config.max_drop`` (:func:`search_frontier`, which hands its
    points to ``choose`` when given) when a budget is given, else one :func:`mobilelwt.compress.compress` (which
    replays ``plan`` when given)."""
    if config.max_drop is None:
        return compress(model, out=out, weights=weights, run=run, config=config, plan=plan,
                        latency_probe=latency_probe, on_progress=on_progress)  # fmt: skip
    check_not_replaying(config, plan)
    return search_frontier(model, out=out, weights=weights, run=run, config=config, latency_probe=latency_probe,
                           choose=choose, on_progress=on_progress)  # fmt: skip


def search_frontier(
    model: str,
    *,
    out: Path,
    weights: str = "none",
    run: RunSettings | None = None,
    config: CompressConfig,
    latency_probe: LatencyProbeFactory | None = None,
    ladder: Ladder | None = None,
    choose: ChooseHook | None = None,
    on_progress: ProgressCallback = ignore_progress,
) -> CompressResult:
    """The fastest student within ``config.max_drop`` top-1 points of the teacher (at least ``config.target``
    when one is given), installed as the build's student in ``out``; ``result.frontier`` holds every point.

    With ``choose``, the search's record is handed to it (on rank 0) before the install, and the point it returns
    (:func:`with_choice`) is the one installed: a build's hook times the points' exported files.

    Raises :class:`ConfigError` (after writing ``frontier.json``) when no student tried meets the budget."""
    if config.max_drop is None:
        raise ConfigError("A frontier search needs --max-drop.", "Pass --max-drop D (top-1 points).")
    ladder = ladder or Ladder()
    out = Path(out)
    session = open_session(model, out, weights, run or RunSettings(), config)
    if config.latency.table is None and config.measured:  # one table for every point of the ladder
        on_main(lambda: out.mkdir(parents=True, exist_ok=True), "creating the build directory")
        config = replace(config, latency=replace(config.latency, table=str((out / LATENCY_TABLE).resolve())))
        session = session_for(session, out, config)
    session.teacher_accuracy()  # once, for every point
    search = _Search(session, ladder, latency_probe, on_progress)
    cached = on_main(lambda: search.cached(files=choose is not None), "reading the frontier")
    if cached is not None:
        return search.result(cached)
    record = search.run()
    if choose is not None and record["chosen"] is not None:
        choice = on_main(lambda: choose(out, record), "timing the frontier's files")
        record = with_choice(record, choice)
    on_main(lambda: search.install(record), "installing the chosen student")
    if record["chosen"] is None:
        raise ConfigError(record["why"], record["fix"])
    return search.result(record)


class _Search:
    def __init__(
        self,
        session: CompressSession,
        ladder: Ladder,
        latency_probe: LatencyProbeFactory | None,
        on_progress: ProgressCallback,
    ) -> None:
        self.session, self.ladder, self.probe, self.on_progress = session, ladder, latency_probe, on_progress
        self.config = session.config
        self.max_drop: float = self.config.max_drop
        self.floor = self.config.target  # None: no floor
        self.build_dir = BuildDir(session.out)
        # the session's key: teacher, data and settings (a latency table's place excluded: a moved directory holds)
        self.key = digest({"inputs": session.inputs["key"], "ladder": ladder.__dict__, "rules": SEARCH_RULES})
        self.points: dict[float, dict[str, Any]] = {}
        self.targets: list[float] = []
        self.bands: dict[float, float] = {}  # a point between two others: its own band (a rung's is the ladder's)
        self.memory = PlanMemory()  # the rungs' timings and the planner's estimate of the rest, shared
        self.started = time.perf_counter()
        # where the search's time goes (the cost goal is wall time): planning, layer-wise estimates, fine-tunes
        self.phase_seconds = {"planning": 0.0, "estimates": 0.0, "fine_tunes": 0.0}

    def _timed(self, phase: str, work: Callable[[], Any]) -> Any:
        started = time.perf_counter()
        try:
            return work()
        finally:
            self.phase_seconds[phase] += time.perf_counter() - started

    # -- the points ------------------------------------------------------------------------------------------
    def point_session(self, target: float, *, full: bool, longer: bool = False) -> CompressSession:
        """A rung's compress session: the estimate (layer-wise only), the fine-tune, or the longer fine-tune of a
        point that missed the budget. All three share the directory, the plan and the layer-wise stage."""
        config = self.config.aiming_at(target)
        if config.measured:  # a rung, not a user's target: any speedup up to the next rung's meets it
            band = self.bands.get(target, self.ladder.band)
            config = replace(config, latency=replace(config.latency, band=band))
        if not full:  # the estimate: layer-wise only; the fine-tune that follows reuses its layer-wise stage
            config = replace(config, finetune=replace(config.finetune, epochs=0))
        elif longer:
            config = replace(
                config, finetune=replace(config.finetune, epochs=config.finetune.epochs * self.ladder.longer)
            )
        return session_for(self.session, self.session.out / FRONTIER_DIR / f"x{target:g}", config)

    def estimate(self, target: float) -> dict[str, Any]:
        """Plan the point and train it layer-wise (or read a point already trained that far, or further)."""
        quick = self.point_session(target, full=False)
        for session, longer in self._trained_sessions(target):  # the furthest-trained first: a directory holds one
            done = on_main(lambda session=session: finished_metrics(session), "reading a frontier point")
            if done is not None and (not longer or self._lengthened_here(target)):
                plan = Plan.from_dict(read_json(session.out / PLAN))
                return self._record(target, session.out, plan, done)
        marker = quick.out / OUT_OF_REACH
        known = on_main(lambda: read_json(marker) if marker.is_file() else None, "reading a frontier point")
        if known is not None and known.get("plan_key") == quick.inputs["plan_key"]:  # planned before: no need again
            raise OutOfReachError(known["problem"], known["fix"], reachable=known["reachable"])
        try:
            plan = self._timed("planning", lambda: plan_opened(quick, self.probe, self.on_progress, self.memory))
        except OutOfReachError as exc:
            facts = {"plan_key": quick.inputs["plan_key"], "problem": exc.problem, "fix": exc.fix,
                     "reachable": exc.reachable}  # fmt: skip
            on_main(lambda: write_json(marker, facts), "recording a frontier point")
            raise
        twin = self._same_plan(plan)
        if twin is not None:  # the planner chose a plan already on the ladder: the same student
            return {"target": target, "same_as": twin["target"], "plan_digest": _plan_digest(plan)}
        result = self._timed("estimates", lambda: compress_opened(quick, None, self.probe, self.on_progress))
        return self._record(target, quick.out, result.plan, result.metrics)

    def _trained_sessions(self, target: float) -> list[tuple[CompressSession, bool]]:
        """(session, longer) of the finished results a rung's directory may hold, the longest-trained first."""
        sessions = [(self.point_session(target, full=False), False)]
        if self.config.finetune.epochs > 0:
            sessions.insert(0, (self.point_session(target, full=True), False))
            if self.ladder.longer > 1:
                sessions.insert(0, (self.point_session(target, full=True, longer=True), True))
        return sessions

    def _lengthened_here(self, target: float) -> bool:
        """Whether this search, with its budget, would have distilled the rung longer: the fine-tune the longer one
        replaced (same inputs) missed this budget narrowly. Otherwise a fresh search would show that fine-tune, so
        the longer result is not shown (the rung is fine-tuned again)."""
        fine_tune = self.point_session(target, full=True)
        path = fine_tune.out / LONGER_FROM
        replaced = on_main(lambda: read_json(path) if path.is_file() else None, "reading a frontier point")
        if not replaced or replaced.get("compress_key") != fine_tune.inputs["key"]:
            return False
        base = self.config.finetune.epochs
        return self._worth_longer({"trained": "fine-tuned", "finetune_epochs": base, "drop": replaced["drop"]})

    def train_fully(self, target: float, *, longer: bool = False) -> dict[str, Any]:
        session = self.point_session(target, full=True, longer=longer)
        if longer:  # what it replaces, so that a later search with another budget can tell whether it applies
            replaced = self.points[target]
            facts = {"drop": replaced["drop"], "compress_key": replaced["compress_key"]}
            on_main(lambda: write_json(session.out / LONGER_FROM, facts), "recording a frontier point")
        result = self._timed("fine_tunes", lambda: compress_opened(session, None, self.probe, self.on_progress))
        return self._record(target, result.out, result.plan, result.metrics)

    def _worth_longer(self, point: dict[str, Any]) -> bool:
        """A fine-tuned point that misses the budget by no more than a longer distillation was measured to
        recover, and was not distilled longer yet."""
        base = self.config.finetune.epochs
        return (
            self.ladder.longer > 1
            and base > 0
            and point["trained"] == "fine-tuned"
            and point.get("finetune_epochs", base) == base
            and not self._within(point)
            and recoverable(point["drop"], self.max_drop, self.ladder)
        )

    def _same_plan(self, plan: Plan) -> dict[str, Any] | None:
        found = _plan_digest(plan)
        return next((p for p in self.points.values() if p.get("plan_digest") == found and "same_as" not in p), None)

    def _record(self, target: float, out: Path, plan: Plan, metrics: dict[str, Any]) -> dict[str, Any]:
        planned = metrics.get("plan_target") or {}
        measured = self.config.measured
        student, teacher = metrics["student"], metrics["teacher"]
        full = bool(student.get("finetune_history")) or self.config.finetune.epochs == 0
        layerwise = student.get("layerwise") or student
        return {
            "target": target,
            "dir": str(out.relative_to(self.session.out)),
            "plan_digest": _plan_digest(plan),
            # a plan from another device's table (--allow-foreign-table) was predicted, not timed: it says so
            "speedup": (planned.get("measured_speedup") or planned.get("predicted_speedup"))
            if measured
            else metrics["mac_speedup"],
            "speedup_ci95": planned.get("measured_ci95") if measured else None,
            "speedup_kind": "measured speedup" if measured else "MAC reduction",
            "timed": bool(measured and planned.get("measured_speedup") is not None),
            "cache": planned.get("cache"),
            "converged": planned.get("converged"),
            "overshoot": planned.get("overshoot"),
            "mac_speedup": metrics["mac_speedup"],
            "top1": student["top1"],
            "top5": student["top5"],
            "drop": teacher["top1"] - student["top1"],
            "top5_drop": teacher["top5"] - student["top5"],
            "estimate_top1": layerwise["top1"],
            "estimate_drop": teacher["top1"] - layerwise["top1"],
            "trained": "fine-tuned" if full else "layer-wise only",
            "finetune_epochs": metrics["settings"]["compress"]["finetune"]["epochs"],
            "longer_distillation": full
            and metrics["settings"]["compress"]["finetune"]["epochs"] > self.config.finetune.epochs,
            "compress_key": metrics["inputs"]["key"],
            "images": student.get("images"),
            "modules": sorted({layer["module"] for layer in metrics["layers"].values()}),
            "seconds": metrics["seconds"].get("total"),
        }

    # -- the search ------------------------------------------------------------------------------------------
    def run(self) -> dict[str, Any]:
        targets = self.targets = self.ladder.targets(self.floor)
        end_reason = "the ladder's end"
        index, stride = 0, 2 if self.ladder.gallop else 1
        while index < len(targets):
            target = targets[index]
            info = {"point": f"{target:g}×", "phase": "estimate"}
            self.on_progress(ProgressEvent("frontier", index, len(targets), info))
            try:
                point = self.points.get(target) or self.estimate(target)
            except OutOfReachError as exc:
                if self._skipped_below(index, stride):  # fill the skipped rung before ending the climb
                    index, stride = index - 1, 1
                    continue
                end_reason = f"{target:g}× is out of reach"
                edge = math.floor((exc.reachable or 0.0) * 100) / 100
                fastest = max((p.get("speedup") or 1.0 for p in self.points.values()), default=1.0)
                if edge > 1.02 * fastest and edge < target and self.floor is None and edge not in self.points:
                    targets = self.targets = [*targets[:index], edge]  # the last point: the most it can reach
                    continue
                if not self.points:  # not even the first rung: say it was the search that asked, not the user
                    raise OutOfReachError(
                        f"The --max-drop search has no student to try: its first rung, {target:g}×, is out of reach. "
                        f"{exc.problem}",
                        "Keep the teacher for this target, or try another --conv-module, runtime or --compress-fc"
                        if self.floor is None
                        else f"Lower --speedup below {target:g}, or drop it.",
                        reachable=exc.reachable,
                    ) from None
                break
            self.points[target] = point
            settled = "same_as" in point or comfortable(point["estimate_drop"], self.max_drop)
            if not settled and self._skipped_below(index, stride):
                index, stride = index - 1, 1  # the estimate is no longer comfortable: fill the rung skipped below
                continue
            if "same_as" not in point and hopeless(point["estimate_drop"], self.max_drop):
                end_reason = f"the estimate at {target:g}× lost {point['estimate_drop']:.1f} points"
                break
            if not settled:
                stride = 1
            # a gallop that would jump past the ladder's end lands on its last rung
            index = min(index + stride, len(targets) - 1) if index < len(targets) - 1 else len(targets)
        self._train_bracket()
        self._bisect()
        return self._frontier_record(end_reason)

    def _skipped_below(self, index: int, stride: int) -> bool:
        """The rung below ``index`` was jumped over by the gallop and not estimated yet."""
        return stride > 1 and index > 0 and self.targets[index - 1] not in self.points

    def _ordered(self) -> list[dict[str, Any]]:
        real = [p for p in self.points.values() if "same_as" not in p]
        return sorted(real, key=lambda p: (p["speedup"], p["target"]))

    def _within(self, point: dict[str, Any]) -> bool:
        return within_budget(point, self.max_drop)

    def _train_bracket(self) -> None:
        """Fine-tune from the fastest point whose estimate is recoverable, climbing while the fine-tuned points stay
        within it and stepping down while they do not (``ladder.max_full`` fine-tunes cap the climb; a step down goes on
        until a point is within the budget, or none is left). A step down first
        estimates the rungs the gallop skipped below, so the two points that bracket the budget are neighbours."""
        ordered = self._ordered()
        if not ordered:
            return
        # the fine-tune recovers points (CIFAR-10 AlexNet 64²: estimates of 1.7 and 3.3 points ended at 0.0 and 0.7),
        # so the climb starts at the fastest estimate it may recover from; one that misses steps down to the slower
        # point a start within the budget would have trained anyway, so the choice costs a fine-tune only rarely
        promising = [i for i, p in enumerate(ordered) if recoverable(p["estimate_drop"], self.max_drop, self.ladder)]
        index = promising[-1] if promising else 0
        step = None
        fine_tunes = 0
        while 0 <= index < len(ordered):
            point = ordered[index]
            if point["trained"] != "fine-tuned":
                if step == 1 and hopeless(point["estimate_drop"], self.max_drop):
                    # climbing into an estimate no fine-tune brings back (CIFAR-10 AlexNet 64²: 6.04 points before
                    # its fine-tune, 3.26 after; 47.7, then 18.5): it misses the budget as it is, so it bounds the
                    # bracket without a fine-tune (the points between are bisected)
                    break
                if fine_tunes >= self.ladder.max_full and step != -1:
                    # the cap bounds the climb, not the finding of an answer: a search whose fine-tunes (longer
                    # ones included) all missed steps down until one is within the budget (tinynet/digits on an
                    # AMD EPYC: 3.64x and 3.41x missed by one image after the longer distillation, and the cap
                    # left a search with a 2.66x estimate that lost nothing answering "no student")
                    break
                self.on_progress(ProgressEvent("frontier", index, len(ordered),
                                               {"point": f"{point['target']:g}×", "phase": "fine-tune"}))  # fmt: skip
                point = self.train_fully(point["target"])
                self.points[point["target"]] = point
                ordered[index] = point
                fine_tunes += 1
            if self._worth_longer(point) and fine_tunes < self.ladder.max_full:
                # where the drop is largest: a longer distillation moved the curve there (Ladder.longer)
                info = {"point": f"{point['target']:g}×", "phase": "longer fine-tune"}
                self.on_progress(ProgressEvent("frontier", index, len(ordered), info))
                point = self.train_fully(point["target"], longer=True)
                self.points[point["target"]] = point
                ordered[index] = point
                fine_tunes += 1
            direction = 1 if self._within(point) else -1
            if step is not None and direction != step:
                break  # both sides of the budget are fully trained
            step = direction
            if direction < 0 and self._fill_below(point):
                ordered = self._ordered()
                index = next(i for i, p in enumerate(ordered) if p["target"] == point["target"])
            index += direction

    def _fill_below(self, point: dict[str, Any]) -> bool:
        """Estimate the rungs between ``point`` and the next slower point tried; True when any was added."""
        slower = [p["target"] for p in self._ordered() if p["target"] < point["target"]]
        gap = [t for t in self.targets if max(slower, default=0.0) < t < point["target"] and t not in self.points]
        for target in gap:
            self.on_progress(ProgressEvent("frontier", 0, 1, {"point": f"{target:g}×", "phase": "estimate"}))
            try:
                self.points[target] = self.estimate(target)
            except OutOfReachError:
                continue
        return bool(gap)

    def _gap(self) -> tuple[dict[str, Any], dict[str, Any]] | None:
        """The fastest fine-tuned point within the budget and the next faster point tried, when that one is known to
        miss the budget (fine-tuned, or hopeless before its fine-tune) and is at least ``ladder.gap`` times faster:
        the curve between them, where the knee lies, is unknown."""
        ordered = self._ordered()
        within = [p for p in ordered if p["trained"] == "fine-tuned" and self._within(p)]
        if not within:
            return None
        low = within[-1]
        high = next((p for p in ordered if p["speedup"] > low["speedup"]), None)
        if high is None or high["speedup"] < self.ladder.gap * low["speedup"]:
            return None
        misses = high["trained"] == "fine-tuned" and not self._within(high)
        return (low, high) if misses or hopeless(high["estimate_drop"], self.max_drop) else None

    def _bisect(self) -> None:
        """Try points between the chosen point and a far faster one that misses the budget (aimed by :meth:`_aim`), at
        most ``ladder.between`` of them: each is estimated, and fine-tuned unless its estimate is hopeless, so the
        new bracket is trained as the ladder's is. Ends where the planner has no plan between the two."""
        for _ in range(self.ladder.between):
            gap = self._gap()
            if gap is None:
                return
            low, high = gap
            ratio = high["speedup"] / low["speedup"]
            target = round(low["speedup"] * ratio ** self._aim(low, high), 2)
            if target in self.points:
                return
            # a plan from the aim up to a quarter of the gap (in log speedup) further (from ¾: up to the faster point)
            self.bands[target] = ratio**0.25 - 1.0
            between = {"between": [low["target"], high["target"]]}
            self.on_progress(ProgressEvent("frontier", 0, 1, {"point": f"{target:g}×", "phase": "between"}))
            try:
                point = {**self.estimate(target), **between}
            except OutOfReachError:
                return
            self.points[target] = point
            if "same_as" in point:
                return  # the planner chose the plan of a point already tried: it has nothing between them
            if point["trained"] != "fine-tuned" and not hopeless(point["estimate_drop"], self.max_drop):
                info = {"point": f"{target:g}×", "phase": "fine-tune"}
                self.on_progress(ProgressEvent("frontier", 0, 1, info))
                point = self.points[target] = {**self.train_fully(target), **between}
            if self._worth_longer(point):
                self.on_progress(
                    ProgressEvent("frontier", 0, 1, {"point": f"{target:g}×", "phase": "longer fine-tune"})
                )
                self.points[target] = {**self.train_fully(target, longer=True), **between}

    def _aim(self, low: dict[str, Any], high: dict[str, Any]) -> float:
        """Where in the gap (0: ``low``, 1: ``high``, in log speedup) the next point is planned: where the line
        through the two estimates crosses the drop a fine-tune brings back to the budget, a quarter to three
        quarters of the way; halfway when the estimates do not say (the faster one is not past that drop).

        The drop grows ever faster past the knee (CIFAR-10 AlexNet 64²: estimates of 1.0 at 9.25×, 9.6 at 14.48×,
        30.6 at 15.90×), so halfway lands past it when the faster side is far gone, and the point is spent."""
        level = self.max_drop + 0.5 * self.ladder.recoverable
        slow, fast = low["estimate_drop"], high["estimate_drop"]
        if fast <= level or fast <= slow:
            return 0.5
        return min(0.75, max(0.25, (level - slow) / (fast - slow)))

    def _frontier_record(self, end_reason: str) -> dict[str, Any]:
        ordered = self._ordered()
        candidates = [p for p in ordered if p["trained"] == "fine-tuned" and self._within(p)
                      and (self.floor is None or _reaches(p, self.floor))]  # fmt: skip
        chosen = candidates[-1] if candidates else None
        teacher = self.session.teacher_accuracy()
        record: dict[str, Any] = {
            "format": FRONTIER_FORMAT,
            "key": self.key,
            "model": self.session.model,
            "input_size": self.session.bundle.input_size,
            "max_drop": self.max_drop,
            "floor": self.floor,
            "speedup_kind": "measured speedup" if self.config.measured else "MAC reduction",
            "latency": {
                k: getattr(self.config.latency, k) for k in ("runtime", "device", "precision", "threads", "cache")
            },  # fmt: skip
            "teacher": {"top1": teacher["top1"], "top5": teacher["top5"], "images": teacher["images"]},
            "ladder": self.ladder.__dict__,
            "points": [*ordered, *(p for p in self.points.values() if "same_as" in p)],
            "stopped": end_reason,
            "chosen": chosen["target"] if chosen else None,
            "choice": {"files": False},  # by the planner's timings; a build's hook may choose by the files'
            "seconds": time.perf_counter() - self.started,
            # this search's whole-student timings: plans timed, and rounds answered from them instead of timed
            "seconds_by_phase": dict(self.phase_seconds),
            "planning": {
                "plans_timed": len(self.memory.timings),
                "timings_reused": self.memory.reused,
                "proxies_reused": self.memory.proxies_reused,
            },  # fmt: skip
        }
        record.update(self._why(chosen, ordered, end_reason))
        return record

    def _why(self, chosen: dict[str, Any] | None, ordered: list[dict[str, Any]], stopped: str) -> dict[str, str]:
        return explain(ordered, chosen, max_drop=self.max_drop, floor=self.floor, stopped=stopped)

    # -- reuse and install -----------------------------------------------------------------------------------
    def cached(self, *, files: bool) -> dict[str, Any] | None:
        """A frontier of exactly these inputs, chosen the same way (by the files' timings or the planner's), whose
        chosen student is the build's student now."""
        try:
            record = self.build_dir.frontier()  # None unless the build's student is the point it chose
            if record is None or (record.get("key"), record["max_drop"], record["floor"]) != (
                self.key, self.max_drop, self.floor
            ) or (record.get("choice") or {}).get("files", False) != files:  # fmt: skip
                return None
            self.build_dir.check_student(self.build_dir.manifest())
        except (KeyError, ConfigError):
            return None
        return record

    def install(self, record: dict[str, Any]) -> None:
        """The chosen point's files become the build's student (downstream stages kept only if it is unchanged);
        frontier.json is written last."""
        out = self.session.out
        chosen = chosen_point(record)
        try:
            current = self.build_dir.manifest()["inputs"].get("key") if self.build_dir.is_compressed() else None
        except ConfigError:
            current = None
        if chosen is None or current != chosen["compress_key"]:
            # the table and the points' file timings are keyed by what they measured: reused or redone on their own
            self.build_dir.invalidate("compress", keep=(LATENCY_TABLE, FRONTIER_BENCH))
        if chosen is not None and current != chosen["compress_key"]:
            source = out / chosen["dir"]
            for name in (PLAN, STUDENT, METRICS, MANIFEST):  # the manifest last: its presence marks the stage done
                with atomic_path(out / name) as tmp:
                    shutil.copyfile(source / name, tmp)
        write_json(out / FRONTIER, record)

    def result(self, record: dict[str, Any]) -> CompressResult:
        out = self.session.out
        plan = Plan.from_dict(read_json(out / PLAN))
        metrics = read_json(out / METRICS)
        student = load_student_model(out, plan) if world().is_main else None
        return CompressResult(out, plan, metrics, student, self.session.teacher, frontier=record)


ChooseHook = Callable[[Path, dict[str, Any]], dict[str, Any]]
"""``(build_dir, frontier record) -> choice``: ``{"files": True, "chosen", "planner_chose", "reason", "speeds"}``
(``speeds``: ``{f"{target:g}": [speedup, ci95]}`` for the points whose files were timed)."""


def with_choice(record: dict[str, Any], choice: dict[str, Any]) -> dict[str, Any]:
    """``record`` with the point ``choice`` names as chosen, and the sentence quoting every point at the speed the
    choice used (its file's, where timed)."""
    speeds = choice.get("speeds") or {}

    def speed(point: dict[str, Any]) -> tuple[float, list[float] | None]:
        timed = speeds.get(f"{point['target']:g}")
        return (timed[0], timed[1]) if timed else planned_speed(point)

    updated = {**record, "chosen": choice["chosen"],
               "choice": {k: choice.get(k) for k in ("files", "planner_chose", "reason")}}  # fmt: skip
    real = [p for p in record["points"] if "same_as" not in p]
    chosen = next((p for p in real if p["target"] == choice["chosen"]), None)
    why = explain(real, chosen, max_drop=record["max_drop"], floor=record.get("floor"),
                  stopped=record.get("stopped", ""), speed=speed)  # fmt: skip
    updated.update(why=choice_sentence(why["why"], updated), fix=why["fix"])
    return updated


def choice_sentence(why: str, record: dict[str, Any]) -> str:
    """``why`` with how the point was chosen, when the files chose it."""
    choice = record.get("choice") or {}
    return f"{why}; chosen on the points' files timed side by side: {choice['reason']}" if choice.get("files") else why


def training_words(point: dict[str, Any]) -> str:
    """How far a point was trained, in words: layer-wise only, fine-tuned, or fine-tuned with a longer
    distillation (a point that missed the budget by little)."""
    if point.get("longer_distillation"):
        return f"fine-tuned, distilled longer ({point['finetune_epochs']} epochs)"
    return point["trained"]


def within_budget(point: dict[str, Any], max_drop: float) -> bool:
    """The point's top-1 drop is at most the budget (a float's last bit never rejects a point exactly on it)."""
    return point["drop"] <= max_drop + 1e-9


def planned_speed(point: dict[str, Any]) -> tuple[float, list[float] | None]:
    """A point's speedup as the search measured it (the planner's timing of what export will produce)."""
    return point["speedup"], point.get("speedup_ci95")


def explain(
    ordered: list[dict[str, Any]],
    chosen: dict[str, Any] | None,
    *,
    max_drop: float,
    floor: float | None,
    stopped: str,
    speed: Callable[[dict[str, Any]], tuple[float, list[float] | None]] = planned_speed,
) -> dict[str, str]:
    """Why the search chose ``chosen`` (or nothing, and what to change), quoting each point at ``speed`` (the
    report passes the files' speedups once the build has timed them: one number per point)."""

    def within(point: dict[str, Any]) -> bool:
        return within_budget(point, max_drop)

    def said(point: dict[str, Any]) -> str:
        value, ci = speed(point)
        return f"{value:.2f}×" + (f" (95% CI {ci[0]:.2f}–{ci[1]:.2f})" if ci else "")

    budget = f"within {max_drop:g} points"
    if chosen is not None:
        faster = sorted((p for p in ordered if speed(p)[0] > speed(chosen)[0]), key=lambda p: speed(p)[0])
        # the files' timings may rank a fine-tuned point within the budget above the one the planner's chose
        overtaking = [p for p in faster if p["trained"] == "fine-tuned" and within(p)]
        missing = [p for p in faster if p not in overtaking]
        beyond = (f"; the next faster point tried, {said(missing[0])}, lost {missing[0]['drop']:.2f}"
                  f"{'' if missing[0]['trained'] == 'fine-tuned' else ' before its fine-tune'}"
                  if missing else f"; nothing faster was tried ({stopped})")  # fmt: skip
        if overtaking:
            # reached only where the speeds come from two timing runs (the report: the shipped file's own bench, the
            # other points' files side by side), never within one: say so rather than contradict the choice
            best = overtaking[-1]
            beyond += (
                f"; the {best['target']:g}× point's file timed {said(best)}, top-1 {_change(best['drop'])} points, "
                "in another run (the points' files side by side; this file's figure is the build's own bench)"
            )
        return {"why": f"the fastest student {budget}: {said(chosen)}, top-1 {_change(chosen['drop'])} points"
                       f"{beyond}", "fix": ""}  # fmt: skip
    trained = [p for p in ordered if p["trained"] == "fine-tuned"]
    if not trained:
        return {"why": f"No student {budget} was fully trained.", "fix": "Allow a larger --max-drop."}
    best = min(trained, key=lambda p: p["drop"])
    if floor is not None and any(within(p) for p in trained):
        return {
            "why": f"No student reaches {floor:g}× {budget}: the fastest within it runs "
                   f"{said(max((p for p in trained if within(p)), key=lambda p: speed(p)[0]))}.",
            "fix": "Lower --speedup, or allow a larger --max-drop.",
        }  # fmt: skip
    return {
        "why": f"No student {budget}: the most accurate one tried, {said(best)}, lost {best['drop']:.2f} points.",
        "fix": f"Allow --max-drop {math.ceil(best['drop'] * 10) / 10:g} or more"
               f"{', or lower --speedup' if floor is not None else ''} (or train longer: --layer-epochs, "
               "--finetune-epochs).",
    }  # fmt: skip


def _plan_digest(plan: Plan) -> str:
    return digest(plan.to_dict()["layers"])


def _reaches(point: dict[str, Any], floor: float) -> bool:
    """At least the floor: the measured interval reaches it (a MAC reduction is exact)."""
    ci = point.get("speedup_ci95")
    return (ci[1] if ci else point["speedup"]) >= floor


def _change(drop: float) -> str:
    """A top-1 change in points, signed, never "-0.00"."""
    return f"{-drop + 0.0:+.2f}"
