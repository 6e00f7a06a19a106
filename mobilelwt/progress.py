"""Progress reporting: the core calls a callback, the CLI draws it. Nothing in the core prints."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class ProgressEvent:
    """``done`` of ``total`` units of ``stage`` are finished; ``info`` carries figures worth showing."""

    stage: str
    done: int
    total: int
    info: dict[str, Any] = field(default_factory=dict)


ProgressCallback = Callable[[ProgressEvent], None]


def ignore_progress(_event: ProgressEvent) -> None:
    return None


NOTICE = "notice"  # an event that carries one line for the user (``info["message"]``), not a count


def notice(on_progress: ProgressCallback, message: str) -> None:
    """Tell the user one thing worth knowing (a damaged cache measured again, say) through the progress channel."""
    on_progress(ProgressEvent(NOTICE, 0, 0, {"message": message}))
