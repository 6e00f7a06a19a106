import pytest
import torch

from mobilelwt.errors import CheckpointError, ConfigError
from mobilelwt.teachers import build_teacher, get_teacher_spec, min_input_size
from mobilelwt.teachers._api import imagenet_weights_path


def test_num_classes_and_input_size() -> None:
    teacher = build_teacher("alexnet", num_classes=7, input_size=64)
    assert teacher.model(torch.zeros(2, 3, 64, 64)).shape == (2, 7)
    assert teacher.num_classes == 7 and teacher.input_size == 64 and teacher.weights == "none"


def test_input_too_small_names_the_minimum() -> None:
    assert min_input_size("alexnet") == 63
    with pytest.raises(ConfigError, match="--input-size 63"):
        build_teacher("alexnet", input_size=40)


def test_vgg_bn_variant_builds() -> None:
    model = build_teacher("vgg11_bn", num_classes=3, input_size=32).model
    assert any(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules())
    assert model(torch.zeros(1, 3, 32, 32)).shape == (1, 3)


def test_imagenet_weights_missing_from_cache_says_where_to_put_them(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    path, url = imagenet_weights_path(get_teacher_spec("alexnet"))
    assert path.is_relative_to(tmp_path)
    with pytest.raises(CheckpointError) as info:
        build_teacher("alexnet", weights="imagenet")
    assert str(path) in str(info.value) and url in info.value.fix


def test_imagenet_weights_from_local_cache_and_new_head(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    path, _ = imagenet_weights_path(get_teacher_spec("alexnet"))
    path.parent.mkdir(parents=True)
    reference = build_teacher("alexnet").model.state_dict()  # 1000 classes, stands in for the real file
    torch.save(reference, path)
    teacher = build_teacher("alexnet", weights="imagenet", num_classes=10)
    state = teacher.model.state_dict()
    assert torch.equal(state["features.0.weight"], reference["features.0.weight"])
    assert state["classifier.6.weight"].shape == (10, 4096)  # fresh head for the user's classes


def test_checkpoint_metadata_supplies_classes_and_size(digits_teacher) -> None:
    teacher = build_teacher("alexnet", weights=digits_teacher)
    assert teacher.num_classes == 10 and teacher.input_size == 64
    assert teacher.classes == [str(i) for i in range(10)]
    with pytest.raises(ConfigError, match="--num-classes 5 contradicts"):
        build_teacher("alexnet", weights=digits_teacher, num_classes=5)
    with pytest.raises(CheckpointError, match="not 'vgg11'"):
        build_teacher("vgg11", weights=digits_teacher)
