"""The one timing protocol: every latency or speedup that is decided on or printed is measured here.

Models run interleaved (every batch runs each model in turn, so drift hits all alike) in a stated cache state
(:data:`~device_bench.timing.WARM` or :data:`~device_bench.timing.COLD`), after warm-up, batch after batch, until
the bootstrap 95 % interval of every model's speedup over the reference is within ``±rel_width`` of the ratio, or
the time cap is hit. Batches during which other processes used the CPU (:mod:`device_bench.load`) do not count
and the run is extended; a measurement that could not get enough quiet batches says so (``load.quiet`` false).
So do batches taken while the machine ran at another speed, which ``/proc`` cannot see (other tenants of a shared
host taking memory bandwidth): the reference is the same program in every batch, so a batch whose reference median
lies more than 20 % from the prevalent state's is set aside (``state`` in the record; a machine that never held
one speed long enough counts every batch and says so). A caller that times the same reference again (a planner's
rounds, a search's rungs) passes the reference's earlier batches as ``history``: the prevalent state is then judged
over them too, so that a whole timing taken while the machine ran at another speed waits for the earlier speed
(until the cap) instead of deciding a round in another state than its neighbours.

The record keeps what a reader needs to trust the number: the cache state, the batches, how long it ran, whether
it converged (and why it stopped), the interval, and the load.
"""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

from device_bench.load import BUSY_CORES, LoadMeter, prevalent_state
from device_bench.stats import speedup_ci
from device_bench.timing import CACHE_STATES, COLD, WARM, CacheFlusher, calls_per_block, interleaved_round

Batch = Callable[[], dict[str, list[float]]]

CONVERGED, DECIDED, CAPPED = "converged", "decided", "time cap"
# the version of what counts and when the protocol stops: every record and table keyed by a policy's description
# is measured again when it changes (2: batches and processes at another machine speed are set aside; 3: judged
# over the same reference's earlier batches too, where the caller keeps them; 4: a verdict looked for
# as the batches grow by a tenth, not after every batch)
PROTOCOL_RULES = 4
# A verdict is looked for each time the quiet batches grew by this share (every batch while there are fewer than
# ten). Its bootstrap costs time in proportion to the samples so far: looked for after every batch, a capped 60 s
# timing of a synthetic 90 ms batch (a cold AlexNet-64² pair's size) spent 31 s of its 60 s bootstrapping.
LOOK_GROWTH = 1.1


@dataclass(frozen=True)
class TimingPolicy:
    """How a speedup is measured. ``rel_width``: the 95 % interval of the ratio must lie within ±this share of it;
    ``max_seconds``: the cap on one measurement; ``min_batches``: quiet batches before any decision."""

    cache: str = COLD
    rel_width: float = 0.05
    max_seconds: float = 60.0
    min_batches: int = 3
    warmup: int = 3
    min_block_ms: float = 20.0
    busy_cores: float = BUSY_CORES
    processes: int = 1  # exported files: timed in this many fresh processes (device_bench.apart); 1: in this one

    def __post_init__(self) -> None:
        if self.cache not in CACHE_STATES:
            raise ValueError(f"cache must be one of {CACHE_STATES}, got {self.cache!r}")
        if self.processes < 1:
            raise ValueError(f"processes must be at least 1, got {self.processes}")

    def with_cache(self, cache: str) -> TimingPolicy:
        return TimingPolicy(**{**asdict(self), "cache": cache})

    def describe(self) -> dict[str, Any]:
        """The policy and the protocol's rules: what keys every timing made with it."""
        return {**asdict(self), "rules": PROTOCOL_RULES}


def _ratio(reference: list[float], values: list[float]) -> float:
    return statistics.median(reference) / statistics.median(values)


def _within(ratio: float, interval: tuple[float, float], rel_width: float) -> bool:
    low, high = interval
    return ratio > 0 and low >= ratio * (1 - rel_width) and high <= ratio * (1 + rel_width)


def _clear_of(target: float, interval: tuple[float, float], rel_width: float) -> bool:
    """The interval lies wholly below the target or wholly above its tolerance band: the verdict cannot change."""
    low, high = interval
    return high < target or low > target * (1 + rel_width)


def measure_ratios(
    batch: Batch,
    *,
    reference: str,
    policy: TimingPolicy,
    target: float | None = None,
    meter: LoadMeter | None = None,
    clock: Callable[[], float] = time.monotonic,
    history: list[float] | None = None,
) -> dict[str, Any]:
    """Run ``batch`` (one interleaved round of every model, ms per call) until every speedup over ``reference``
    is known within ``±policy.rel_width``, or (with ``target``) its interval clears the target's band while at
    most twice that wide, or ``policy.max_seconds`` have passed. Returns the measurement record.

    ``history``: the reference's median per quiet batch in earlier timings of the same program (same input, cache
    state and threads), which the machine state is judged over as well; this run's quiet batches are appended."""
    meter = meter or LoadMeter()
    earlier = list(history or [])
    started = clock()
    quiet: list[dict[str, list[float]]] = []
    loaded: list[dict[str, list[float]]] = []
    load_seen: list[float] = []
    stopped = CAPPED
    next_look = 1
    while True:
        mark = meter.start()
        got = batch()
        load = meter.stop(mark)
        if load.other_cores is not None:
            load_seen.append(load.other_cores)
        (loaded if load.busy(policy.busy_cores) else quiet).append(got)
        # the cap counts once the minimum number of batches has run
        capped = clock() - started >= policy.max_seconds and len(quiet) + len(loaded) >= policy.min_batches
        if len(quiet) >= next_look or capped:  # at the cap, one last look: a narrow interval is "converged"
            next_look = max(len(quiet) + 1, math.ceil(len(quiet) * LOOK_GROWTH))
            steady = [quiet[i] for i in _steady(quiet, reference, earlier)]
            if len(steady) >= policy.min_batches:
                verdict = _verdict(_merged(steady), reference, policy, target)
                if verdict is not None:
                    stopped = verdict
                    break
        if capped:
            break
    # too few quiet batches by the cap: every batch counts, and the record says the number was taken under load
    under_load = len(quiet) < min(policy.min_batches, 2)
    counted = quiet + loaded if under_load else quiet
    members = _steady(counted, reference, earlier)
    # (nearly) the whole run at another speed than the earlier timings of this reference, up to the cap: the machine
    # changed for longer than one timing waits, so the run stands on its own batches (and the record says so)
    apart_from_history = bool(earlier) and len(members) < min(policy.min_batches, 2) and len(counted) > len(members)
    if apart_from_history:
        members = _steady(counted, reference)
    # the machine kept changing speed: no state held long enough to stand alone, so every batch counts (and the
    # record says so, as it says a number was taken under load)
    changing = len(members) < min(policy.min_batches, 2) and len(counted) > len(members)
    samples = _merged(counted if changing else [counted[i] for i in members])
    reference_ms = [statistics.median(got[reference]) for got in counted]
    other = [ms for i, ms in enumerate(reference_ms) if i not in members]
    result: dict[str, Any] = {
        "cache": policy.cache,
        "rel_width": policy.rel_width,
        "max_seconds": policy.max_seconds,
        "batches": len(quiet) + len(loaded),
        "quiet_batches": len(quiet),
        "seconds": clock() - started,
        "converged": stopped == CONVERGED,
        "stopped": stopped,
        "load": {
            "known": bool(load_seen),
            "other_cores_mean": statistics.fmean(load_seen) if load_seen else None,
            "other_cores_max": max(load_seen) if load_seen else None,
            "busy_batches": len(loaded),
            "quiet": not under_load and (bool(load_seen) or None),  # None: unknown (no /proc)
        },
        "state": {
            "reference_ms": statistics.median(samples[reference]),
            "shifted_batches": 0 if changing else len(other),
            "shifted_reference_ms": statistics.median(other) if other and not changing else None,
            "steady": not changing,
            "reference_range_ms": [min(reference_ms), max(reference_ms)],
            "earlier_batches": len(earlier),
            "earlier_reference_ms": prevalent_state(earlier)[0],
            "apart_from_earlier": apart_from_history,
        },
        "models": {},
    }
    if history is not None:
        history.extend(statistics.median(got[reference]) for got in quiet)
    for name, values in samples.items():
        entry = samples_entry(values)
        if name != reference:
            entry["speedup"] = _ratio(samples[reference], values)
            entry["speedup_ci95"] = list(speedup_ci(samples[reference], values))
        result["models"][name] = entry
    return result


def samples_entry(values: list[float]) -> dict[str, Any]:
    """One model's timings in a record: median, coefficient of variation, count and the samples (ms)."""
    mean = statistics.fmean(values)
    cv = 0.0 if len(values) < 2 else statistics.stdev(values) / mean if mean else math.nan
    return {"median_ms": statistics.median(values), "cv": cv, "runs": len(values), "samples_ms": values}


def _steady(batches: list[dict[str, list[float]]], reference: str, earlier: list[float] | None = None) -> list[int]:
    """The indices of the batches taken in the machine's prevalent state, judged by the reference's own median per
    batch (:func:`device_bench.load.prevalent_state`) together with its ``earlier`` batches; the others ran while
    the machine was at another speed."""
    earlier = earlier or []
    _, members = prevalent_state([*earlier, *(statistics.median(got[reference]) for got in batches)])
    return [i - len(earlier) for i in members if i >= len(earlier)]


def _merged(batches: list[dict[str, list[float]]]) -> dict[str, list[float]]:
    samples: dict[str, list[float]] = {}
    for got in batches:
        for name, values in got.items():
            samples.setdefault(name, []).extend(values)
    return samples


def _verdict(samples: dict[str, list[float]], reference: str, policy: TimingPolicy, target: float | None) -> str | None:
    """``converged`` when every ratio is within ±rel_width; ``decided`` when each is either that or clear of the
    target's band while within ±2 rel_width; else None (keep measuring)."""
    verdict = CONVERGED
    for name, values in samples.items():
        if name == reference:
            continue
        interval = speedup_ci(samples[reference], values)
        ratio = _ratio(samples[reference], values)
        if _within(ratio, interval, policy.rel_width):
            continue
        if (
            target is not None
            and _clear_of(target, interval, policy.rel_width)
            and _within(ratio, interval, 2 * policy.rel_width)
        ):
            verdict = DECIDED
            continue
        return None
    return verdict


def host_batches(
    runners: dict[str, Callable[[Any], Any]],
    example: Any,
    policy: TimingPolicy,
    *,
    flush: Callable[[], None] | None = None,
) -> Batch:
    """Warm every runner up, size its blocks, and return ``batch()``: one interleaved round in ``policy.cache``."""
    if policy.cache == COLD and flush is None:
        flush = CacheFlusher()
    first: dict[str, float] = {}
    for name, run in runners.items():
        for _ in range(max(1, policy.warmup)):
            started = time.perf_counter()
            run(example)
            first[name] = (time.perf_counter() - started) * 1000.0
    # cold calls each pay a flush: fewer of them per block
    calls = calls_per_block(first, least=1 if policy.cache == COLD else 3, min_block_ms=policy.min_block_ms,
                            most=10 if policy.cache == COLD else 200)  # fmt: skip

    def batch() -> dict[str, list[float]]:
        return interleaved_round(runners, example, calls=calls, cache=policy.cache, flush=flush)

    return batch


def measure_runners(
    runners: dict[str, Callable[[Any], Any]],
    example: Any,
    *,
    reference: str,
    policy: TimingPolicy,
    target: float | None = None,
    meter: LoadMeter | None = None,
) -> dict[str, Any]:
    """The protocol over in-process runners (loaded artifacts or lowered modules) on one example input."""
    batch = host_batches(runners, example, policy)
    return measure_ratios(batch, reference=reference, policy=policy, target=target, meter=meter)


def cache_order(policy: TimingPolicy) -> list[str]:
    """Both cache states, the policy's own (the headline's) first."""
    return [policy.cache] + [c for c in (WARM, COLD) if c != policy.cache]


def both_caches(measure: Callable[[TimingPolicy], dict[str, Any]], policy: TimingPolicy) -> dict[str, dict[str, Any]]:
    """The same measurement warm and cold (the policy's own state first): ``{"warm": record, "cold": record}``."""
    return {cache: measure(policy.with_cache(cache)) for cache in cache_order(policy)}


def summary_line(record: dict[str, Any], name: str = "student") -> str:
    """'4.12× (3.95–4.30), cold, converged' — or what kept it from converging, and the load."""
    model = record["models"][name]
    low, high = model["speedup_ci95"]
    text = f"{model['speedup']:.2f}× ({low:.2f}–{high:.2f}), {record['cache']}"
    if record.get("processes"):
        text += f", {len(record['processes'])} processes"
    if not record["converged"] and record["stopped"] != DECIDED:
        text += f", not within ±{100 * record['rel_width']:.0f}% by the {record['max_seconds']:g} s cap"
    return text + load_note(record)


def load_note(record: dict[str, Any]) -> str:
    load = record.get("load") or {}
    if load.get("quiet") is False:
        text = f"; measured under load (other processes used up to {load['other_cores_max']:.1f} cores)"
    elif load.get("busy_batches"):
        text = f"; {load['busy_batches']} busy batch(es) excluded"
    else:
        text = ""
    return text + state_note(record)


def state_note(record: dict[str, Any]) -> str:
    """What the reference's own latency says of the machine's speed during the run (empty when it held)."""
    state = record.get("state") or {}
    if state.get("apart_from_earlier"):
        return (
            f"; the whole run was timed at another machine speed than this reference's earlier timings (it ran "
            f"{state['reference_ms']:.2f} ms, {state['earlier_reference_ms']:.2f} ms before) and did not return "
            "to it by the cap"
        )
    if state.get("steady") is False:
        low, high = state["reference_range_ms"]
        return f"; the machine kept changing speed (the reference ran {low:.2f}–{high:.2f} ms): every batch counts"
    for unit in ("processes", "batches"):
        if state.get(f"shifted_{unit}"):
            return (
                f"; {state[f'shifted_{unit}']} {unit[:-2]}(es) at another "
                f"machine speed excluded (the reference ran {state['shifted_reference_ms']:.2f} ms there, "
                f"{state['reference_ms']:.2f} ms in the rest)"
            )
    return ""
