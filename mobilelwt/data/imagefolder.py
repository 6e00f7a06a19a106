"""ImageFolder trees: one sub-directory per class, images inside (torchvision's layout)."""

from __future__ import annotations

from pathlib import Path

from mobilelwt.data.images import IMAGE_EXTENSIONS, ImageSet
from mobilelwt.errors import DataError


def scan_image_folder(root: Path, size: int) -> ImageSet:
    """Index ``root`` without decoding anything; classes are the sorted sub-directory names."""
    root = Path(root)
    if not root.exists():
        raise DataError(f"Data directory {root} does not exist.", "Pass --data DIR with one sub-directory per class.")
    if not root.is_dir():
        raise DataError(f"{root} is a file, not a directory.", "Pass --data DIR with one sub-directory per class.")
    classes = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not classes:
        raise DataError(
            f"Data directory {root} has no class sub-directories.",
            "Arrange images as DIR/<class>/<image>.jpg (the ImageFolder layout).",
        )
    paths: list[Path] = []
    labels: list[int] = []
    empty: list[str] = []
    for label, name in enumerate(classes):
        files = sorted(p for p in (root / name).rglob("*") if p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file())
        if not files:
            empty.append(name)
        paths.extend(files)
        labels.extend([label] * len(files))
    if not paths:
        raise DataError(
            f"Data directory {root} holds no images ({', '.join(IMAGE_EXTENSIONS)}).",
            "Put the images in DIR/<class>/ sub-directories.",
        )
    if empty:
        raise DataError(
            f"Class folder(s) without images in {root}: {', '.join(empty)}.",
            "Remove the empty folders or add images to them.",
        )
    keys = []
    for path in paths:
        stat = path.stat()
        keys.append(f"{path.relative_to(root).as_posix()}:{stat.st_size}:{stat.st_mtime_ns}")
    return ImageSet(labels, classes, size, paths=paths, keys=keys)
