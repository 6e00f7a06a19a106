"""Data-parallel runs under ``torchrun``: the process group, rank-0-only work, sharded batches, lost ranks.

One process per rank, started by ``torchrun`` (or by ``--nproc N``, which re-launches through it). Every rank
holds the teacher and the student and trains on its shard of each global batch; gradients are averaged by
``DistributedDataParallel``; gloo on CPUs, NCCL on GPUs. Whatever touches files or a latency target (freshness
checks, planning, checkpoints, export, reports) runs on rank 0 only and its result is broadcast, so the files of
a run are written once, by one process. A rank that dies surfaces on rank 0 as one :class:`RankLostError`.
"""

from __future__ import annotations

import contextlib
import datetime
import os
import signal
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import torch
import torch.distributed as dist
from torch import nn

from mobilelwt.errors import ConfigError, MobileLWTError
from mobilelwt.ranks import RESUME_FIX, launched_ranks

T = TypeVar("T")
# a training collective (gradients, sums) never takes long: a rank missing for this long is gone (a dropped node
# sends no FIN, so nothing else would notice it)
STEP_TIMEOUT = datetime.timedelta(minutes=10)
# while rank 0 plans (times candidates on a phone) or saves, or one rank trains a longer layer, the others wait
WAIT_TIMEOUT = datetime.timedelta(hours=12)
_waiting_group: Any = None


class RankLostError(MobileLWTError):
    """Another rank stopped (crashed, killed, its node dropped) while this one waited for it."""

    exit_code = 3


class MirroredError(MobileLWTError):
    """Rank 0's user error, re-raised on the other ranks so that they stop too; rank 0 alone prints it."""

    quiet = True

    def __init__(self, problem: str, fix: str, exit_code: int) -> None:
        super().__init__(problem, fix)
        self.exit_code = exit_code


@dataclass(frozen=True)
class World:
    """This process's place in the run: ``size`` ranks, this one ``rank`` (``local_rank`` on its node)."""

    rank: int = 0
    size: int = 1
    local_rank: int = 0
    backend: str | None = None

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def active(self) -> bool:
        return self.size > 1

    def describe(self) -> dict[str, Any]:
        return {"world_size": self.size, "backend": self.backend, "launcher": "torchrun" if self.active else None}


def world() -> World:
    """The current process group's world (a single process when none is initialised)."""
    if not (dist.is_available() and dist.is_initialized()):
        return World()
    return World(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", 0)), dist.get_backend())


def init_distributed(device: torch.device) -> tuple[World, torch.device]:
    """Join the process group ``torchrun`` set up (a no-op for one process); returns the world and this rank's
    device (``cuda:LOCAL_RANK`` for a GPU run)."""
    global _waiting_group
    if launched_ranks() <= 1:
        return World(), device
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if device.type == "cuda":
        if local_rank >= torch.cuda.device_count():
            error = ConfigError(
                f"Local rank {local_rank} has no GPU (torch sees {torch.cuda.device_count()} on this node).",
                "Start at most one process per GPU: --nproc / --nproc_per_node <= the GPU count.",
            )
            error.rank_local = True  # type: ignore[attr-defined]  # rank 0 cannot know: this rank must say it
            raise error
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        try:
            dist.init_process_group(backend, timeout=STEP_TIMEOUT)
            _waiting_group = dist.new_group(backend=backend, timeout=WAIT_TIMEOUT)
        except (RuntimeError, ValueError) as exc:
            raise RankLostError(
                f"Could not join the other ranks ({_first_line(exc)}).",
                "Check that every node runs the same torchrun command with the same --rdzv-endpoint.",
            ) from None
        signal.signal(signal.SIGTERM, _stopped_by_launcher)
    return world(), device


def _stopped_by_launcher(_signum: int, _frame: Any) -> None:
    # torchrun sends SIGTERM to the surviving ranks when one fails: say so instead of dying silently
    raise RankLostError("Stopped by torchrun: another rank failed or was killed.", RESUME_FIX)


def _first_line(exc: BaseException) -> str:
    import re

    # gloo and NCCL prefix their messages with their own source location: the user needs the words after it
    text = re.sub(r"\[[^\]]*\.(?:cc|cpp|h|hpp):\d+\]\s*", "", str(exc)).strip().splitlines()
    return text[0][:200] if text else type(exc).__name__


@contextlib.contextmanager
def lost_ranks_reported(stage: str) -> Iterator[None]:
    """Turn a collective that failed because a peer is gone into one :class:`RankLostError` naming ``stage``."""
    try:
        yield
    except dist.DistError as exc:
        raise _lost(stage, exc) from None
    except RuntimeError as exc:
        if not world().active or not _is_peer_failure(exc):
            raise
        raise _lost(stage, exc) from None


def _is_peer_failure(exc: RuntimeError) -> bool:
    text = str(exc).lower()
    return any(s in text for s in ("gloo", "nccl", "connection", "socket", "peer", "timed out", "broken pipe"))


def _lost(stage: str, exc: BaseException) -> RankLostError:
    return RankLostError(
        f"Another rank stopped during {stage} ({_first_line(exc)}).",
        f"{RESUME_FIX.removesuffix('.')} (with the ranks that remain, or on one process).",
    )


def on_main(fn: Callable[[], T], stage: str) -> T:
    """Run ``fn`` on rank 0 only and hand its (picklable) result to every rank; a user error on rank 0 stops the
    others too, quietly."""
    w = world()
    if not w.active:
        return fn()
    payload: list[Any] = [None]
    error: BaseException | None = None
    if w.is_main:
        try:
            payload = [("ok", fn())]
        except MobileLWTError as exc:
            error, payload = exc, [("error", (exc.problem, exc.fix, exc.exit_code))]
        except BaseException as exc:  # a bug or Ctrl-C on rank 0: the others must not wait for it forever
            error, payload = exc, [("error", (f"rank 0 failed during {stage}: {_first_line(exc)}", "", 1))]
    with lost_ranks_reported(stage):
        dist.broadcast_object_list(payload, src=0, group=_waiting_group)
    if error is not None:
        raise error
    kind, value = payload[0]
    if kind == "error":
        raise MirroredError(*value)
    return value


def broadcast_module(module: nn.Module, stage: str, *, src: int = 0) -> None:
    """Give every rank rank ``src``'s parameters and buffers (after a resume, an init that may differ by node, a
    layer that one rank trained)."""
    w = world()
    if not w.active:
        return
    with lost_ranks_reported(stage), torch.no_grad():
        for tensor in list(module.state_dict().values()):
            if isinstance(tensor, torch.Tensor) and tensor.numel():
                dist.broadcast(tensor, src=src, group=_waiting_group)


def gather_objects(value: Any, stage: str) -> list[Any]:
    """Every rank's (picklable) ``value``, in rank order, on every rank."""
    w = world()
    if not w.active:
        return [value]
    out: list[Any] = [None] * w.size
    with lost_ranks_reported(stage):
        dist.all_gather_object(out, value, group=_waiting_group)
    return out


def all_sum(values: Sequence[float], stage: str) -> list[float]:
    """Element-wise sum of ``values`` over the ranks (float64; identical on every rank)."""
    w = world()
    if not w.active:
        return list(values)
    device = torch.device("cuda", torch.cuda.current_device()) if w.backend == "nccl" else torch.device("cpu")
    tensor = torch.tensor(list(values), dtype=torch.float64, device=device)
    with lost_ranks_reported(stage):
        dist.all_reduce(tensor)
    return tensor.cpu().tolist()


def data_parallel(module: nn.Module) -> nn.Module:
    """``module`` wrapped in ``DistributedDataParallel`` (gradients averaged over the ranks), or itself alone."""
    w = world()
    if not w.active:
        return module
    from torch.nn.parallel import DistributedDataParallel

    parameter = next(module.parameters())
    device_ids = [parameter.device] if parameter.device.type == "cuda" else None
    return DistributedDataParallel(module, device_ids=device_ids)


def rank_batch_size(global_batch: int, flag: str) -> int:
    """Each rank's share of a global batch; the global batch must split evenly (the run then means the same as
    one process with that batch)."""
    w = world()
    if global_batch % w.size:
        raise ConfigError(
            f"{flag} {global_batch} does not split evenly over {w.size} ranks.",
            f"Pass a multiple of {w.size}, e.g. {flag} {max(w.size, global_batch // w.size * w.size)}.",
        )
    return global_batch // w.size


def shard_order(length: int, seed: int, limit: int | None) -> torch.Tensor:
    """This rank's indices of one epoch: a seeded permutation of ``range(length)`` cut to ``limit``, dealt round
    robin over the ranks by ``DistributedSampler``, so that rank r's k-th batch of B/W images and the others'
    together form the k-th batch of B images of a one-process run."""
    w = world()
    from torch.utils.data import DistributedSampler

    sampler = DistributedSampler(range(length), num_replicas=w.size, rank=w.rank, shuffle=True, seed=seed)
    order = torch.tensor(list(sampler), dtype=torch.long)
    return order[: -(-limit // w.size)] if limit is not None else order


def shard_range(length: int) -> torch.Tensor:
    """This rank's share of ``range(length)`` for evaluation: every index on exactly one rank, none padded."""
    w = world()
    return torch.arange(w.rank, length, w.size)
