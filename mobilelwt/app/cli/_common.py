"""What every command shares: one error formatter, the consoles and rich progress drawing."""

from __future__ import annotations

import contextlib
import functools
import os
import sys
import time
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from mobilelwt.errors import MobileLWTError
from mobilelwt.progress import NOTICE, ProgressEvent, ignore_progress
from mobilelwt.ranks import is_main_process, launched_ranks

F = TypeVar("F", bound=Callable[..., Any])

LOG_WIDTH = 200  # columns of a console that is not a terminal (a log file, a pipe)


def _console(*, stderr: bool = False) -> Console:
    """A console; written to a log file or a pipe it keeps the tables whole, where rich would cut every column
    to fit 80 (``COLUMNS`` still wins)."""
    stream = sys.stderr if stderr else sys.stdout
    logged = not stream.isatty() and "COLUMNS" not in os.environ
    return Console(stderr=stderr, width=LOG_WIDTH if logged else None)


console = _console()
err_console = _console(stderr=True)


def handle_user_errors(func: F) -> F:
    """Turn a :class:`MobileLWTError` into one line on stderr and a non-zero exit; bugs keep their traceback."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except MobileLWTError as exc:
            _quiet_sigterm()
            if not _reported_here(exc):
                _leave_the_ranks(exc.exit_code)
                raise typer.Exit(exc.exit_code) from None
            message = f"[bold red]error:[/] {_escape(exc.problem)}"
            if not is_main_process():
                message = f"rank {os.environ.get('RANK')}: {message}"
            if exc.fix:
                message += f" [bold]fix:[/] {_escape(exc.fix)}"
            err_console.print(message, soft_wrap=True, highlight=False)
            _leave_the_ranks(exc.exit_code)
            raise typer.Exit(exc.exit_code) from None
        except KeyboardInterrupt:
            err_console.print(
                "[bold red]interrupted:[/] every finished file is kept (files are written whole or not at all); "
                "run the same command again to resume from the last finished stage, layer or artifact.",
                soft_wrap=True,
                highlight=False,
            )
            raise typer.Exit(130) from None

    return wrapper  # type: ignore[return-value]


def _quiet_sigterm() -> None:
    if launched_ranks() > 1:
        import signal

        signal.signal(signal.SIGTERM, signal.SIG_IGN)  # this rank is already stopping, with its own message


def _leave_the_ranks(code: int) -> None:
    """Under torchrun, exit at once once the error is said: a process group with a dead peer can hang in its
    teardown, and torchrun's SIGTERM must not turn the one line into a traceback."""
    if launched_ranks() <= 1:
        return
    import sys

    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def _reported_here(exc: MobileLWTError) -> bool:
    """Under torchrun rank 0 speaks: the others print only errors of their own (their node's data, say), not
    rank 0's mirrored ones nor the option errors every rank finds alike before the ranks have met."""
    if is_main_process() or getattr(exc, "rank_local", False):
        return True
    # lazy: imports torch (seconds); `--help` and option errors answer at once
    from mobilelwt.distributed import world

    return not getattr(exc, "quiet", False) and world().active


@contextlib.contextmanager
def main_progress() -> Iterator[Callable[[ProgressEvent], None]]:
    """:func:`progress_bars` on rank 0 (or a single process); silence on the other ranks."""
    if is_main_process():
        with progress_bars() as draw:
            yield draw
    else:
        yield ignore_progress


def _escape(text: str) -> str:
    from rich.markup import escape

    return escape(text)


@contextlib.contextmanager
def progress_bars() -> Iterator[Callable[[ProgressEvent], None]]:
    """A progress callback: one rich bar per stage on a terminal, plain log lines (every 10%) elsewhere."""
    if not err_console.is_terminal:
        yield _log_lines()
        return
    columns = (
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        TextColumn("{task.fields[info]}"),
    )
    tasks: dict[str, Any] = {}
    with Progress(*columns, console=err_console, transient=False) as progress:

        def draw(event: ProgressEvent) -> None:
            if event.stage == NOTICE:
                progress.console.print(f"note: {event.info['message']}", markup=False, highlight=False)
                return
            if event.stage not in tasks:
                tasks[event.stage] = progress.add_task(event.stage, total=event.total, info="")
            progress.update(tasks[event.stage], completed=event.done, total=event.total, info=_info(event))

        yield draw


def _log_lines() -> Callable[[ProgressEvent], None]:
    started = time.perf_counter()
    last_decile: dict[str, int] = {}

    def log(event: ProgressEvent) -> None:
        if event.stage == NOTICE:
            err_console.print(f"note: {event.info['message']}", markup=False, highlight=False, soft_wrap=True)
            return
        decile = 10 * event.done // max(event.total, 1)
        if last_decile.get(event.stage) == decile and event.done != event.total:
            return
        last_decile[event.stage] = decile
        elapsed = time.perf_counter() - started
        line = f"[{elapsed:7.1f}s] {event.stage} {event.done}/{event.total} {_info(event)}"
        err_console.print(line, markup=False, highlight=False, soft_wrap=True)

    return log


def _info(event: ProgressEvent) -> str:
    return "  ".join(_fmt(k, v) for k, v in event.info.items() if isinstance(v, int | float | str))


def _fmt(key: str, value: object) -> str:
    return f"{key}={value:.4g}" if isinstance(value, float) else f"{key}={value}"


def human(n: float) -> str:
    for unit, size in (("G", 1e9), ("M", 1e6), ("K", 1e3)):
        if abs(n) >= size:
            return f"{n / size:.2f}{unit}"
    return f"{n:.0f}"


def data_line(metrics: dict) -> str:
    """How the run read its images and how fast it trained (all ranks), in one line."""
    loader = metrics.get("data_loader") or {}
    how = {"in-memory": "in memory", "threads": "decoded by threads", "dataloader": "DataLoader"}.get(
        loader.get("path"), "?"
    )
    if loader.get("path") == "dataloader":
        how += f", {loader['workers']} worker(s) per rank" + (", pinned memory" if loader.get("pin_memory") else "")
    rates = []
    for label, rate, wait in (
        ("training", loader.get("images_per_s"), loader.get("data_wait_share")),
        ("layer-wise", loader.get("layerwise_images_per_s"), None),
        ("fine-tune", (loader.get("finetune") or {}).get("images_per_s"),
         (loader.get("finetune") or {}).get("data_wait_share")),
    ):  # fmt: skip
        if rate:
            rates.append(f"{label} {rate:,.0f} images/s" + (f" ({100 * wait:.0f}% waiting for data)" if wait else ""))
    ranks = (metrics.get("distributed") or {}).get("world_size", 1)
    where = f"{ranks} ranks ({metrics['distributed']['backend']})" if ranks > 1 else "1 process"
    return f"data: {how}; {where}; {', '.join(rates) or 'no training steps'}"
