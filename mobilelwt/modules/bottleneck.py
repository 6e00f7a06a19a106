"""Channel bottleneck: 1×1 down to ``rank_in`` channels, k×k to ``rank_out``, 1×1 up (Tucker-2).

Closed-form init (Kim et al. 2016): HOSVD of the kernel along its output and input channel modes.
"""

from __future__ import annotations

import torch
from torch import nn

from mobilelwt.modules._common import Replacement, check_plain_conv, conv_geometry, copy_bias, pair, round_width


class ChannelBottleneckConv(Replacement):
    kind = "bottleneck"

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: tuple[int, int],
        rank_in: int,
        rank_out: int,
        *,
        stride: tuple[int, int] = (1, 1),
        padding: tuple[int, int] = (0, 0),
        dilation: tuple[int, int] = (1, 1),
        bias: bool = True,
    ) -> None:
        super().__init__()
        self.rank_in, self.rank_out = rank_in, rank_out
        self.reduce = nn.Conv2d(in_channels, rank_in, 1, bias=False)
        self.core = nn.Conv2d(
            rank_in, rank_out, kernel_size, stride=stride, padding=padding, dilation=dilation, bias=False
        )
        self.expand = nn.Conv2d(rank_out, out_channels, 1, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.expand(self.core(self.reduce(x)))

    @staticmethod
    def max_rank(layer: nn.Conv2d) -> int:
        return min(layer.in_channels, layer.out_channels)

    @classmethod
    def from_teacher(
        cls, layer: nn.Module, *, rank: int, rank_out: int | None = None, init: bool = True
    ) -> ChannelBottleneckConv:
        conv = check_plain_conv(layer, "bottleneck")
        rank_in = round_width(rank, maximum=conv.in_channels)
        rank_out = round_width(
            rank_out if rank_out is not None else rank * conv.out_channels / conv.in_channels, maximum=conv.out_channels
        )
        module = cls(
            conv.in_channels,
            conv.out_channels,
            pair(conv.kernel_size),
            rank_in,
            rank_out,
            **conv_geometry(conv),
        )
        return module.initialized(conv, init)

    @torch.no_grad()
    def init_from(self, conv: nn.Conv2d) -> None:
        w = conv.weight.double()
        out_c, in_c, kh, kw = w.shape
        u_out = torch.linalg.svd(w.reshape(out_c, -1), full_matrices=False)[0][:, : self.rank_out]
        u_in = torch.linalg.svd(w.transpose(0, 1).reshape(in_c, -1), full_matrices=False)[0][:, : self.rank_in]
        core = torch.einsum("oihw,or,is->rshw", w, u_out, u_in)  # (rank_out, rank_in, kh, kw)
        self.reduce.weight.zero_()
        self.core.weight.zero_()
        self.expand.weight.zero_()
        self.reduce.weight[: u_in.shape[1], :, 0, 0] = u_in.T.float()
        self.core.weight[: core.shape[0], : core.shape[1]] = core.float()
        self.expand.weight[:, : u_out.shape[1], 0, 0] = u_out.float()
        copy_bias(self.expand, conv)
