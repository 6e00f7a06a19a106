"""One exception family for mistakes a user can fix.

Every error carries the problem and the fix; the CLI prints both on one line and exits non-zero.
Anything that is *not* a :class:`MobileLWTError` is a bug and keeps its traceback.
"""

from __future__ import annotations


class MobileLWTError(Exception):
    """A user-facing error: ``problem`` says what went wrong, ``fix`` how to put it right."""

    exit_code = 2

    def __init__(self, problem: str, fix: str = "") -> None:
        super().__init__(problem)
        self.problem = problem
        self.fix = fix

    def __str__(self) -> str:
        return f"{self.problem} {self.fix}".strip() if self.fix else self.problem


class UnknownNameError(MobileLWTError, KeyError):
    """A model, dataset, module or target name that no registry knows."""


class DataError(MobileLWTError):
    """A data directory that is missing, empty or not an ImageFolder tree."""


class CheckpointError(MobileLWTError):
    """A weights file that is missing, corrupt, unsafe or does not fit the model."""


class ConfigError(MobileLWTError):
    """Options that contradict each other or the model (input size, class count, ...)."""


class OutOfReachError(ConfigError):
    """A target no plan of this model can meet on this target (the search for a frontier stops there);
    ``reachable``: the most that was measured (or computed) to be within reach."""

    def __init__(self, problem: str, fix: str = "", *, reachable: float | None = None) -> None:
        super().__init__(problem, fix)
        self.reachable = reachable
