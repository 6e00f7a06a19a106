"""``--nproc N``: the same command again, as N ranks started through torchrun's own launcher."""

from __future__ import annotations

import logging
import os
import signal
import sys

import typer

from mobilelwt.app.cli._common import err_console
from mobilelwt.checks import whole
from mobilelwt.errors import ConfigError
from mobilelwt.ranks import RESUME_FIX, launched_ranks

COMMANDS = ("train-teacher", "compress", "build")


def relaunch(nproc: int | None) -> None:
    """Nothing for ``--nproc`` 1 or none; else run ``sys.argv`` as ``nproc`` ranks and exit with their code."""
    whole(nproc, "--nproc", low=1, optional=True)
    if nproc is None or nproc == 1:
        return
    if launched_ranks() > 1:
        raise ConfigError(
            "--nproc was given to a process that torchrun already started.", "Drop --nproc (torchrun sets the ranks)."
        )
    argv = strip_nproc(sys.argv[1:])
    if not argv or argv[0] not in COMMANDS:
        raise ConfigError(
            "--nproc re-runs the command line, and this call did not come from one.",
            f"Run `mobilelwt {' | '.join(COMMANDS)} ... --nproc N`, or start the ranks with torchrun.",
        )
    raise typer.Exit(launch(argv, nproc))


def strip_nproc(argv: list[str]) -> list[str]:
    """``argv`` without ``--nproc N`` / ``--nproc=N`` (the ranks must not launch again)."""
    out, skip = [], False
    for arg in argv:
        if skip:
            skip = False
        elif arg == "--nproc":
            skip = True
        elif not arg.startswith("--nproc="):
            out.append(arg)
    return out


def launch(argv: list[str], nproc: int) -> int:
    """``python -m mobilelwt <argv>`` as ``nproc`` ranks on this machine; returns the exit code. Rank 0 reports its
    own errors; a rank that died without a word (killed, crashed) is named here, in one line."""
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.run import get_args_parser, run

    from mobilelwt.distributed import RankLostError  # torch.distributed: imported only when launching

    # each rank its share of the cores, unless the user chose (torchrun would force 1 and warn about it)
    os.environ.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // nproc)))
    if sys.platform.startswith("linux"):  # one machine: gloo talks over loopback, whatever the hostname resolves to
        os.environ.setdefault("GLOO_SOCKET_IFNAME", "lo")
    logging.getLogger("torch.distributed").setLevel(logging.CRITICAL)  # its failure log repeats what we print
    args = get_args_parser().parse_args(["--standalone", f"--nproc_per_node={nproc}", "--module", "mobilelwt", *argv])
    try:
        run(args)
    except ChildFailedError as exc:
        failures = exc.failures
        first = failures.get(0)
        if first is not None and first.exitcode > 0:
            return first.exitcode  # rank 0 has said what went wrong (a user error, a lost rank, a failed artifact)
        # the cause, not the ranks torchrun itself stopped with SIGTERM afterwards
        rank, failure = min(failures.items(), key=lambda kv: (kv[1].exitcode == -signal.SIGTERM, kv[1].timestamp))
        how = (
            f"was killed by {signal.Signals(-failure.exitcode).name}"
            if failure.exitcode < 0
            else f"exited with code {failure.exitcode}"
        )
        err_console.print(
            f"[bold red]error:[/] rank {rank} of {nproc} (pid {failure.pid}) {how}. [bold]fix:[/] {RESUME_FIX}",
            soft_wrap=True,
            highlight=False,
        )
        return RankLostError.exit_code
    return 0
