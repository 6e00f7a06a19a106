"""Was the machine busy while we timed? Other processes' CPU time during a measurement, from ``/proc``.

The whole machine's busy time (``/proc/stat``) minus this process's own (``/proc/self/stat``, all its threads and
its waited-for children) over the same wall time is the CPU that *other* processes took, in cores. A timing taken
while another process used a core of a two-core machine is not a quiet number; the protocol excludes such batches,
runs longer, and says so. Pure Python; ``None`` where ``/proc`` is missing (macOS), never a made-up zero.
"""

from __future__ import annotations

import bisect
import os
import statistics
import time
from dataclasses import dataclass
from pathlib import Path

BUSY_CORES = 0.25  # other processes using a quarter of a core on average: the timing is not quiet


def _ticks_per_second() -> int:
    try:
        return int(os.sysconf("SC_CLK_TCK"))
    except (ValueError, OSError, AttributeError):
        return 100


def machine_busy_ticks(stat: Path = Path("/proc/stat")) -> int | None:
    """Busy clock ticks of all CPUs since boot (everything but idle and iowait), or None."""
    try:
        first = stat.read_text().splitlines()[0].split()
    except (OSError, IndexError):
        return None
    if not first or first[0] != "cpu":
        return None
    values = [int(v) for v in first[1:]]
    idle = values[3] + (values[4] if len(values) > 4 else 0)
    # guest time is already counted in user (fields 9-10): leave it out so it is not counted twice
    return sum(values[:8]) - idle


def own_ticks(stat: Path = Path("/proc/self/stat")) -> int | None:
    """This process's CPU ticks (user + system, its threads and waited-for children), or None."""
    try:
        text = stat.read_text()
    except OSError:
        return None
    fields = text[text.rfind(")") + 2 :].split()  # the command name may hold spaces: split after it
    try:
        return sum(int(v) for v in fields[11:15])  # utime, stime, cutime, cstime
    except (ValueError, IndexError):
        return None


@dataclass
class LoadSample:
    """Other processes' CPU over one interval, in cores (1.0: one core fully used by someone else)."""

    seconds: float
    other_cores: float | None

    def busy(self, threshold: float = BUSY_CORES) -> bool:
        return self.other_cores is not None and self.other_cores > threshold


class LoadMeter:
    """``with meter.interval() as sample:`` measures other processes' CPU while the block runs."""

    def __init__(
        self, stat: Path = Path("/proc/stat"), self_stat: Path = Path("/proc/self/stat"), clock=time.monotonic
    ) -> None:
        self.stat, self.self_stat, self.clock = Path(stat), Path(self_stat), clock
        self.hz = _ticks_per_second()

    @property
    def available(self) -> bool:
        return machine_busy_ticks(self.stat) is not None and own_ticks(self.self_stat) is not None

    def start(self) -> tuple[float, int | None, int | None]:
        return self.clock(), machine_busy_ticks(self.stat), own_ticks(self.self_stat)

    def stop(self, started: tuple[float, int | None, int | None]) -> LoadSample:
        t0, machine0, own0 = started
        t1, machine1, own1 = self.clock(), machine_busy_ticks(self.stat), own_ticks(self.self_stat)
        seconds = t1 - t0
        if None in (machine0, machine1, own0, own1) or seconds <= 0:
            return LoadSample(seconds, None)
        other = (machine1 - machine0) - (own1 - own0)  # type: ignore[operator]
        return LoadSample(seconds, max(0.0, other / self.hz / seconds))


class NoLoadMeter(LoadMeter):
    """For timings that run elsewhere (a phone's own facts say its state) or in tests: load unknown."""

    def __init__(self) -> None:
        super().__init__()

    def start(self) -> tuple[float, int | None, int | None]:
        return self.clock(), None, None


# A load that /proc cannot see: on a shared host (a cloud VM), other tenants take memory bandwidth, and the
# machine runs in one of two speeds for seconds to minutes at a time. On a 2-core EPYC VM, the same AlexNet-64²
# teacher file ran 4.5 ms cold in some stretches and 7.3 ms in others, its student 1.2 and 1.6 ms: the speedup
# moved from 3.6× to 4.6× (README: "It is the machine's speed, not the process"). The reference is the same
# program in every batch, so its own latency is the gauge: a batch whose reference ran this far from the
# prevalent state's is another state.
STATE_SHIFT = 0.20
# below this the reference's batch medians move by more than the shift from timer and scheduler noise alone (a tiny
# model: 0.2-0.38 ms between batches of one quiet run), and memory bandwidth is not what limits it: one state
STATE_MIN_MS = 1.0


def prevalent_state(latencies: list[float], shift: float = STATE_SHIFT) -> tuple[float | None, list[int]]:
    """The machine state most of ``latencies`` (the reference's median per batch or per process, in order) were
    taken in: its centre (their median) and the indices within ``±shift`` of it. Two states of equal size: the
    one of the latest value (the machine's state now). A reference under :data:`STATE_MIN_MS` is one state."""
    if not latencies:
        return None, []
    if statistics.median(latencies) < STATE_MIN_MS:
        return statistics.median(latencies), list(range(len(latencies)))
    # every value is tried as the state's anchor; counting its neighbours by bisection in the sorted values keeps
    # this O(n log n): a capped timing judges hundreds of batches, and judges them again as they come
    ordered = sorted(latencies)
    best_count, anchor = 0, latencies[-1]
    for value in reversed(latencies):  # the latest first, so that it wins ties
        count = bisect.bisect_right(ordered, value * (1 + shift)) - bisect.bisect_left(ordered, value * (1 - shift))
        if count > best_count:
            best_count, anchor = count, value
    centre = statistics.median(v for v in latencies if _near(v, anchor, shift))
    return centre, [i for i, value in enumerate(latencies) if _near(value, centre, shift)]


def _near(value: float, anchor: float, shift: float) -> bool:
    return anchor * (1 - shift) <= value <= anchor * (1 + shift)
