"""Replacement modules: cheaper stand-ins for a teacher's conv and linear layers, one concept per file.

Every module is built with ``Module.from_teacher(layer, rank=..., init=True)``, reproduces the teacher layer's
output shape for any stride/padding/dilation, and starts from a closed-form approximation of its weights.
"""

from mobilelwt.modules.bottleneck import ChannelBottleneckConv
from mobilelwt.modules.factorized_linear import FactorizedLinear
from mobilelwt.modules.grouped import DepthwiseSeparableConv, GroupedMixingConv
from mobilelwt.modules.lowrank_spatial import LowRankSpatialConv
from mobilelwt.modules.registry import REPLACEMENTS, build_replacement

__all__ = [
    "REPLACEMENTS",
    "ChannelBottleneckConv",
    "DepthwiseSeparableConv",
    "FactorizedLinear",
    "GroupedMixingConv",
    "LowRankSpatialConv",
    "build_replacement",
]
