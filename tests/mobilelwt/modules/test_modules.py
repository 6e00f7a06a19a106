import itertools

import pytest
import torch
from torch import nn

from mobilelwt.errors import ConfigError
from mobilelwt.modules import (
    REPLACEMENTS,
    ChannelBottleneckConv,
    DepthwiseSeparableConv,
    FactorizedLinear,
    GroupedMixingConv,
    LowRankSpatialConv,
    build_replacement,
)
from mobilelwt.modules._common import round_width
from mobilelwt.profile import profile_module

CONV_KINDS = ["lowrank_spatial", "bottleneck", "grouped", "depthwise_separable"]
GEOMETRIES = [
    # kernel, stride, padding, dilation
    (3, 1, 1, 1),
    (3, 2, 1, 1),
    (5, 1, 2, 1),
    (5, 2, 0, 1),
    (3, 1, 2, 2),
    ((3, 5), (2, 1), (1, 2), 1),
    (11, 4, 2, 1),
]


def _rank(kind: str) -> int:
    return 2 if kind == "depthwise_separable" else 16


@pytest.mark.parametrize(("kind", "geometry"), list(itertools.product(CONV_KINDS, GEOMETRIES)))
def test_output_shape_matches_teacher(kind, geometry) -> None:
    kernel, stride, padding, dilation = geometry
    teacher = nn.Conv2d(16, 24, kernel, stride=stride, padding=padding, dilation=dilation)
    module = build_replacement(kind, teacher, rank=_rank(kind))
    x = torch.randn(2, 16, 29, 31)
    assert module(x).shape == teacher(x).shape


def test_factorized_linear_shape() -> None:
    teacher = nn.Linear(40, 30)
    module = FactorizedLinear.from_teacher(teacher, rank=12)
    assert module.rank == 16  # rounded to a multiple of 8
    assert module(torch.randn(3, 40)).shape == (3, 30)


def _low_rank_spatial_kernel(out_c: int, in_c: int, k: int, rank: int) -> torch.Tensor:
    vertical = torch.randn(rank, in_c, k)
    horizontal = torch.randn(out_c, rank, k)
    return torch.einsum("rcy,orx->ocyx", vertical, horizontal)


def test_svd_init_is_exact_for_a_low_rank_spatial_kernel() -> None:
    teacher = nn.Conv2d(12, 20, 3, padding=1, stride=2)
    with torch.no_grad():
        teacher.weight.copy_(_low_rank_spatial_kernel(20, 12, 3, rank=8))
    module = LowRankSpatialConv.from_teacher(teacher, rank=8)
    x = torch.randn(2, 12, 17, 17)
    assert torch.allclose(module(x), teacher(x), atol=1e-4, rtol=1e-4)


@torch.no_grad()
def test_lowrank_error_falls_with_rank() -> None:
    torch.manual_seed(0)
    teacher = nn.Conv2d(32, 32, 3, padding=1)
    x = torch.randn(4, 32, 12, 12)
    errors = [
        float((LowRankSpatialConv.from_teacher(teacher, rank=r)(x) - teacher(x)).pow(2).mean()) for r in (8, 32, 96)
    ]
    assert errors[0] > errors[1] > errors[2] and errors[2] < 1e-8  # rank 96 = 32·3 is full rank


def test_bottleneck_init_is_exact_when_channels_are_low_rank() -> None:
    core = torch.randn(8, 8, 3, 3)
    u_out, u_in = torch.randn(24, 8), torch.randn(16, 8)
    teacher = nn.Conv2d(16, 24, 3, padding=1)
    with torch.no_grad():
        teacher.weight.copy_(torch.einsum("rshw,or,is->oihw", core, u_out, u_in))
    module = ChannelBottleneckConv.from_teacher(teacher, rank=8, rank_out=8)
    x = torch.randn(2, 16, 9, 9)
    assert torch.allclose(module(x), teacher(x), atol=1e-3, rtol=1e-3)


def test_depthwise_separable_init_is_exact_for_separable_kernels() -> None:
    depthwise = torch.randn(16, 1, 3, 3)
    pointwise = torch.randn(24, 16)
    teacher = nn.Conv2d(16, 24, 3, padding=1)
    with torch.no_grad():
        teacher.weight.copy_(pointwise[:, :, None, None] * depthwise[:, 0][None])
    module = DepthwiseSeparableConv.from_teacher(teacher, rank=1)
    assert module.multiplier == 1 and module.spatial.groups == 16
    x = torch.randn(2, 16, 9, 9)
    assert torch.allclose(module(x), teacher(x), atol=1e-4, rtol=1e-4)


def test_grouped_init_is_exact_at_full_width() -> None:
    teacher = nn.Conv2d(16, 8, 3, padding=1)
    module = GroupedMixingConv.from_teacher(teacher, rank=32, groups=4)  # 8 per group >= rank of each block
    x = torch.randn(2, 16, 7, 7)
    assert torch.allclose(module(x), teacher(x), atol=1e-4, rtol=1e-4)


def test_linear_svd_init_is_exact_for_low_rank_weights() -> None:
    teacher = nn.Linear(64, 48)
    with torch.no_grad():
        teacher.weight.copy_(torch.randn(48, 8) @ torch.randn(8, 64))
    module = FactorizedLinear.from_teacher(teacher, rank=8)
    x = torch.randn(5, 64)
    assert torch.allclose(module(x), teacher(x), atol=1e-4, rtol=1e-4)


def test_large_linear_uses_fast_svd_and_stays_near_optimal() -> None:
    torch.manual_seed(0)
    weight = torch.randn(1024, 4096) @ torch.diag(torch.logspace(0, -2, 4096))
    teacher = nn.Linear(4096, 1024)
    with torch.no_grad():
        teacher.weight.copy_(weight)
    module = FactorizedLinear.from_teacher(teacher, rank=64)
    approx = module.up.weight @ module.down.weight
    s = torch.linalg.svdvals(weight.double())
    optimal = float((s[64:] ** 2).sum().sqrt() / (s**2).sum().sqrt())
    assert float((approx - weight).norm() / weight.norm()) < optimal * 1.01


@pytest.mark.parametrize("kind", CONV_KINDS)
def test_macs_are_reported_and_below_the_teachers(kind) -> None:
    teacher = nn.Conv2d(64, 64, 3, padding=1)
    module = build_replacement(kind, teacher, rank=_rank(kind))
    teacher_macs = sum(r.macs for r in profile_module(teacher, (64, 16, 16)))
    assert 0 < module.macs((64, 16, 16)) < teacher_macs


def test_lowrank_macs_formula() -> None:
    teacher = nn.Conv2d(32, 48, 3, padding=1, stride=2)
    module = LowRankSpatialConv.from_teacher(teacher, rank=16)
    # vertical: 16 × 32·3 per output of an (8×16) map; horizontal: 48 × 16·3 per output of (8×8)
    assert module.macs((32, 16, 16)) == 16 * 32 * 3 * 8 * 16 + 48 * 16 * 3 * 8 * 8


def test_widths_round_to_multiples_of_eight() -> None:
    assert [round_width(w) for w in (1, 5, 12, 13, 101)] == [8, 8, 16, 16, 104]
    assert round_width(100, maximum=96) == 96
    module = ChannelBottleneckConv.from_teacher(nn.Conv2d(64, 64, 3), rank=21)
    assert module.rank_in % 8 == 0 and module.rank_out % 8 == 0


def test_registry_and_unsupported_layers() -> None:
    assert set(REPLACEMENTS.names()) >= {*CONV_KINDS, "factorized_linear"}
    with pytest.raises(ConfigError, match="grouped convolution"):
        build_replacement("lowrank_spatial", nn.Conv2d(8, 8, 3, groups=2), rank=8)
    with pytest.raises(ConfigError, match="explicit zero padding"):
        build_replacement("lowrank_spatial", nn.Conv2d(8, 8, 3, padding="same"), rank=8)
    with pytest.raises(ConfigError, match="replaces Linear"):
        build_replacement("factorized_linear", nn.Conv2d(8, 8, 3), rank=8)
