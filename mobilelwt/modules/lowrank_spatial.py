"""Low-rank spatial factorisation: a k×k conv as a k×1 conv to ``rank`` channels, then a 1×k conv.

Closed-form init (Jaderberg et al. 2014, scheme 2; Tai et al. 2016): the SVD of the kernel unfolded as
(in_channels·kh) × (out_channels·kw) gives the optimal vertical and horizontal filters for that rank.
"""

from __future__ import annotations

import torch
from torch import nn

from mobilelwt.modules._common import (
    Replacement,
    check_plain_conv,
    conv_geometry,
    copy_bias,
    pair,
    round_width,
    truncated_svd,
)


class LowRankSpatialConv(Replacement):
    kind = "lowrank_spatial"

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: tuple[int, int],
        rank: int,
        *,
        stride: tuple[int, int] = (1, 1),
        padding: tuple[int, int] = (0, 0),
        dilation: tuple[int, int] = (1, 1),
        bias: bool = True,
    ) -> None:
        super().__init__()
        kh, kw = kernel_size
        self.rank = rank
        self.vertical = nn.Conv2d(
            in_channels,
            rank,
            (kh, 1),
            stride=(stride[0], 1),
            padding=(padding[0], 0),
            dilation=(dilation[0], 1),
            bias=False,
        )
        self.horizontal = nn.Conv2d(
            rank,
            out_channels,
            (1, kw),
            stride=(1, stride[1]),
            padding=(0, padding[1]),
            dilation=(1, dilation[1]),
            bias=bias,
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.horizontal(self.vertical(x))

    @staticmethod
    def max_rank(layer: nn.Conv2d) -> int:
        kh, kw = pair(layer.kernel_size)
        return min(layer.in_channels * kh, layer.out_channels * kw)

    @classmethod
    def from_teacher(cls, layer: nn.Module, *, rank: int, init: bool = True) -> LowRankSpatialConv:
        conv = check_plain_conv(layer, "lowrank_spatial")
        rank = round_width(rank)
        module = cls(
            conv.in_channels,
            conv.out_channels,
            pair(conv.kernel_size),
            rank,
            **conv_geometry(conv),
        )
        return module.initialized(conv, init)

    @torch.no_grad()
    def init_from(self, conv: nn.Conv2d) -> None:
        w = conv.weight  # (out, in, kh, kw)
        out_c, in_c, kh, kw = w.shape
        unfolded = w.permute(1, 2, 0, 3).reshape(in_c * kh, out_c * kw)  # rows (c, y), columns (o, x)
        a, b = truncated_svd(unfolded, self.rank)
        self.vertical.weight.copy_(a.T.reshape(self.rank, in_c, kh, 1))
        self.horizontal.weight.copy_(b.reshape(self.rank, out_c, kw).permute(1, 0, 2).reshape(out_c, self.rank, 1, kw))
        copy_bias(self.horizontal, conv)
