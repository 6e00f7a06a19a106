"""The protocol over exported files, split over fresh processes: the spread between processes, measured.

Timed in one process, a speedup's interval is narrow and honest about *that* process. Another process on the same
machine, timing the same two files, lands up to 20 % away (``bench/variance.py`` on a 2-core VM, AlexNet 64²:
6.8 % spread between three runs inside one process, 19.6 % between four processes, ±3.8 % per run's interval):
where the weights land in memory and how the threads are placed is decided once per process. So files are timed in
``policy.processes`` fresh processes (more, up to three times as many, while an interval in either cache state is
wider than the policy asks and the time allows), each running the protocol in every cache state, and the processes
are combined by a two-level bootstrap (:func:`device_bench.stats.process_speedup`): the interval covers the next
process too. A process whose reference ran more than 20 % from the others' (the machine at another speed through
that whole process: other tenants of a shared host, which ``/proc`` cannot see) is set aside and replaced while
two or more agree (:func:`device_bench.load.prevalent_state`); the record says how many were.

The planner keeps timing in its own process (it times in-memory candidates); a build's files are what ships.
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import time
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

from device_bench.load import prevalent_state
from device_bench.parsers import RunnerOutputError
from device_bench.protocol import CAPPED, CONVERGED, TimingPolicy, measure_runners, samples_entry
from device_bench.stats import process_speedup
from mobilelwt.children import child_env

MARKER = "MOBILELWT_APART "  # the child's one result line
MIN_PROCESS_S = 2.0  # a process's own cap is the policy's split over its processes, but at least this
MOST_PROCESSES = 3  # × policy.processes: the most processes one measurement starts
PROCESS_CAP = "process cap"


def measure_files(
    files: dict[str, Path],
    *,
    runtime: str,
    threads: int,
    input_size: int,
    reference: str,
    policy: TimingPolicy,
    caches: list[str],
) -> dict[str, dict[str, Any]]:
    """One protocol record per cache state for ``files`` (name → artifact path, ``reference`` among them), shaped
    as :func:`device_bench.protocol.measure_ratios` returns it, with ``processes`` (each process's speedups).

    With ``policy.processes`` 1 the files are timed in this process."""
    job = {"files": {name: str(path) for name, path in files.items()}, "runtime": runtime, "threads": threads,
           "input_size": input_size, "reference": reference, "caches": caches}  # fmt: skip
    if policy.processes <= 1:
        return time_here({**job, "policy": asdict(policy)})
    share = replace(policy, processes=1, max_seconds=max(MIN_PROCESS_S, policy.max_seconds / policy.processes))
    job["policy"] = asdict(share)
    started = time.monotonic()
    runs: list[dict[str, dict[str, Any]]] = []
    while True:
        runs.append(_in_a_fresh_process(job))
        combined = {cache: combine([run[cache] for run in runs], reference, policy) for cache in caches}
        if len(runs) < policy.processes:
            continue
        # every cache state, not the headline's only; and as many processes as asked in the machine's prevalent
        # speed (a process at another speed is set aside and replaced)
        if all(r["converged"] and r["state"]["steady_processes"] >= policy.processes for r in combined.values()):
            break
        if len(runs) >= MOST_PROCESSES * policy.processes or time.monotonic() - started >= len(caches) * (
            policy.max_seconds
        ):  # fmt: skip
            stopped = PROCESS_CAP if len(runs) >= MOST_PROCESSES * policy.processes else CAPPED
            for record in combined.values():
                record["stopped"] = stopped if not record["converged"] else record["stopped"]
            break
    return combined


def combine(records: list[dict[str, Any]], reference: str, policy: TimingPolicy) -> dict[str, Any]:
    """Protocol records of the same files in several processes → one record: the samples pooled for the latency
    statistics, each speedup and its interval from the processes (:func:`process_speedup`)."""
    everyone = records
    reference_ms = [r["models"][reference]["median_ms"] for r in everyone]
    _, members = prevalent_state(reference_ms)
    # a process that ran wholly while the machine was at another speed (its reference's latency says so) is set
    # aside when at least two agree on the prevalent speed; otherwise the machine never held one and all count
    steady = len(members) >= 2 or len(everyone) == 1
    counted = set(members) if steady else set(range(len(everyone)))
    records = [r for i, r in enumerate(everyone) if i in counted]
    first = records[0]
    loads = [r["load"] for r in records]
    seen_mean = [x["other_cores_mean"] for x in loads if x.get("other_cores_mean") is not None]
    seen_max = [x["other_cores_max"] for x in loads if x.get("other_cores_max") is not None]
    quiet = [x.get("quiet") for x in loads]
    result: dict[str, Any] = {
        "cache": first["cache"],
        "rel_width": policy.rel_width,
        "max_seconds": policy.max_seconds,
        "batches": sum(r["batches"] for r in everyone),
        "quiet_batches": sum(r["quiet_batches"] for r in records),
        "seconds": sum(r["seconds"] for r in everyone),
        "load": {
            "known": any(x.get("known") for x in loads),
            "other_cores_mean": statistics.fmean(seen_mean) if seen_mean else None,
            "other_cores_max": max(seen_max) if seen_max else None,
            "busy_batches": sum(x.get("busy_batches", 0) for x in loads),
            "quiet": False if False in quiet else (True if True in quiet else None),
        },
        "processes": [],
        "models": {},
    }
    within = True
    for name in first["models"]:
        pooled = [v for r in records for v in r["models"][name]["samples_ms"]]
        entry = samples_entry(pooled)
        if name != reference:
            pairs = [(r["models"][reference]["samples_ms"], r["models"][name]["samples_ms"]) for r in records]
            point, low, high = process_speedup(pairs)
            entry.update(speedup=point, speedup_ci95=[low, high])
            within = within and low >= point * (1 - policy.rel_width) and high <= point * (1 + policy.rel_width)
        result["models"][name] = entry
    result["processes"] = [
        {"seconds": r["seconds"], "converged": r["converged"], "reference_ms": reference_ms[i],
         "counted": i in counted,
         "speedups": {n: m["speedup"] for n, m in r["models"].items() if "speedup" in m}}
        for i, r in enumerate(everyone)
    ]  # fmt: skip
    other = [ms for i, ms in enumerate(reference_ms) if i not in counted]
    inner = [r["state"]["shifted_reference_ms"] for r in records if (r.get("state") or {}).get("shifted_reference_ms")]
    result["state"] = {
        "reference_ms": statistics.median(reference_ms[i] for i in counted),
        "steady": steady,
        "steady_processes": len(records) if steady else 0,
        "shifted_processes": len(other),
        # the processes set aside, else the batches set aside inside the counted ones
        "shifted_reference_ms": statistics.median(other) if other else statistics.median(inner) if inner else None,
        "reference_range_ms": [min(reference_ms), max(reference_ms)],
        "shifted_batches": sum(r.get("state", {}).get("shifted_batches", 0) for r in records),
    }
    result["converged"] = within
    result["stopped"] = CONVERGED if within else CAPPED
    return result


def time_here(job: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The job in this process: load the files, run the protocol in each cache state."""
    # lazy: torch and the runtimes; the parent process that only combines records does not need them
    import torch

    from targets import by_runtime, load_artifact

    policy = TimingPolicy(**job["policy"])
    size = job["input_size"]
    example = torch.randn(1, 3, size, size, generator=torch.Generator().manual_seed(0))
    by_runtime(job["runtime"]).prepare()
    runners = {name: load_artifact(job["runtime"], Path(path), threads=job["threads"])
               for name, path in job["files"].items()}  # fmt: skip
    return {cache: measure_runners(runners, example, reference=job["reference"], policy=policy.with_cache(cache))
            for cache in job["caches"]}  # fmt: skip


def _in_a_fresh_process(job: dict[str, Any]) -> dict[str, dict[str, Any]]:
    timeout = 120 + 4 * len(job["caches"]) * job["policy"]["max_seconds"]
    try:
        proc = subprocess.run([sys.executable, "-m", "device_bench.apart"], input=json.dumps(job),
                              capture_output=True, text=True, timeout=timeout, env=child_env())  # fmt: skip
    except subprocess.TimeoutExpired:
        raise RunnerOutputError(f"A timing process ran past {timeout:.0f} s.", "Re-run the benchmark.") from None
    lines = [line for line in proc.stdout.splitlines() if line.startswith(MARKER)]
    if proc.returncode != 0 or not lines:
        last = (proc.stderr.strip().splitlines() or ["no output"])[-1][:300]
        raise RunnerOutputError(
            f"A timing process failed (exit {proc.returncode}): {last}",
            "Run `mobilelwt bench DIR --processes 1` to see the error in this process.",
        )
    return json.loads(lines[-1][len(MARKER) :])


def main() -> None:
    """The child: a job on stdin, its records on one marked line of stdout."""
    job = json.loads(sys.stdin.read())
    print(MARKER + json.dumps(time_here(job)), flush=True)


if __name__ == "__main__":
    main()
