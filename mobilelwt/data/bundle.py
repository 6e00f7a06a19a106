"""Train/val data for one run: a seeded stratified split, preprocessing facts, batch iteration."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from mobilelwt import distributed
from mobilelwt.data.builtin import BUILTIN_DATASETS
from mobilelwt.data.imagefolder import scan_image_folder
from mobilelwt.data.images import ImageSet, LoaderSettings
from mobilelwt.distributed import World, rank_batch_size, shard_order
from mobilelwt.errors import DataError
from mobilelwt.teachers import IMAGENET_MEAN, IMAGENET_STD

DEFAULT_CACHE_BYTES = 4 * 1024**3


@dataclass
class DataBundle:
    """A run's data: train and val splits of uint8 images, and how to turn them into model inputs."""

    source: str
    train: ImageSet
    val: ImageSet
    classes: list[str]
    input_size: int
    augment: str
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    split: dict[str, Any] = field(default_factory=dict)

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def describe(self) -> dict[str, Any]:
        """What a manifest needs to reproduce the preprocessing and the split."""
        return {
            "source": self.source,
            "classes": self.classes,
            "input_size": self.input_size,
            "resize": "shorter side to input_size (bilinear), centre crop",
            "mean": list(self.mean),
            "std": list(self.std),
            "augment": self.augment,
            "train_images": len(self.train),
            "val_images": len(self.val),
            **self.split,
        }

    def use_loader(self, settings: LoaderSettings) -> None:
        """Decode sets that are not in memory with these settings (DataLoader workers, pinned memory)."""
        self.train.loader = self.val.loader = settings

    def loader_facts(self) -> dict[str, Any]:
        """How the training images were read, and how fast: for metrics and the CLI's throughput line."""
        return self.train.loader.describe(self.train.in_memory)

    def train_batches(
        self, batch_size: int, *, seed: int, augment: bool = True, limit: int | None = None, shard: bool = True
    ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Shuffled, augmented, normalised training batches for one epoch (``seed`` fixes the order).

        ``batch_size`` and ``limit`` count images over all ranks: under torchrun this rank gets its share of each
        global batch (``DistributedSampler``), and the ranks' shares together are the one-process batch;
        ``shard=False`` gives this rank the whole batches (a rank that trains a layer alone)."""
        w = distributed.world() if shard else World()  # looked up at call time (tests stand in for ranks)
        generator = torch.Generator().manual_seed(seed * 1009 + w.rank if w.active else seed)
        if w.active:
            order = shard_order(len(self.train), seed, limit)
        else:  # the generator goes on to draw the augmentation, as it always has for one process
            order = torch.randperm(len(self.train), generator=generator)[:limit]
        per_rank = rank_batch_size(batch_size, "the batch size") if w.active else batch_size
        for images, labels in self.train.chunks(order, per_rank):
            if augment:
                images = augment_batch(images, self.augment, generator)
            yield self.normalize(images), labels

    def eval_batches(self, images: ImageSet, batch_size: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        return iterate_normalized(images, self.mean, self.std, batch_size)

    def normalize(self, images: torch.Tensor) -> torch.Tensor:
        return normalize(images, self.mean, self.std)

    def calibration(self, num_images: int, *, seed: int = 0) -> torch.Tensor:
        """``num_images`` normalised training images, a seeded class-balanced sample (for quantisation/planning)."""
        idx = stratified_split(self.train.labels, min(num_images, len(self.train)) / max(len(self.train), 1), seed)[1]
        return self.normalize(self.train.load(idx[:num_images]))


def normalize(images: torch.Tensor, mean: tuple[float, ...], std: tuple[float, ...]) -> torch.Tensor:
    x = images.float().div_(255.0)
    m = torch.tensor(mean).view(1, -1, 1, 1)
    s = torch.tensor(std).view(1, -1, 1, 1)
    return (x - m) / s


def augment_batch(images: torch.Tensor, policy: str, generator: torch.Generator) -> torch.Tensor:
    """``crop``: random shifts of up to 1/8 of the side (reflect padding); ``crop+flip`` adds horizontal flips."""
    if policy == "none":
        return images
    n, _, h, w = images.shape
    pad = max(1, h // 8)
    padded = F.pad(images.float(), (pad, pad, pad, pad), mode="reflect")
    dy = torch.randint(0, 2 * pad + 1, (n,), generator=generator).tolist()
    dx = torch.randint(0, 2 * pad + 1, (n,), generator=generator).tolist()
    out = torch.stack([padded[i, :, y : y + h, x : x + w] for i, (y, x) in enumerate(zip(dy, dx, strict=True))])
    if "flip" in policy:
        flip = torch.rand(n, generator=generator) < 0.5
        out[flip] = out[flip].flip(-1)
    return out.to(images.dtype)


def stratified_split(labels: torch.Tensor, val_fraction: float, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Indices of (train, val): each class split in the same proportion, reproducibly for a given seed."""
    generator = torch.Generator().manual_seed(seed)
    train_parts, val_parts = [], []
    for label in torch.unique(labels).tolist():
        members = torch.nonzero(labels == label).flatten()
        members = members[torch.randperm(len(members), generator=generator)]
        n_val = round(len(members) * val_fraction)
        if val_fraction > 0 and len(members) >= 2:
            n_val = min(max(n_val, 1), len(members) - 1)  # every class is both trained on and validated
        val_parts.append(members[:n_val])
        train_parts.append(members[n_val:])
    return torch.cat(train_parts).sort().values, torch.cat(val_parts).sort().values


def list_builtin_datasets() -> list[dict[str, Any]]:
    return [
        {
            "name": d.name,
            "classes": d.num_classes,
            "images": d.num_images,
            "default_input_size": d.default_input_size,
            "description": d.description,
        }
        for d in (BUILTIN_DATASETS.get(n) for n in BUILTIN_DATASETS.names())
    ]


def default_input_size(data: str) -> int:
    return BUILTIN_DATASETS.get(data).default_input_size if data in BUILTIN_DATASETS else 224


def load_data(
    data: str | Path,
    input_size: int,
    *,
    val_fraction: float = 0.1,
    seed: int = 0,
    val_data: str | Path | None = None,
    cache: bool | None = None,
    cache_bytes: int = DEFAULT_CACHE_BYTES,
    expected_classes: list[str] | None = None,
) -> DataBundle:
    """Load a built-in dataset by name or an ImageFolder directory, split it into train/val.

    With ``val_data`` the whole of ``data`` trains and ``val_data`` (same class folders) validates.
    ``cache=None`` decodes images into memory when they fit in ``cache_bytes``.
    ``expected_classes`` (a teacher's classes) must match the data's class folders exactly.
    """
    if not 0.0 <= val_fraction < 1.0:
        raise DataError(f"--val-fraction must be in [0, 1), got {val_fraction}.", "Use e.g. 0.1.")
    name = str(data)
    if name in BUILTIN_DATASETS:
        spec = BUILTIN_DATASETS.get(name)
        full, augment = spec.loader(input_size), spec.augment
    else:
        _check_not_a_misspelt_name(name)
        full, augment = scan_image_folder(Path(name), input_size), "crop+flip"
        name = str(Path(name).resolve())  # recorded absolute: later stages may run from another directory
    _check_classes(full.classes, expected_classes, name)

    if val_data is not None:
        val = scan_image_folder(Path(val_data), input_size)
        _check_classes(val.classes, full.classes, str(val_data))
        train, split = full, {"split": "separate", "val_source": str(Path(val_data).resolve())}
    else:
        if val_fraction == 0.0:
            raise DataError("--val-fraction 0 leaves no validation images.", "Use a fraction > 0 or --val-data DIR.")
        train_idx, val_idx = stratified_split(full.labels, val_fraction, seed)
        if len(val_idx) == 0 or len(train_idx) == 0:
            raise DataError(f"{name} has too few images ({len(full)}) to split.", "Add images or use --val-data.")
        train, val = full.subset(train_idx), full.subset(val_idx)
        split = {"split": "stratified", "val_fraction": val_fraction, "split_seed": seed}

    def cached(part: ImageSet) -> ImageSet:
        return part.materialize() if cache or (cache is None and part.nbytes() <= cache_bytes) else part

    train, val = cached(train), cached(val)
    return DataBundle(
        source=name, train=train, val=val, classes=full.classes, input_size=input_size, augment=augment, split=split
    )


def source_fingerprint(data: str | Path, input_size: int | None) -> str:
    """Content identity of a data source without decoding it: a built-in's name, version and size, or every
    file's name, size and modification time in an ImageFolder tree."""
    import hashlib

    name = str(data)
    if name in BUILTIN_DATASETS:
        from importlib.metadata import version

        return hashlib.sha256(f"{name}:{input_size}:sklearn {version('scikit-learn')}".encode()).hexdigest()
    _check_not_a_misspelt_name(name)
    return scan_image_folder(Path(name), input_size or 0).fingerprint()


def _check_not_a_misspelt_name(name: str) -> None:
    if not Path(name).exists() and "/" not in name and "\\" not in name:
        raise DataError(
            f"{name!r} is neither a built-in dataset nor an existing directory.",
            f"Built-in datasets: {', '.join(BUILTIN_DATASETS.names())}; or pass an ImageFolder directory.",
        )


def load_labelled(
    data: str | Path,
    input_size: int,
    *,
    expected_classes: list[str] | None = None,
    cache_bytes: int = DEFAULT_CACHE_BYTES,
) -> ImageSet:
    """A whole labelled set (built-in name or ImageFolder) without a split, e.g. a separate evaluation set."""
    name = str(data)
    images = BUILTIN_DATASETS.get(name).loader(input_size) if name in BUILTIN_DATASETS else None
    if images is None:
        images = scan_image_folder(Path(name), input_size)
    _check_classes(images.classes, expected_classes, name)
    return images.materialize() if images.nbytes() <= cache_bytes else images


def iterate_normalized(
    images: ImageSet, mean: tuple[float, ...], std: tuple[float, ...], batch_size: int
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    for batch, labels in images.chunks(torch.arange(len(images)), batch_size):
        yield normalize(batch, mean, std), labels


def _check_classes(found: list[str], expected: list[str] | None, where: str) -> None:
    if expected is None or list(found) == list(expected):
        return
    missing = [c for c in expected if c not in found]
    extra = [c for c in found if c not in expected]
    detail = []
    if missing:
        detail.append(f"missing {', '.join(missing)}")
    if extra:
        detail.append(f"unexpected {', '.join(extra)}")
    if not detail:
        detail.append("same names in a different order")
    raise DataError(
        f"The classes of {where} do not match the model's classes ({'; '.join(detail)}).",
        f"Use data with exactly these class folders: {', '.join(expected)}.",
    )
