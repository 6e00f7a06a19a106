"""Teachers: torchvision classification CNNs, built by name."""

from mobilelwt.teachers import alexnet, resnet, vgg  # noqa: F401  (registers the architectures)
from mobilelwt.teachers._api import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    TEACHERS,
    Teacher,
    TeacherSpec,
    build_teacher,
    canonical_model_name,
    check_input_size,
    check_model,
    find_head,
    get_teacher_spec,
    list_teachers,
    min_input_size,
    model_slug,
    register_teacher,
)

__all__ = [
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "TEACHERS",
    "Teacher",
    "TeacherSpec",
    "build_teacher",
    "canonical_model_name",
    "check_model",
    "check_input_size",
    "find_head",
    "get_teacher_spec",
    "list_teachers",
    "min_input_size",
    "model_slug",
    "register_teacher",
]
