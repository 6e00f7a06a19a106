"""Timing files in several processes: the spread between processes reaches the interval."""

from __future__ import annotations

import random

import pytest

from device_bench import apart
from device_bench.apart import combine, measure_files
from device_bench.protocol import CAPPED, CONVERGED, TimingPolicy, summary_line
from device_bench.stats import process_speedup, speedup_ci


def _runs(median: float, count: int = 60, spread: float = 0.02, seed: int = 0) -> list[float]:
    rng = random.Random(seed)
    return [median * (1 + rng.uniform(-spread, spread)) for _ in range(count)]


def _record(
    speedup: float, *, seed: int = 0, quiet: bool | None = True, cache: str = "cold", teacher_ms: float = 10.0
) -> dict:
    """One process's protocol record: the teacher at ``teacher_ms``, the student at teacher_ms/speedup ms."""
    teacher, student = _runs(teacher_ms, seed=seed), _runs(teacher_ms / speedup, seed=seed + 1)
    low, high = speedup_ci(teacher, student)
    models = {"teacher": {"samples_ms": teacher, "median_ms": teacher_ms},
              "student": {"samples_ms": student, "speedup": speedup, "speedup_ci95": [low, high]}}  # fmt: skip
    load = {"known": quiet is not None, "other_cores_mean": 0.1, "other_cores_max": 0.3, "busy_batches": 1,
            "quiet": quiet}  # fmt: skip
    return {"cache": cache, "batches": 5, "quiet_batches": 4, "seconds": 3.0, "converged": True,
            "stopped": CONVERGED, "load": load, "models": models}  # fmt: skip


def test_the_interval_over_processes_covers_their_spread_where_one_process_interval_does_not() -> None:
    one = _record(5.0)["models"]["student"]["speedup_ci95"]
    assert one[1] < 5.5  # one process: narrow, and blind to the next process at 6x
    pairs = [(r["models"]["teacher"]["samples_ms"], r["models"]["student"]["samples_ms"])
             for r in (_record(5.0, seed=0), _record(6.0, seed=2), _record(5.5, seed=4))]  # fmt: skip
    point, low, high = process_speedup(pairs)
    assert point == pytest.approx((5.0 * 6.0 * 5.5) ** (1 / 3), rel=0.01)
    assert low <= 5.1 and high >= 5.9 and low <= point <= high


def test_processes_that_agree_give_a_narrow_interval_and_converge() -> None:
    policy = TimingPolicy(rel_width=0.05, processes=3)
    same = combine([_record(5.0, seed=s) for s in (0, 2, 4)], "teacher", policy)
    assert same["converged"] and same["stopped"] == CONVERGED
    student = same["models"]["student"]
    assert student["speedup"] == pytest.approx(5.0, rel=0.02) and student["runs"] == 180  # runs pooled
    assert len(same["processes"]) == 3 and same["batches"] == 15 and same["load"]["busy_batches"] == 3
    apartness = combine([_record(4.0, seed=0), _record(6.0, seed=2), _record(5.0, seed=4)], "teacher", policy)
    assert not apartness["converged"] and apartness["stopped"] == CAPPED
    low, high = apartness["models"]["student"]["speedup_ci95"]
    assert low < 4.5 and high > 5.5


def test_one_process_under_load_marks_the_whole_measurement() -> None:
    policy = TimingPolicy(processes=2)
    assert combine([_record(5.0), _record(5.0, quiet=False)], "teacher", policy)["load"]["quiet"] is False
    assert combine([_record(5.0, quiet=None), _record(5.0, quiet=None)], "teacher", policy)["load"]["quiet"] is None


def _fake_processes(monkeypatch, speedups: list[float]) -> list[dict]:
    jobs: list[dict] = []

    def fake(job):
        jobs.append(job)
        speedup = speedups[min(len(jobs), len(speedups)) - 1]
        return {cache: _record(speedup, seed=2 * len(jobs), cache=cache) for cache in job["caches"]}

    monkeypatch.setattr(apart, "_in_a_fresh_process", fake)
    return jobs


def test_agreeing_processes_stop_at_the_minimum(monkeypatch, tmp_path) -> None:
    jobs = _fake_processes(monkeypatch, [5.0, 5.0, 5.0, 5.0])
    policy = TimingPolicy(processes=3, max_seconds=60.0)
    files = {"teacher": tmp_path / "t.pte", "student": tmp_path / "s.pte"}
    got = measure_files(files, runtime="executorch", threads=2, input_size=64, reference="teacher", policy=policy,
                        caches=["cold", "warm"])  # fmt: skip
    assert len(jobs) == 3 and set(got) == {"cold", "warm"} and got["cold"]["converged"] and got["warm"]["converged"]
    # each process gets its share of the cap, and runs in this process's own policy otherwise
    assert jobs[0]["policy"]["max_seconds"] == 20.0 and jobs[0]["policy"]["processes"] == 1
    assert jobs[0]["files"] == {"teacher": str(tmp_path / "t.pte"), "student": str(tmp_path / "s.pte")}


def test_disagreeing_processes_add_more_up_to_the_process_cap(monkeypatch, tmp_path) -> None:
    jobs = _fake_processes(monkeypatch, [4.0, 6.0, 5.0, 4.2, 5.8, 4.5, 6.2, 4.1, 5.9, 5.0])
    policy = TimingPolicy(processes=2, max_seconds=1e6)
    files = {"teacher": tmp_path / "t.pte", "student": tmp_path / "s.pte"}
    got = measure_files(files, runtime="executorch", threads=2, input_size=64, reference="teacher", policy=policy,
                        caches=["cold"])  # fmt: skip
    assert len(jobs) == apart.MOST_PROCESSES * 2 and not got["cold"]["converged"]
    assert got["cold"]["stopped"] == apart.PROCESS_CAP and len(got["cold"]["processes"]) == 6


def test_a_cache_state_whose_processes_disagree_keeps_the_measurement_going(monkeypatch, tmp_path) -> None:
    jobs: list[dict] = []

    def fake(job):  # cold agrees from the start; warm disagrees in the first three processes only
        jobs.append(job)
        warm = [4.0, 6.0, 5.0][len(jobs) - 1] if len(jobs) <= 3 else 5.0
        return {"cold": _record(5.0, seed=2 * len(jobs)), "warm": _record(warm, seed=2 * len(jobs), cache="warm")}

    monkeypatch.setattr(apart, "_in_a_fresh_process", fake)
    files = {"teacher": tmp_path / "t.pte", "student": tmp_path / "s.pte"}
    got = measure_files(files, runtime="executorch", threads=2, input_size=64, reference="teacher",
                        policy=TimingPolicy(processes=3, max_seconds=1e6), caches=["cold", "warm"])  # fmt: skip
    assert len(jobs) > 3 and got["cold"]["converged"]
    assert len(got["warm"]["processes"]) == len(jobs)


def test_a_process_that_ran_at_another_machine_speed_is_set_aside_and_replaced(monkeypatch, tmp_path) -> None:
    jobs: list[dict] = []

    def fake(job):  # the second process ran while the shared host gave more memory bandwidth: teacher 6.2 ms
        jobs.append(job)
        fast = len(jobs) == 2
        return {"cold": _record(3.6 if fast else 4.6, seed=2 * len(jobs), teacher_ms=6.2 if fast else 10.0)}

    monkeypatch.setattr(apart, "_in_a_fresh_process", fake)
    files = {"teacher": tmp_path / "t.pte", "student": tmp_path / "s.pte"}
    got = measure_files(files, runtime="executorch", threads=2, input_size=64, reference="teacher",
                        policy=TimingPolicy(processes=3, max_seconds=1e6), caches=["cold"])["cold"]  # fmt: skip
    assert len(jobs) == 4 and got["converged"]
    assert got["models"]["student"]["speedup"] == pytest.approx(4.6, rel=0.01)
    assert [p["counted"] for p in got["processes"]] == [True, False, True, True]
    assert got["state"]["shifted_processes"] == 1 and got["state"]["steady_processes"] == 3
    assert got["state"]["shifted_reference_ms"] == pytest.approx(6.2) and got["state"]["reference_ms"] == 10.0
    assert "1 process(es) at another machine speed excluded (the reference ran 6.20 ms there" in summary_line(got)


def test_processes_that_never_agree_on_a_machine_speed_all_count() -> None:
    records = [_record(4.6, teacher_ms=10.0), _record(3.6, seed=2, teacher_ms=6.2)]
    got = combine(records, "teacher", TimingPolicy(processes=2))
    assert got["state"]["steady"] is False and all(p["counted"] for p in got["processes"])
    assert got["models"]["student"]["runs"] == 120


def test_a_crashing_timing_process_is_one_error(monkeypatch, tmp_path) -> None:
    from device_bench.parsers import RunnerOutputError

    job = {"files": {"teacher": str(tmp_path / "missing.pte")}, "runtime": "executorch", "threads": 1,
           "input_size": 8, "reference": "teacher", "caches": ["cold"], "policy": {"max_seconds": 1.0}}  # fmt: skip
    with pytest.raises(RunnerOutputError, match="A timing process failed"):
        apart._in_a_fresh_process(job)
