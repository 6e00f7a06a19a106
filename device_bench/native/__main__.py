"""``python -m device_bench.native OUT``: build the native ExecuTorch runner for this host."""

from __future__ import annotations

import sys
from pathlib import Path

from device_bench.native import build_host_runner
from mobilelwt.errors import MobileLWTError


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1 or args[0].startswith("-"):
        print("usage: python -m device_bench.native OUT", file=sys.stderr)
        return 2
    try:
        print(build_host_runner(Path(args[0])))
    except MobileLWTError as exc:
        print(f"error: {exc.problem}" + (f" fix: {exc.fix}" if exc.fix else ""), file=sys.stderr)
        return exc.exit_code
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
