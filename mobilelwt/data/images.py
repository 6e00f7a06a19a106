"""Labelled images as uint8 tensors at the model's input size, held in memory or decoded from disk on demand."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from mobilelwt.errors import DataError

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".ppm", ".pgm", ".tif", ".tiff", ".webp")
DECODER = "pil-draft/1"  # part of a set's fingerprint: another decoder may give other pixels


def decode_image(path: Path, size: int) -> torch.Tensor:
    """Read an image as RGB, resize its shorter side to ``size`` and centre-crop a square: uint8 3×size×size."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as img:
            w, h = img.size
            scale = size / min(w, h)
            if img.format == "JPEG" and scale < 0.5:
                # the JPEG decoder scales by 1/2, 1/4 or 1/8 in the DCT, no smaller than asked: ImageNet-size
                # photos decode several times faster, and the bilinear resize below does the rest
                img.draft("RGB", (max(size, round(w * scale)), max(size, round(h * scale))))
                w, h = img.size
                scale = size / min(w, h)
            img = img.convert("RGB")
            new_w, new_h = max(size, round(w * scale)), max(size, round(h * scale))
            img = img.resize((new_w, new_h), Image.Resampling.BILINEAR)
            left, top = (new_w - size) // 2, (new_h - size) // 2
            img = img.crop((left, top, left + size, top + size))
            array = np.asarray(img, dtype=np.uint8)
    except Image.DecompressionBombError:
        raise DataError(
            f"Image {path} is too large to decode safely (over {Image.MAX_IMAGE_PIXELS * 2:,} pixels).",
            "Downscale or remove the file; training images need only the model's input size.",
        ) from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise DataError(f"Cannot read image {path} ({exc}).", "Remove or replace the corrupt file.") from None
    return torch.from_numpy(array.copy()).permute(2, 0, 1).contiguous()


def _default_threads() -> int:
    return min(8, (os.cpu_count() or 1) * 2)


def default_workers(ranks: int = 1) -> int:
    """DataLoader worker processes per rank: this machine's cores shared by the ranks, at most 8."""
    return max(1, min(8, (os.cpu_count() or 1) // max(ranks, 1)))


@dataclass(frozen=True)
class LoaderSettings:
    """How a set that is not in memory is decoded: ``workers`` DataLoader processes (0: a thread pool in this
    process), pinned host memory for a GPU run."""

    workers: int = 0
    pin_memory: bool = False

    def describe(self, in_memory: bool) -> dict[str, object]:
        if in_memory:
            return {"path": "in-memory", "workers": 0, "pin_memory": False}
        path = "dataloader" if self.workers else "threads"
        return {"path": path, "workers": self.workers, "pin_memory": self.pin_memory, "decoder": DECODER}


@dataclass
class LoaderStats:
    """Images handed out, and the seconds the consumer waited for them (decoding the caller did not overlap)."""

    images: int = 0
    wait_s: float = 0.0


class _Decoded(Dataset[torch.Tensor]):
    def __init__(self, paths: Sequence[Path], size: int) -> None:
        self.paths, self.size = list(paths), size

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> torch.Tensor:
        return decode_image(self.paths[index], self.size)


class _PlannedBatches(Sampler[list[int]]):
    """The batches of the current pass, replaced before each pass: persistent workers live across passes."""

    def __init__(self) -> None:
        self.batches: list[list[int]] = []

    def __iter__(self) -> Iterator[list[int]]:
        return iter(self.batches)

    def __len__(self) -> int:
        return len(self.batches)


def _stack(images: list[torch.Tensor]) -> torch.Tensor:
    return torch.stack(images)


class ImageSet(Dataset[tuple[torch.Tensor, int]]):
    """Images with integer labels; ``images`` (N×3×S×S uint8) when in memory, else ``paths`` decoded on demand."""

    def __init__(
        self,
        labels: Sequence[int] | torch.Tensor,
        classes: Sequence[str],
        size: int,
        *,
        images: torch.Tensor | None = None,
        paths: Sequence[Path] | None = None,
        keys: Sequence[str] | None = None,
    ) -> None:
        if (images is None) == (paths is None):
            raise ValueError("give exactly one of images and paths")
        self.labels = torch.as_tensor(labels, dtype=torch.long)
        self.classes = list(classes)
        self.size = size
        self.images = images
        self.paths = list(paths) if paths is not None else None
        self.keys = list(keys) if keys is not None else None  # per-image identity (file name, size, mtime)
        if len(self.labels) != (len(images) if images is not None else len(self.paths or [])):
            raise ValueError("labels and images differ in length")
        self.loader = LoaderSettings()
        self.stats = LoaderStats()
        self._dataloader: tuple[LoaderSettings, DataLoader, _PlannedBatches] | None = None

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        image = self.images[index] if self.images is not None else decode_image(self.paths[index], self.size)
        return image, int(self.labels[index])

    @property
    def in_memory(self) -> bool:
        return self.images is not None

    def sample_indices(self, count: int) -> torch.Tensor:
        """``count`` indices spread evenly over the classes (all of them when ``count`` covers the set).

        Deterministic, in the set's order: each class's first images, taken in turn. A split stored class by
        class (CIFAR-10's is) would otherwise give its first images from one or two classes only."""
        if count >= len(self):
            return torch.arange(len(self))
        labels = self.labels.tolist()
        seen: dict[int, int] = {}
        rank = []
        for label in labels:  # each image's position within its class
            rank.append(seen.get(label, 0))
            seen[label] = rank[-1] + 1
        order = sorted(range(len(labels)), key=lambda i: (rank[i], labels[i]))
        return torch.tensor(sorted(order[:count]), dtype=torch.long)

    def subset(self, indices: Sequence[int] | torch.Tensor) -> ImageSet:
        idx = torch.as_tensor(indices, dtype=torch.long)
        keys = [self.keys[i] for i in idx.tolist()] if self.keys is not None else None
        if self.images is not None:
            return ImageSet(self.labels[idx], self.classes, self.size, images=self.images[idx], keys=keys)
        assert self.paths is not None
        paths = [self.paths[i] for i in idx.tolist()]
        return ImageSet(self.labels[idx], self.classes, self.size, paths=paths, keys=keys)

    def load(self, indices: Sequence[int] | torch.Tensor, threads: int | None = None) -> torch.Tensor:
        """The uint8 images at ``indices`` as one N×3×S×S tensor."""
        idx = torch.as_tensor(indices, dtype=torch.long)
        if self.images is not None:
            return self.images[idx]
        assert self.paths is not None
        paths = [self.paths[i] for i in idx.tolist()]
        with ThreadPoolExecutor(threads or _default_threads()) as pool:  # PIL releases the GIL while decoding
            return torch.stack(list(pool.map(lambda p: decode_image(p, self.size), paths)))

    def materialize(self, threads: int | None = None, chunk: int = 2048) -> ImageSet:
        """Decode every image once into memory (fast epochs for datasets that fit)."""
        if self.images is not None:
            return self
        parts = [self.load(range(i, min(i + chunk, len(self))), threads) for i in range(0, len(self), chunk)]
        images = torch.cat(parts) if parts else torch.empty(0, 3, self.size, self.size, dtype=torch.uint8)
        return ImageSet(self.labels, self.classes, self.size, images=images, keys=self.keys)

    def fingerprint(self) -> str:
        """Content identity of the set: labels plus each file's name, size and mtime (or the pixels in memory)."""
        import hashlib

        h = hashlib.sha256(f"{self.classes}{self.size}{DECODER}".encode())
        h.update(self.labels.numpy().tobytes())
        if self.keys is not None:
            h.update("\n".join(self.keys).encode())
        elif self.images is not None:
            h.update(self.images.contiguous().numpy().tobytes())
        else:
            h.update("\n".join(str(p) for p in self.paths or []).encode())
        return h.hexdigest()

    def nbytes(self) -> int:
        return len(self) * 3 * self.size * self.size

    def chunks(self, indices: torch.Tensor, batch_size: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """uint8 batches and labels in the order of ``indices``; decoding of the next batches overlaps the caller
        (DataLoader workers when ``loader.workers`` > 0, else one prefetching thread pool)."""
        batches = [indices[i : i + batch_size] for i in range(0, len(indices), batch_size)]
        if self.images is not None:
            for idx in batches:
                self.stats.images += len(idx)
                yield self.images[idx], self.labels[idx]
            return
        source = self._worker_batches(batches) if self.loader.workers > 0 else self._thread_batches(batches)
        for idx in batches:
            started = time.perf_counter()
            images = next(source)
            self.stats.wait_s += time.perf_counter() - started
            self.stats.images += len(idx)
            yield images, self.labels[idx]

    def _thread_batches(self, batches: list[torch.Tensor]) -> Iterator[torch.Tensor]:
        with ThreadPoolExecutor(1) as prefetch:
            pending = prefetch.submit(self.load, batches[0]) if batches else None
            for i in range(len(batches)):
                images = pending.result()  # type: ignore[union-attr]
                if i + 1 < len(batches):
                    pending = prefetch.submit(self.load, batches[i + 1])
                yield images

    def _worker_batches(self, batches: list[torch.Tensor]) -> Iterator[torch.Tensor]:
        if self._dataloader is None or self._dataloader[0] != self.loader:
            assert self.paths is not None
            planned = _PlannedBatches()
            loader = DataLoader(
                _Decoded(self.paths, self.size),
                batch_sampler=planned,
                num_workers=self.loader.workers,
                pin_memory=self.loader.pin_memory,
                persistent_workers=True,
                prefetch_factor=4,
                collate_fn=_stack,
            )
            self._dataloader = (self.loader, loader, planned)
        _, loader, planned = self._dataloader
        planned.batches = [b.tolist() for b in batches]
        return iter(loader)
