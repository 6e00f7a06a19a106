"""A Linear layer as two thinner ones (in -> rank -> out), initialised by truncated SVD of the weight."""

from __future__ import annotations

import torch
from torch import nn

from mobilelwt.errors import ConfigError
from mobilelwt.modules._common import Replacement, copy_bias, round_width, truncated_svd


class FactorizedLinear(Replacement):
    kind = "factorized_linear"

    def __init__(self, in_features: int, out_features: int, rank: int, *, bias: bool = True) -> None:
        super().__init__()
        self.rank = rank
        self.down = nn.Linear(in_features, rank, bias=False)
        self.up = nn.Linear(rank, out_features, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.up(self.down(x))

    @staticmethod
    def max_rank(layer: nn.Linear) -> int:
        return min(layer.in_features, layer.out_features)

    @classmethod
    def from_teacher(cls, layer: nn.Module, *, rank: int, init: bool = True) -> FactorizedLinear:
        if not isinstance(layer, nn.Linear):
            raise ConfigError(f"factorized_linear replaces Linear layers, not {type(layer).__name__}.", "Fix the plan.")
        return cls(layer.in_features, layer.out_features, round_width(rank), bias=layer.bias is not None).initialized(
            layer, init
        )

    @torch.no_grad()
    def init_from(self, layer: nn.Linear) -> None:
        a, b = truncated_svd(layer.weight, self.rank)
        self.up.weight.copy_(a)
        self.down.weight.copy_(b)
        copy_bias(self.up, layer)
