"""Helpers shared by the replacement modules: width rounding, conv geometry, truncated SVD."""

from __future__ import annotations

from collections import OrderedDict
from typing import Any

import torch
from torch import nn

from mobilelwt.errors import ConfigError
from mobilelwt.hashing import tensor_sha256
from mobilelwt.profile import profile_module

WIDTH_MULTIPLE = 8


def round_width(width: float, *, multiple: int = WIDTH_MULTIPLE, maximum: int | None = None) -> int:
    """Round a channel count to a multiple of ``multiple`` (never below it, never above ``maximum``)."""
    rounded = max(multiple, int(round(width / multiple)) * multiple)
    if maximum is not None:
        rounded = min(rounded, maximum)
    return max(1, rounded)


def pair(value: int | tuple[int, ...]) -> tuple[int, int]:
    if isinstance(value, int):
        return value, value
    if len(value) != 2:
        raise ValueError(f"expected a pair, got {value}")
    return int(value[0]), int(value[1])


def check_plain_conv(layer: nn.Module, module_name: str, *, allow_groups: bool = False) -> nn.Conv2d:
    """A 2-D convolution with explicit zero padding: what every conv replacement can reproduce exactly."""
    if not isinstance(layer, nn.Conv2d):
        raise ConfigError(f"{module_name} replaces Conv2d layers, not {type(layer).__name__}.", "Fix the plan.")
    if isinstance(layer.padding, str) or layer.padding_mode != "zeros":
        raise ConfigError(
            f"{module_name} needs explicit zero padding; this layer has padding={layer.padding!r}, "
            f"padding_mode={layer.padding_mode!r}.",
            "Leave this layer out of the plan.",
        )
    if layer.groups != 1 and not allow_groups:
        raise ConfigError(
            f"{module_name} cannot replace a grouped convolution (groups={layer.groups}).", "Leave it out."
        )
    return layer


def conv_geometry(conv: nn.Conv2d) -> dict[str, Any]:
    """The keyword arguments that make a replacement reproduce ``conv``'s output shape (and its bias)."""
    return {
        "stride": pair(conv.stride),
        "padding": pair(conv.padding),
        "dilation": pair(conv.dilation),
        "bias": conv.bias is not None,
    }


def truncated_svd(matrix: torch.Tensor, rank: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Factors ``A (m×r)`` and ``B (r×n)`` with ``A @ B`` the best rank-``rank`` approximation of ``matrix``.

    The singular values are split evenly (√s on each side) so both factors have comparable scale for training.
    Ranks above the matrix rank are padded with zeros.
    """
    m, n = matrix.shape
    k = min(rank, m, n)
    u, s, vh = _top_svd(matrix, k)
    root = s[:k].sqrt()
    a = torch.zeros(m, rank, dtype=u.dtype)
    b = torch.zeros(rank, n, dtype=u.dtype)
    a[:, :k] = u[:, :k] * root
    b[:k] = root[:, None] * vh[:k]
    return a.to(matrix.dtype), b.to(matrix.dtype)


_SVD_CACHE_BYTES = 1 << 30
_SVD_CACHE: OrderedDict[str, tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = OrderedDict()


def _fingerprint(matrix: torch.Tensor) -> str:
    """Every byte of the matrix: sums or samples collide for permuted or locally edited weights."""
    return tensor_sha256(matrix)


def _top_svd(matrix: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The top-``k`` singular triplets, cached: planners try many ranks of one layer, and the truncated SVD at a
    lower rank is a prefix of the one at a higher rank."""
    key = _fingerprint(matrix)
    cached = _SVD_CACHE.get(key)
    if cached is not None and cached[1].numel() >= k:
        _SVD_CACHE.move_to_end(key)
        return cached
    m, n = matrix.shape
    if m * n > 4_000_000 and k < min(m, n) // 2:
        # randomised SVD (Halko et al.) with power iterations: near-optimal, several times faster on big FC layers
        u, s, v = torch.svd_lowrank(matrix.float(), q=min(k + 16, m, n), niter=4)
        result = (u[:, :k], s[:k], v.T[:k])
    else:
        u, s, vh = torch.linalg.svd(matrix.double(), full_matrices=False)
        result = (u, s, vh)
    _SVD_CACHE[key] = result
    while len(_SVD_CACHE) > 1 and sum(_nbytes(v) for v in _SVD_CACHE.values()) > _SVD_CACHE_BYTES:
        _SVD_CACHE.popitem(last=False)
    return result


def _nbytes(triplet: tuple[torch.Tensor, ...]) -> int:
    return sum(t.numel() * t.element_size() for t in triplet)


def copy_bias(target: nn.Module, source: nn.Module) -> None:
    if getattr(source, "bias", None) is not None and getattr(target, "bias", None) is not None:
        target.bias.data.copy_(source.bias.data)
    elif getattr(target, "bias", None) is not None:
        target.bias.data.zero_()


class Replacement(nn.Module):
    """Base of the replacement modules: a registry ``kind`` and MAC reporting."""

    kind = ""

    def init_from(self, layer: nn.Module) -> None:
        raise NotImplementedError

    def initialized(self, layer: nn.Module, init: bool) -> Replacement:
        """``self`` after the closed-form initialisation from ``layer`` (skipped when ``init`` is false)."""
        if init:
            self.init_from(layer)
        return self

    def macs(self, input_shape: tuple[int, ...]) -> int:
        """MACs for one sample of ``input_shape`` ((C, H, W) or (features,)), counted shape-only."""
        return sum(row.macs for row in profile_module(self, input_shape))
