import pytest

from mobilelwt.errors import MobileLWTError, UnknownNameError
from mobilelwt.registry import Registry
from mobilelwt.teachers import TEACHERS, get_teacher_spec, list_teachers


def test_registry_refuses_duplicates() -> None:
    registry: Registry[int] = Registry("widget")
    registry.add("a", 1)
    with pytest.raises(ValueError, match="already registered"):
        registry.add("a", 2)
    assert registry.get("a") == 1


def test_unknown_name_lists_known_names() -> None:
    registry: Registry[int] = Registry("widget")
    registry.add("b", 1)
    registry.add("a", 2)
    with pytest.raises(UnknownNameError) as info:
        registry.get("c")
    assert isinstance(info.value, MobileLWTError)
    assert "Unknown widget 'c'" in str(info.value)
    assert "a, b" in info.value.fix


def test_teacher_registry_has_the_paper_architectures() -> None:
    names = list_teachers()
    for name in ["alexnet", "vgg11", "vgg13", "vgg16", "vgg19", "vgg11_bn", "vgg16_bn", "vgg19_bn", "resnet18"]:
        assert name in names
    with pytest.raises(ValueError):
        TEACHERS.add("alexnet", get_teacher_spec("alexnet"))
    with pytest.raises(UnknownNameError, match="alexnet"):
        get_teacher_spec("alexnett")
