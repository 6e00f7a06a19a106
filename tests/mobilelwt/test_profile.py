import pytest
import torch
from torch import nn

from mobilelwt.profile import count_macs, count_params, profile_layers
from mobilelwt.teachers import build_teacher

# torchvision's published figures (GFLOPS counted as multiply-accumulates) at 224².
PUBLISHED_GMACS = {"alexnet": 0.714, "vgg16": 15.47, "vgg11": 7.61, "vgg19": 19.63, "resnet18": 1.81, "resnet50": 4.09}
PUBLISHED_PARAMS = {"alexnet": 61_100_840, "vgg16": 138_357_544}


@pytest.mark.parametrize("name", sorted(PUBLISHED_GMACS))
def test_macs_match_torchvision_published_figures(name: str) -> None:
    model = build_teacher(name, device="meta").model
    gmacs = count_macs(model, 224) / 1e9
    assert gmacs == pytest.approx(PUBLISHED_GMACS[name], rel=0.01)


@pytest.mark.parametrize("name", sorted(PUBLISHED_PARAMS))
def test_param_counts(name: str) -> None:
    assert count_params(build_teacher(name, device="meta").model) == PUBLISHED_PARAMS[name]


def test_grouped_and_strided_convolutions_are_counted_exactly() -> None:
    model = nn.Sequential(
        nn.Conv2d(8, 16, 3, stride=2, padding=1, groups=4), nn.ReLU(), nn.Flatten(), nn.Linear(16 * 4 * 4, 5)
    )
    rows = profile_layers(model, 8, in_channels=8)
    conv, relu, _, fc = rows
    assert conv.output_shape == (16, 4, 4)
    assert conv.macs == 16 * 4 * 4 * (8 // 4) * 9
    assert relu.macs == 0
    assert fc.macs == 256 * 5 and fc.params == 256 * 5 + 5


def test_profile_does_not_touch_real_weights() -> None:
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4)).train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    profile_layers(model, 10)
    assert model.training
    for key, value in model.state_dict().items():
        assert not value.is_meta and torch.equal(value, before[key])
