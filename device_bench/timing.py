"""Wall-clock timing of callables in one of two cache states, interleaved so that drift hits every one alike.

- **warm**: each model runs in a block of back-to-back calls (what ``benchmark_model`` and a video loop see: the
  weights stay in the caches between calls);
- **cold**: the CPU caches are flushed before every timed call (what an app that runs one inference between other
  work sees: the weights come from DRAM).

Pure Python (no torch, no numpy): the Python runner imports it on a device, and every host measurement uses it.
The statistics and the stopping rule are in :mod:`device_bench.protocol`.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

WARM, COLD = "warm", "cold"
CACHE_STATES = (WARM, COLD)

_DEFAULT_LLC = 32 << 20  # when sysfs does not say: larger than most phone and laptop last-level caches


def last_level_cache_bytes() -> int:
    """The largest CPU cache this machine reports in sysfs (Linux, Android), else 32 MiB."""
    largest = 0
    for size_file in Path("/sys/devices/system/cpu/cpu0/cache").glob("index*/size"):
        try:
            text = size_file.read_text().strip().upper()
        except OSError:
            continue
        scale = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}.get(text[-1:], 1)
        digits = text.rstrip("KMG")
        if digits.isdigit():
            largest = max(largest, int(digits) * scale)
    return largest or _DEFAULT_LLC


class CacheFlusher:
    """Evicts what the caches hold by touching one byte per cache line of a buffer twice the last-level cache."""

    LINE = 64

    def __init__(self, size: int | None = None) -> None:
        self.size = size or 2 * last_level_cache_bytes()
        self._buffer = bytearray(self.size)
        self._stamp = 0
        self._lines = len(range(0, self.size, self.LINE))

    def __call__(self) -> None:
        # a write per line (C loop in bytearray's slice assignment): every line is brought in and dirtied
        self._stamp = (self._stamp + 1) % 256
        self._buffer[:: self.LINE] = bytes([self._stamp]) * self._lines


def time_block(
    run: Callable[[Any], Any], example: Any, *, calls: int, cache: str, flush: Callable[[], None] | None = None
) -> list[float]:
    """Milliseconds of ``calls`` calls of ``run``: back to back (warm) or each after a cache flush (cold)."""
    samples = []
    for _ in range(calls):
        if cache == COLD and flush is not None:
            flush()
        started = time.perf_counter()
        run(example)
        samples.append((time.perf_counter() - started) * 1000.0)
    return samples


def interleaved_round(
    runners: dict[str, Callable[[Any], Any]],
    example: Any,
    *,
    calls: dict[str, int],
    cache: str,
    flush: Callable[[], None] | None = None,
) -> dict[str, list[float]]:
    """One round: every runner in turn, ``calls[name]`` calls each, in the given cache state."""
    return {name: time_block(run, example, calls=calls[name], cache=cache, flush=flush)
            for name, run in runners.items()}  # fmt: skip


def calls_per_block(first_ms: dict[str, float], *, least: int, min_block_ms: float, most: int = 200) -> dict[str, int]:
    """Calls per block so that every block lasts ``min_block_ms`` (a fast model runs more often: one hiccup then
    moves a block's median less), at least ``least`` and at most ``most``."""
    return {name: min(most, max(least, int(-(-min_block_ms // max(ms, 1e-3))))) for name, ms in first_ms.items()}


def interleaved_latency(
    runners: dict[str, Callable[[Any], Any]],
    example: Any,
    *,
    warmup: int = 5,
    rounds: int = 10,
    per_round: int = 5,
    cache: str = WARM,
    flush: Callable[[], None] | None = None,
) -> dict[str, list[float]]:
    """Milliseconds per call for each runner: warm-up, then ``rounds`` rounds that run every runner in turn."""
    if cache == COLD and flush is None:
        flush = CacheFlusher()
    for run in runners.values():
        for _ in range(warmup):
            run(example)
    samples: dict[str, list[float]] = {name: [] for name in runners}
    calls = dict.fromkeys(runners, per_round)
    for _ in range(rounds):
        for name, got in interleaved_round(runners, example, calls=calls, cache=cache, flush=flush).items():
            samples[name].extend(got)
    return samples
