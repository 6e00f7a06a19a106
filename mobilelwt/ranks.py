"""What torchrun's environment says about this process, read without importing torch (the CLI starts fast)."""

from __future__ import annotations

import os

# what every lost-rank message tells the user to do
RESUME_FIX = "Every finished stage and layer is kept in the build directory; run the same command again to resume."


def launched_ranks() -> int:
    """How many ranks ``torchrun`` started (1 outside it)."""
    try:
        return int(os.environ.get("WORLD_SIZE", "1") or 1)
    except ValueError:
        return 1


def is_main_process() -> bool:
    """Rank 0, or a process outside ``torchrun`` (decided before the process group exists)."""
    return os.environ.get("RANK", "0") == "0"
