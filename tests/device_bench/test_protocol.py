"""The one timing protocol on synthetic timers: when it stops, what it records, warm and cold, and load."""

import random
import statistics
import subprocess
import sys
import time

import pytest

from device_bench.load import LoadMeter, LoadSample, NoLoadMeter, prevalent_state
from device_bench.protocol import CAPPED, CONVERGED, DECIDED, TimingPolicy, both_caches, measure_ratios, summary_line
from device_bench.timing import COLD, WARM, calls_per_block, interleaved_round


class FakeClock:
    """Time that advances only when a batch runs: the cap is reached after a known number of batches."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


class ScriptedMeter(LoadMeter):
    """Other processes' CPU per batch, from a script (None: unknown)."""

    def __init__(self, loads: list[float | None]) -> None:
        super().__init__()
        self.loads = iter(loads)

    def start(self):
        return (0.0, None, None)

    def stop(self, _started) -> LoadSample:
        return LoadSample(0.1, next(self.loads, 0.0))


def _steady(clock: FakeClock, calls: list[int], spread: float = 0.002):
    """A student exactly 4x faster than its teacher, each batch 1 s of (fake) time."""

    def batch():
        calls.append(1)
        clock.now += 1.0
        k = len(calls)
        return {"t": [4.0 * (1 + spread * (k % 3)), 4.0, 4.0 * (1 - spread)],
                "s": [1.0, 1.0 * (1 + spread * (k % 2)), 1.0]}  # fmt: skip

    return batch


def test_the_protocol_stops_as_soon_as_the_interval_is_narrow() -> None:
    clock, calls = FakeClock(), []
    policy = TimingPolicy(rel_width=0.05, max_seconds=100, min_batches=3)
    record = measure_ratios(_steady(clock, calls), reference="t", policy=policy, meter=ScriptedMeter([]), clock=clock)
    assert len(calls) == 3 and record["converged"] is True and record["stopped"] == CONVERGED
    low, high = record["models"]["s"]["speedup_ci95"]
    assert low <= record["models"]["s"]["speedup"] <= high and low >= 4.0 * 0.95 and high <= 4.0 * 1.05
    assert record["batches"] == 3 and record["seconds"] == 3.0 and record["cache"] == "cold"
    assert record["models"]["t"]["runs"] == 9 and "speedup" not in record["models"]["t"]


def test_the_protocol_stops_at_the_time_cap_and_says_it_did_not_converge() -> None:
    clock = FakeClock()
    ticks = iter(range(10_000))

    def wild():  # ratios all over the place: the interval never narrows
        clock.now += 1.0
        i = next(ticks)
        return {"t": [1.0 + (i % 7), 8.0 - (i % 5)], "s": [1.0 + (i % 3), 2.0 + (i % 4)]}

    policy = TimingPolicy(rel_width=0.05, max_seconds=6, min_batches=2)
    record = measure_ratios(wild, reference="t", policy=policy, meter=ScriptedMeter([]), clock=clock)
    assert record["batches"] == 6 and record["converged"] is False and record["stopped"] == CAPPED
    assert "not within ±5% by the 6 s cap" in summary_line(record, "s")


def test_with_a_target_a_clear_verdict_stops_early_but_is_not_called_converged() -> None:
    clock, calls = FakeClock(), []
    policy = TimingPolicy(rel_width=0.01, max_seconds=100, min_batches=2)
    record = measure_ratios(_steady(clock, calls, spread=0.03), reference="t", policy=policy, target=2.0,
                            meter=ScriptedMeter([]), clock=clock)  # fmt: skip
    assert record["stopped"] == DECIDED and record["converged"] is False and len(calls) < 10


def test_busy_batches_do_not_count_and_extend_the_run() -> None:
    clock, calls = FakeClock(), []
    policy = TimingPolicy(rel_width=0.05, max_seconds=100, min_batches=3)
    meter = ScriptedMeter([0.0, 1.2, 0.9, 0.0, 0.0])  # two batches while another process held a core
    record = measure_ratios(_steady(clock, calls), reference="t", policy=policy, meter=meter, clock=clock)
    assert len(calls) == 5 and record["quiet_batches"] == 3 and record["load"]["busy_batches"] == 2
    assert record["load"]["quiet"] is True and record["load"]["other_cores_max"] == pytest.approx(1.2)
    assert record["models"]["t"]["runs"] == 9  # only the quiet batches' samples
    assert "2 busy batch(es) excluded" in summary_line(record, "s")


def test_a_number_that_could_only_be_taken_under_load_says_so() -> None:
    clock, calls = FakeClock(), []
    policy = TimingPolicy(rel_width=0.05, max_seconds=4, min_batches=3)
    record = measure_ratios(_steady(clock, calls), reference="t", policy=policy, meter=ScriptedMeter([1.5] * 10),
                            clock=clock)  # fmt: skip
    assert record["load"]["quiet"] is False and record["quiet_batches"] == 0 and record["stopped"] == CAPPED
    assert record["models"]["s"]["speedup"] == pytest.approx(4.0, rel=0.01)  # still a number, marked as loaded
    assert "measured under load" in summary_line(record, "s")


def _two_speeds(clock: FakeClock, calls: list[int], fast_batches: set[int]):
    """Batches of a machine that ran some stretches faster (memory bandwidth freed on a shared host): there the
    memory-bound teacher gains more than the student, and the ratio drops from 4.6x to 3.6x."""

    def batch():
        calls.append(1)
        clock.now += 1.0
        if len(calls) in fast_batches:
            return {"t": [4.5, 4.5, 4.6], "s": [1.25, 1.25, 1.26]}
        return {"t": [7.3, 7.3, 7.35], "s": [1.58, 1.59, 1.59]}

    return batch


def test_the_prevalent_machine_state_is_the_largest_group_and_ties_go_to_the_latest() -> None:
    assert prevalent_state([7.3, 7.4, 4.5, 4.6, 7.2]) == (7.3, [0, 1, 4])
    assert prevalent_state([7.3, 4.5]) == (4.5, [1])
    centre, members = prevalent_state([1.0, 1.1, 0.9, 1.05])  # ordinary noise: one state
    assert members == [0, 1, 2, 3] and centre == pytest.approx(1.025)
    assert prevalent_state([]) == (None, [])
    assert prevalent_state([0.2, 0.38, 0.3])[1] == [0, 1, 2]  # a tiny reference: its batches differ by noise


def test_the_prevalent_state_is_the_one_every_anchor_tried_by_scan_would_give() -> None:
    """The bisection finds what trying every value as the anchor and scanning all the others finds."""

    def by_scan(latencies: list[float], shift: float = 0.2) -> tuple[float, list[int]]:
        best: list[int] = []
        for anchor in reversed(latencies):
            members = [i for i, v in enumerate(latencies) if anchor * (1 - shift) <= v <= anchor * (1 + shift)]
            if len(members) > len(best):
                best = members
        centre = statistics.median(latencies[i] for i in best)
        return centre, [i for i, v in enumerate(latencies) if centre * (1 - shift) <= v <= centre * (1 + shift)]

    rng = random.Random(7)
    for _ in range(300):
        latencies = [rng.choice([4.5, 5.8, 7.3]) * rng.lognormvariate(0, 0.1) for _ in range(rng.randint(1, 60))]
        assert prevalent_state(latencies) == by_scan(latencies)


def test_a_long_run_looks_for_a_verdict_as_its_batches_grow_by_a_tenth_not_after_each(monkeypatch) -> None:
    """The bootstrap grows with the samples: looked for after every batch, a capped run spent half its time there."""
    from device_bench import protocol

    looks: list[int] = []
    real = protocol._verdict
    monkeypatch.setattr(protocol, "_verdict", lambda samples, *a: looks.append(len(samples["t"])) or real(samples, *a))
    clock, calls, rng = FakeClock(), [], random.Random(3)

    def noisy():  # one machine state, 5 % noise: never within ±0.1 %
        calls.append(1)
        clock.now += 1.0
        return {"t": [4.0 * rng.lognormvariate(0, 0.05) for _ in range(3)],
                "s": [1.0 * rng.lognormvariate(0, 0.05) for _ in range(3)]}  # fmt: skip

    policy = TimingPolicy(rel_width=0.001, max_seconds=300, min_batches=3)  # never this narrow: it runs to the cap
    record = measure_ratios(noisy, reference="t", policy=policy, meter=ScriptedMeter([]), clock=clock)
    assert record["stopped"] == CAPPED and record["batches"] == 300
    batches = [n // 3 for n in looks]
    assert batches[:8] == [3, 4, 5, 6, 7, 8, 9, 10]  # every batch while few, where the early stops are decided
    scheduled = batches[:-1]  # the last look is the cap's: a run that narrowed since the one before says so
    assert all(b >= a * 1.1 - 1 for a, b in zip(scheduled, scheduled[1:], strict=False)) and len(looks) < 50
    assert batches[-1] == 300 and scheduled[-1] < 300


def test_batches_at_another_machine_speed_do_not_count_and_extend_the_run() -> None:
    clock, calls = FakeClock(), []
    policy = TimingPolicy(rel_width=0.05, max_seconds=100, min_batches=3)
    record = measure_ratios(_two_speeds(clock, calls, {2, 3}), reference="t", policy=policy,
                            meter=ScriptedMeter([]), clock=clock)  # fmt: skip
    assert len(calls) == 5 and record["converged"] and record["models"]["t"]["runs"] == 9
    assert record["models"]["s"]["speedup"] == pytest.approx(7.3 / 1.59, rel=0.01)  # the slow state's ratio only
    assert record["state"]["shifted_batches"] == 2 and record["state"]["steady"] is True
    assert record["state"]["shifted_reference_ms"] == pytest.approx(4.5)
    assert record["state"]["reference_ms"] == pytest.approx(7.3)
    assert "2 batch(es) at another machine speed excluded (the reference ran 4.50 ms there, 7.30 ms" in summary_line(
        record, "s"
    )


def test_a_machine_that_never_holds_one_speed_counts_every_batch_and_says_so() -> None:
    clock, calls = FakeClock(), []
    policy = TimingPolicy(rel_width=0.05, max_seconds=4, min_batches=3)
    record = measure_ratios(_two_speeds(clock, calls, {2, 4}), reference="t", policy=policy,
                            meter=ScriptedMeter([]), clock=clock)  # fmt: skip
    # two batches in each state by the cap: a tie, so the number is the latest state's (fast), and says so
    assert record["stopped"] == CAPPED and record["models"]["t"]["runs"] == 6
    assert record["models"]["s"]["speedup"] == pytest.approx(4.5 / 1.25, rel=0.01)
    assert record["state"]["steady"] is True and record["state"]["shifted_batches"] == 2
    clock, calls = FakeClock(), []
    record = measure_ratios(_two_speeds(clock, calls, {2}), reference="t", policy=TimingPolicy(max_seconds=2,
                            min_batches=2), meter=ScriptedMeter([]), clock=clock)  # fmt: skip
    assert record["state"]["steady"] is False and record["models"]["t"]["runs"] == 6
    assert "the machine kept changing speed (the reference ran 4.50–7.30 ms): every batch counts" in summary_line(
        record, "s"
    )


def test_a_policys_description_carries_the_protocols_rules(monkeypatch) -> None:
    from device_bench import protocol

    before = TimingPolicy().describe()
    assert before["rules"] == protocol.PROTOCOL_RULES and before["cache"] == "cold"
    monkeypatch.setattr(protocol, "PROTOCOL_RULES", protocol.PROTOCOL_RULES + 1)
    assert TimingPolicy().describe() != before  # every key made from it changes: nothing older is reused


def test_unknown_load_is_not_reported_as_quiet() -> None:
    clock, calls = FakeClock(), []
    record = measure_ratios(_steady(clock, calls), reference="t", policy=TimingPolicy(max_seconds=100),
                            meter=NoLoadMeter(), clock=clock)  # fmt: skip
    assert record["load"]["known"] is False and record["load"]["quiet"] is None


def test_warm_and_cold_are_both_measured_and_the_policys_state_comes_first() -> None:
    asked = []

    def measure(policy: TimingPolicy):
        asked.append(policy.cache)
        return {"cache": policy.cache}

    both = both_caches(measure, TimingPolicy(cache=COLD))
    assert asked == [COLD, WARM] and both[COLD]["cache"] == COLD and both[WARM]["cache"] == WARM
    asked.clear()
    both_caches(measure, TimingPolicy(cache=WARM))
    assert asked == [WARM, COLD]
    with pytest.raises(ValueError, match="cache"):
        TimingPolicy(cache="lukewarm")


def test_cold_rounds_flush_before_every_timed_call_and_warm_rounds_never() -> None:
    events: list[str] = []
    runners = {"a": lambda _x: events.append("a"), "b": lambda _x: events.append("b")}
    interleaved_round(runners, None, calls={"a": 2, "b": 1}, cache=COLD, flush=lambda: events.append("flush"))
    assert events == ["flush", "a", "flush", "a", "flush", "b"]
    events.clear()
    interleaved_round(runners, None, calls={"a": 2, "b": 1}, cache=WARM, flush=lambda: events.append("flush"))
    assert events == ["a", "a", "b"]  # back to back: the blocks benchmark_model times


def test_fast_models_run_more_calls_per_block() -> None:
    calls = calls_per_block({"teacher": 10.0, "student": 0.5}, least=3, min_block_ms=20.0)
    assert calls == {"teacher": 3, "student": 40}


def test_the_load_detector_flags_a_busy_sibling_process() -> None:
    meter = LoadMeter()
    if not meter.available:
        pytest.skip("no /proc on this system")
    quiet = meter.stop(meter.start())
    assert quiet.other_cores is not None
    spinner = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        time.sleep(0.3)  # let it start spinning
        mark = meter.start()
        time.sleep(1.0)  # we sleep: any CPU the machine spends is someone else's
        busy = meter.stop(mark)
    finally:
        spinner.kill()
        spinner.wait()
    assert busy.other_cores is not None and busy.other_cores > 0.5 and busy.busy()


def test_a_run_wholly_at_another_speed_than_the_references_earlier_batches_waits_for_that_speed() -> None:
    # a planner's earlier rounds timed the teacher at 7.3 ms; this round starts while the machine runs faster
    clock, calls = FakeClock(), []
    history = [7.3, 7.32, 7.28, 7.31, 7.3, 7.29]
    policy = TimingPolicy(rel_width=0.05, max_seconds=100, min_batches=3)
    record = measure_ratios(_two_speeds(clock, calls, {1, 2, 3}), reference="t", policy=policy,
                            meter=ScriptedMeter([]), clock=clock, history=history)  # fmt: skip
    # alone, its first three batches would have decided at 3.6x; against the earlier batches they are set aside
    assert len(calls) == 6 and record["converged"]
    assert record["models"]["s"]["speedup"] == pytest.approx(7.3 / 1.59, rel=0.01)
    assert record["state"]["shifted_batches"] == 3 and record["state"]["earlier_batches"] == 6
    assert record["state"]["earlier_reference_ms"] == pytest.approx(7.3, rel=0.01)
    assert record["state"]["apart_from_earlier"] is False
    assert len(history) == 6 + 6  # this run's quiet batches join the history for the next timing

    # without a history the same batches decide on the faster speed at once
    clock, calls = FakeClock(), []
    alone = measure_ratios(_two_speeds(clock, calls, {1, 2, 3}), reference="t", policy=policy,
                           meter=ScriptedMeter([]), clock=clock)  # fmt: skip
    assert len(calls) == 3 and alone["models"]["s"]["speedup"] == pytest.approx(4.5 / 1.25, rel=0.01)


def test_a_machine_that_stays_at_another_speed_until_the_cap_stands_on_its_own_batches_and_says_so() -> None:
    clock, calls = FakeClock(), []
    policy = TimingPolicy(rel_width=0.05, max_seconds=5, min_batches=3)
    record = measure_ratios(_two_speeds(clock, calls, set(range(1, 100))), reference="t", policy=policy,
                            meter=ScriptedMeter([]), clock=clock, history=[7.3] * 10)  # fmt: skip
    assert len(calls) == 5 and record["stopped"] == CAPPED  # it waited for the earlier speed until the cap
    assert record["models"]["s"]["speedup"] == pytest.approx(4.5 / 1.25, rel=0.01)
    assert record["state"]["apart_from_earlier"] is True and record["state"]["steady"] is True
    assert record["state"]["shifted_batches"] == 0
    assert (
        "the whole run was timed at another machine speed than this reference's earlier timings (it ran 4.50 ms, "
        "7.30 ms before)" in summary_line(record, "s")
    )
