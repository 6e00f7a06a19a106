"""Grouped k×k convolution to ``width`` channels followed by a 1×1 mixing convolution.

Depthwise-separable convolution is the case ``groups = in_channels`` (width = depth multiplier × in_channels).
Closed-form init: within group g the teacher kernel restricted to g's input channels, unfolded as
out_channels × (in_per_group·kh·kw), is approximated by its truncated SVD of rank width/groups; the left factors
become the mixing weights of the group's channels, the right factors its grouped filters.
"""

from __future__ import annotations

import torch
from torch import nn

from mobilelwt.errors import ConfigError
from mobilelwt.modules._common import (
    Replacement,
    check_plain_conv,
    conv_geometry,
    copy_bias,
    pair,
    round_width,
    truncated_svd,
)


class GroupedMixingConv(Replacement):
    kind = "grouped"

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: tuple[int, int],
        width: int,
        groups: int,
        *,
        stride: tuple[int, int] = (1, 1),
        padding: tuple[int, int] = (0, 0),
        dilation: tuple[int, int] = (1, 1),
        bias: bool = True,
    ) -> None:
        super().__init__()
        if in_channels % groups or width % groups:
            raise ConfigError(
                f"groups={groups} must divide in_channels={in_channels} and width={width}.", "Pick another group count."
            )
        self.width, self.groups = width, groups
        self.spatial = nn.Conv2d(
            in_channels,
            width,
            kernel_size,
            stride=stride,
            padding=padding,
            dilation=dilation,
            groups=groups,
            bias=False,
        )
        self.mix = nn.Conv2d(width, out_channels, 1, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.mix(self.spatial(x))

    @classmethod
    def from_teacher(cls, layer: nn.Module, *, rank: int, groups: int = 4, init: bool = True) -> GroupedMixingConv:
        """``rank`` is the total width of the grouped conv (rounded to a multiple of 8 and of ``groups``)."""
        conv = check_plain_conv(layer, "grouped")
        multiple = max(8, groups) if groups % 8 == 0 or 8 % groups == 0 else 8 * groups
        width = round_width(rank, multiple=multiple)
        return cls._build(conv, width, groups, init)

    @classmethod
    def _build(cls, conv: nn.Conv2d, width: int, groups: int, init: bool) -> GroupedMixingConv:
        module = cls(
            conv.in_channels,
            conv.out_channels,
            pair(conv.kernel_size),
            width,
            groups,
            **conv_geometry(conv),
        )
        return module.initialized(conv, init)

    @torch.no_grad()
    def init_from(self, conv: nn.Conv2d) -> None:
        w = conv.weight
        out_c, in_c, kh, kw = w.shape
        in_per, width_per = in_c // self.groups, self.width // self.groups
        for g in range(self.groups):
            block = w[:, g * in_per : (g + 1) * in_per].reshape(out_c, in_per * kh * kw)
            a, b = truncated_svd(block, width_per)
            self.mix.weight[:, g * width_per : (g + 1) * width_per, 0, 0] = a
            self.spatial.weight[g * width_per : (g + 1) * width_per] = b.reshape(width_per, in_per, kh, kw)
        copy_bias(self.mix, conv)


class DepthwiseSeparableConv(GroupedMixingConv):
    """Depthwise k×k with a depth multiplier, then a pointwise 1×1 (MobileNet's block, SVD-initialised)."""

    kind = "depthwise_separable"

    @property
    def multiplier(self) -> int:
        return self.width // self.groups

    @classmethod
    def from_teacher(  # type: ignore[override]
        cls, layer: nn.Module, *, rank: int = 1, init: bool = True
    ) -> DepthwiseSeparableConv:
        """``rank`` is the depth multiplier (outputs per input channel of the depthwise conv)."""
        conv = check_plain_conv(layer, "depthwise_separable")
        multiplier = max(1, int(rank))
        return cls._build(conv, conv.in_channels * multiplier, conv.in_channels, init)  # type: ignore[return-value]
