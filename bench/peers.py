"""Peers that benchmarks compare mobilelwt students with (imported by the bench scripts, run from bench/)."""

from __future__ import annotations

import copy

import torch
from torch import nn

from mobilelwt.profile import count_macs


def pruned_for(teacher: nn.Module, size: int, mac_ratio: float, *, head: str) -> tuple[nn.Module, float]:
    """Torch-Pruning's uniform L1 channel pruning (one channel ratio in every prunable conv, the classifier head
    kept), the ratio bisected so the pruned model has ``1 / mac_ratio`` of the teacher's MACs."""
    import torch_pruning as tp

    example = torch.randn(1, 3, size, size)
    teacher_macs = count_macs(teacher, size)

    def prune(ratio: float) -> nn.Module:
        model = copy.deepcopy(teacher).eval()
        pruner = tp.pruner.MagnitudePruner(
            model,
            example,
            importance=tp.importance.MagnitudeImportance(p=1),
            pruning_ratio=ratio,
            ignored_layers=[model.get_submodule(head)],
        )
        pruner.step()
        return model

    lo, hi = 0.0, 0.95
    for _ in range(12):
        mid = (lo + hi) / 2
        if teacher_macs / count_macs(prune(mid), size) < mac_ratio:
            lo = mid
        else:
            hi = mid
    return prune(hi), hi
