"""The Python runner: time (and optionally evaluate) one artifact on any machine that has Python and a runtime.

    python -m device_bench.runner MODEL.pte --runtime executorch --runs 50 --warmup 5 --threads 2

It prints one line ``MOBILELWT_RESULT {json}`` at the very end: the host trusts that line, not the exit status
(adb shells of old devices always exit 0), so a run that dies half-way can never pass for a measurement.
With ``--inputs X.npy --outputs Y.npy`` it also runs every input once and saves the outputs (device accuracy).

    python -m device_bench.runner A.pte B.pte C.pte --runtime executorch --input-shape 1,256,13,13 --rounds 6

times several files interleaved in one process (each round runs every file in turn, so drift hits all alike):
what the latency planner's per-layer tables and whole-student comparisons use on a phone.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path
from typing import Any

from device_bench.parsers import MARKER
from device_bench.timing import CACHE_STATES, COLD, WARM, CacheFlusher, interleaved_latency, time_block


def run(
    path: Path,
    runtime: str,
    *,
    runs: int,
    warmup: int,
    threads: int,
    input_size: int,
    min_seconds: float = 0.0,
    inputs: Path | None = None,
    outputs: Path | None = None,
    cache: str = WARM,
) -> dict[str, Any]:
    import numpy as np
    import torch

    # lazy: torch and the runtime; `import device_bench.runner` is the device's quick availability check
    from targets import load_artifact
    from targets.formats import by_runtime

    example = torch.randn(1, 3, input_size, input_size, generator=torch.Generator().manual_seed(0))
    by_runtime(runtime).prepare()  # the runtime's own libraries are the baseline, not the model's cost
    baseline_kb = peak_rss_kb()
    t0 = time.perf_counter()
    model = load_artifact(runtime, path, threads=threads)  # program load + method load
    load_ms = (time.perf_counter() - t0) * 1000.0
    t0 = time.perf_counter()
    model(example)  # the first run (allocations, delegate init) is reported apart from the steady state
    first_run_ms = (time.perf_counter() - t0) * 1000.0
    for _ in range(warmup):
        model(example)
    samples: list[float] = []
    flush = CacheFlusher() if cache == COLD else None
    started = time.perf_counter()
    while len(samples) < runs or time.perf_counter() - started < min_seconds:
        samples += time_block(model, example, calls=1, cache=cache, flush=flush)
    pss = pss_kb()  # with the model loaded, after the timed runs
    record: dict[str, Any] = {
        "artifact": path.name,
        "runtime": runtime,
        "threads": threads,
        "warmup": warmup,
        "cache": cache,
        "samples_ms": samples,
        "load_ms": load_ms,
        "first_run_ms": first_run_ms,
        "peak_rss_mb": peak_rss_kb() / 1024.0,
        "baseline_rss_mb": baseline_kb / 1024.0,  # the runner (Python, torch, runtime) before the model
        "pss_mb": pss / 1024.0 if pss else None,
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "machine": platform.machine(),
    }
    if inputs is not None and outputs is not None:
        batch = np.load(inputs)
        logits = np.stack([model(torch.from_numpy(x[None])).numpy().reshape(-1) for x in batch])
        with open(outputs, "wb") as handle:  # no temp name needed: the host reads it only after the marker line
            np.save(handle, logits.astype(np.float32))
        record["outputs"] = int(len(logits))
    return record


def write_op_profile(
    path: Path, runtime: str, out: Path, *, runs: int, threads: int, input_size: int
) -> dict[str, Any]:
    """Run one file ``runs`` times under its runtime's own profiler and write what it records to ``out``
    (ExecuTorch: an ETDump; LiteRT: its profiler's summary)."""
    # lazy: torch and the runtime; `import device_bench.runner` is the device's quick availability check
    from targets.formats import by_runtime

    return by_runtime(runtime).module.write_op_profile(
        Path(path), Path(out), runs=runs, threads=threads, input_size=input_size
    )


def run_interleaved(
    paths: list[Path],
    runtime: str,
    *,
    input_shape: tuple[int, ...],
    rounds: int,
    per_round: int,
    warmup: int,
    threads: int,
    cache: str = WARM,
) -> dict[str, Any]:
    """Milliseconds per call of every file, measured in ``rounds`` rounds that run each file ``per_round`` times
    (``cache``: back to back, or each call after a cache flush)."""
    import torch

    # lazy: torch and the runtime; `import device_bench.runner` is the device's quick availability check
    from targets import load_artifact
    from targets.formats import by_runtime

    by_runtime(runtime).prepare()
    example = torch.randn(*input_shape, generator=torch.Generator().manual_seed(0))
    models = {path.name: load_artifact(runtime, path, threads=threads) for path in paths}
    samples = interleaved_latency(models, example, warmup=warmup + 1, rounds=rounds, per_round=per_round, cache=cache)
    return {
        "cache": cache,
        "runtime": runtime,
        "threads": threads,
        "input_shape": list(input_shape),
        "rounds": rounds,
        "per_round": per_round,
        "samples_ms": samples,
        "platform": platform.platform(),
        "machine": platform.machine(),
    }


def peak_rss_kb() -> float:
    """This process's peak resident memory: VmHWM from /proc (Linux, Android), else getrusage."""
    peak = _proc_kb("/proc/self/status", "VmHWM:")
    if peak is not None:
        return peak
    import resource

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 1024.0 if sys.platform == "darwin" else float(peak)  # bytes on macOS, KiB elsewhere


def pss_kb() -> float | None:
    """This process's proportional set size now (``Pss`` of /proc/self/smaps_rollup, what Android's ``dumpsys
    meminfo`` reports); None where the kernel has no smaps_rollup (Linux < 4.14, macOS)."""
    return _proc_kb("/proc/self/smaps_rollup", "Pss:")


def _proc_kb(path: str, key: str) -> float | None:
    """The kB value of ``key`` in a /proc file, or None where the file or the line is missing."""
    try:
        for line in Path(path).read_text().splitlines():
            if line.startswith(key):
                return float(line.split()[1])
    except OSError:
        pass
    return None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Time one .pte/.tflite artifact; print one JSON result line.")
    parser.add_argument("artifact", type=Path, nargs="+", help="one file, or several to time interleaved")
    parser.add_argument("--runtime", required=True, choices=("executorch", "litert"))
    parser.add_argument("--runs", type=int, default=50)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--input-size", type=int, default=224)
    parser.add_argument("--min-seconds", type=float, default=0.0)
    parser.add_argument("--inputs", type=Path)
    parser.add_argument("--outputs", type=Path)
    parser.add_argument("--input-shape", help="comma-separated input shape (interleaved mode), e.g. 1,256,13,13")
    parser.add_argument("--rounds", type=int, default=5, help="interleaved mode: rounds over all files")
    parser.add_argument("--per-round", type=int, default=3, help="interleaved mode: runs of each file per round")
    parser.add_argument(
        "--cache",
        choices=CACHE_STATES,
        default=WARM,
        help="warm (back to back) or cold (caches flushed before each timed run)",
    )
    parser.add_argument("--etdump", type=Path, help="ExecuTorch: run --runs times with ETDump on, write it here")
    parser.add_argument("--op-profile", type=Path, help="LiteRT: run --runs times profiled, write the summary here")
    args = parser.parse_args(argv)
    if args.etdump is not None or args.op_profile is not None:
        runtime, out = ("executorch", args.etdump) if args.etdump is not None else (args.runtime, args.op_profile)
        record = write_op_profile(args.artifact[0], runtime, out, runs=args.runs, threads=args.threads,
                                  input_size=args.input_size)  # fmt: skip
        print(MARKER + json.dumps(record), flush=True)
        return 0
    if len(args.artifact) > 1 or args.input_shape:
        shape = tuple(int(v) for v in args.input_shape.split(",")) if args.input_shape else (
            1, 3, args.input_size, args.input_size)  # fmt: skip
        record = run_interleaved(args.artifact, args.runtime, input_shape=shape, rounds=args.rounds,
                                 per_round=args.per_round, warmup=args.warmup, threads=args.threads,
                                 cache=args.cache)  # fmt: skip
        print(MARKER + json.dumps(record), flush=True)
        return 0
    record = run(
        args.artifact[0],
        args.runtime,
        runs=args.runs,
        warmup=args.warmup,
        threads=args.threads,
        input_size=args.input_size,
        min_seconds=args.min_seconds,
        inputs=args.inputs,
        outputs=args.outputs,
        cache=args.cache,
    )
    print(MARKER + json.dumps(record), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
