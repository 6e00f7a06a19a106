"""Replacement modules by name, so a plan (JSON) can say which module replaces a layer."""

from __future__ import annotations

from typing import Any

from torch import nn

from mobilelwt.modules.bottleneck import ChannelBottleneckConv
from mobilelwt.modules.factorized_linear import FactorizedLinear
from mobilelwt.modules.grouped import DepthwiseSeparableConv, GroupedMixingConv
from mobilelwt.modules.lowrank_spatial import LowRankSpatialConv
from mobilelwt.registry import Registry

REPLACEMENTS: Registry[type[nn.Module]] = Registry("replacement module")
for _cls in (LowRankSpatialConv, ChannelBottleneckConv, GroupedMixingConv, DepthwiseSeparableConv, FactorizedLinear):
    REPLACEMENTS.add(_cls.kind, _cls)


def build_replacement(kind: str, layer: nn.Module, *, init: bool = True, **params: Any) -> nn.Module:
    """``REPLACEMENTS[kind].from_teacher(layer, **params)``."""
    return REPLACEMENTS.get(kind).from_teacher(layer, init=init, **params)
