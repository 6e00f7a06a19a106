"""Peers that benchmarks compare mobilelwt students with (imported by the bench scripts, run from bench/).

Torch-Pruning is a benchmark dependency only: ``pip install -e .[bench]``.
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from mobilelwt.profile import count_macs


def prune_l1(teacher: nn.Module, size: int, ratio: float, *, head: str) -> nn.Module:
    """Torch-Pruning's uniform L1 channel pruning of a copy of ``teacher``: ``ratio`` of the channels of every
    prunable layer removed, the classifier ``head`` kept."""
    import torch_pruning as tp

    model = copy.deepcopy(teacher).eval()
    pruner = tp.pruner.MagnitudePruner(
        model,
        torch.randn(1, 3, size, size),
        importance=tp.importance.MagnitudeImportance(p=1),
        pruning_ratio=ratio,
        ignored_layers=[model.get_submodule(head)],
    )
    pruner.step()
    return model


def pruned_for(teacher: nn.Module, size: int, mac_ratio: float, *, head: str) -> tuple[nn.Module, float]:
    """:func:`prune_l1` with the ratio bisected so the pruned model has ``1 / mac_ratio`` of the teacher's MACs."""
    teacher_macs = count_macs(teacher, size)
    lo, hi = 0.0, 0.95
    for _ in range(12):
        mid = (lo + hi) / 2
        if teacher_macs / count_macs(prune_l1(teacher, size, mid, head=head), size) < mac_ratio:
            lo = mid
        else:
            hi = mid
    return prune_l1(teacher, size, hi, head=head), hi
