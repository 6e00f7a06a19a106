"""The run settings every training stage shares: where its data comes from and where it runs.

``train-teacher``, ``compress`` and ``build`` take the same group (one CLI option group, one object through the
core), so a rule about one of these values is written once.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from mobilelwt.checks import count, host_threads, probability


@dataclass(frozen=True)
class RunSettings:
    """Data, its validation split, the input size, and the machine: threads, device, loader workers."""

    data: str | Path = "digits"  # an ImageFolder directory or a built-in dataset name
    val_data: Path | None = None  # a separate labelled set for validation (else a split of ``data``)
    val_fraction: float = 0.1  # share of ``data`` held out for validation
    input_size: int | None = None  # square input side (None: the checkpoint's, else the dataset's)
    threads: int | None = None  # torch CPU threads (None: torch's choice)
    device: str = "cpu"  # where training runs: cpu, cuda, cuda:N or auto
    workers: int | None = None  # DataLoader processes per rank (None: the cores shared by the ranks; 0: threads)

    def check(self) -> RunSettings:
        """Refuse values out of range before any work starts (the input size a model takes is checked with it)."""
        probability(self.val_fraction, "--val-fraction", high=0.99)
        host_threads(self.threads, "--threads", optional=True)
        count(self.workers, "--workers", low=0, optional=True)
        return self
