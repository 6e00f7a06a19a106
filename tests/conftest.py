"""Shared fixtures: tiny ImageFolder trees and a quickly trained teacher checkpoint."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image


def write_image_folder(root: Path, classes: dict[str, int], size: int = 20, seed: int = 0) -> Path:
    """An ImageFolder tree whose classes differ in colour, so a model can learn them."""
    rng = np.random.default_rng(seed)
    for label, (name, count) in enumerate(classes.items()):
        folder = root / name
        folder.mkdir(parents=True, exist_ok=True)
        base = np.zeros(3)
        base[label % 3] = 200
        for i in range(count):
            pixels = np.clip(base + rng.normal(0, 25, (size, size + 4, 3)), 0, 255).astype(np.uint8)
            Image.fromarray(pixels).save(folder / f"{i:03d}.png" if i % 2 else folder / f"{i:03d}.jpg")
    return root


@pytest.fixture
def image_folder(tmp_path: Path) -> Path:
    return write_image_folder(tmp_path / "imgs", {"cat": 12, "dog": 12, "eel": 12})


@pytest.fixture(scope="session")
def digits_teacher(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An AlexNet trained briefly on digits at 64² (the checkpoint format that --weights reads)."""
    from mobilelwt.train import TrainConfig, train_teacher

    out = tmp_path_factory.mktemp("teacher") / "alexnet-digits.pt"
    train_teacher("alexnet", data="digits", out=out, input_size=64, config=TrainConfig(epochs=1, max_steps_per_epoch=3))
    return out
