"""Python child processes (timing, memory, profiling) that import this checkout's packages."""

from __future__ import annotations

import os
from pathlib import Path

_ROOT = Path(__file__).resolve().parents[1]


def child_env() -> dict[str, str]:
    """This environment with the checkout that holds ``mobilelwt`` first on ``PYTHONPATH``.

    A child started with ``-m device_bench.runner`` from another directory, or under a stale editable install
    that points elsewhere, would otherwise import nothing or someone else's copy."""
    paths = [str(_ROOT), *filter(None, os.environ.get("PYTHONPATH", "").split(os.pathsep))]
    return {**os.environ, "PYTHONPATH": os.pathsep.join(dict.fromkeys(paths))}
