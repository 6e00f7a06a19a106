"""Built-in datasets that ship with installed packages, so the main job runs offline anywhere."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from mobilelwt.data.images import ImageSet
from mobilelwt.registry import Registry


@dataclass(frozen=True)
class BuiltinDataset:
    name: str
    description: str
    num_classes: int
    num_images: int
    default_input_size: int
    augment: str
    loader: Callable[[int], ImageSet]


BUILTIN_DATASETS: Registry[BuiltinDataset] = Registry("dataset")


def _load_digits(size: int) -> ImageSet:
    from sklearn.datasets import load_digits

    digits = load_digits()
    # 8×8 grey levels 0..16 -> uint8, upsampled to the input size and repeated to three channels.
    pixels = torch.from_numpy(digits.images).float().unsqueeze(1) * (255.0 / 16.0)
    pixels = F.interpolate(pixels, size=(size, size), mode="bilinear", align_corners=False)
    images = pixels.clamp(0, 255).round().to(torch.uint8).expand(-1, 3, -1, -1).contiguous()
    classes = [str(c) for c in digits.target_names]
    return ImageSet(torch.from_numpy(digits.target), classes, size, images=images)


BUILTIN_DATASETS.add(
    "digits",
    BuiltinDataset(
        name="digits",
        description="scikit-learn's handwritten digits (UCI), 8×8 greyscale upsampled to RGB",
        num_classes=10,
        num_images=1797,
        default_input_size=64,
        augment="crop",  # no flips: a mirrored digit is another symbol
        loader=_load_digits,
    ),
)
