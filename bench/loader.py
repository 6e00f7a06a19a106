"""Data-loading throughput of the streamed path: images/s delivered as training batches at 224².

The set is forced onto the streamed path (``cache=False``: decoded from disk every pass, as a set too large for
memory is). Loaders compared, interleaved round by round so drift hits all of them alike, after one warm-up pass
each (which also starts the persistent workers): ``threads`` (decoding in a thread pool of the training process,
the loader before DataLoader support, ``--workers 0``) and the DataLoader path with each ``--workers`` count.
Each pass reads ``--images`` training images in batches of ``--batch-size`` with augmentation, like an epoch.

    python bench/loader.py --data ../shared/data/cifar10-train --size 224 --workers 1 2 --out bench/results/loader.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import numpy as np


def one_pass(bundle, images: int, batch_size: int, seed: int) -> float:
    started = time.perf_counter()
    seen = 0
    for x, _ in bundle.train_batches(batch_size, seed=seed, limit=images):
        seen += len(x)
    return seen / (time.perf_counter() - started)


def decode_costs(count: int, size: int, rounds: int, photo: tuple[int, int]) -> dict:
    """ms per photo-sized JPEG (quality 90), one core: mobilelwt's decode (JPEG draft when the photo is at least
    twice the input size) vs a full decode."""
    import tempfile

    from PIL import Image

    from mobilelwt.data import decode_image

    def full_decode(path: Path) -> None:
        """The same decode with libjpeg's DCT scaling switched off."""
        from PIL import JpegImagePlugin

        draft = JpegImagePlugin.JpegImageFile.draft
        JpegImagePlugin.JpegImageFile.draft = lambda self, mode, size: None  # type: ignore[method-assign]
        try:
            decode_image(path, size)
        finally:
            JpegImagePlugin.JpegImageFile.draft = draft  # type: ignore[method-assign]

    rng = np.random.default_rng(0)
    folder = Path(tempfile.mkdtemp(prefix="bench-photos-"))
    width, height = photo
    yy, xx = np.mgrid[0:height, 0:width]
    paths = []
    for i in range(count):  # smooth shapes plus texture: compresses like a photo, not like noise
        base = np.stack([128 + 100 * np.sin(xx / (30 + i) + c) * np.cos(yy / (40 + 2 * i)) for c in range(3)], -1)
        pixels = np.clip(base + rng.normal(0, 12, base.shape), 0, 255).astype(np.uint8)
        paths.append(folder / f"{i}.jpg")
        Image.fromarray(pixels).save(paths[-1], quality=90)
    ms: dict[str, list[float]] = {"draft (mobilelwt)": [], "full decode (no draft)": []}
    for r in range(rounds):
        for name in list(ms) if r % 2 == 0 else list(reversed(ms)):
            started = time.perf_counter()
            for path in paths:
                decode_image(path, size) if name.startswith("draft") else full_decode(path)
            ms[name].append(1000 * (time.perf_counter() - started) / count)
    for path in paths:
        path.unlink()
    folder.rmdir()
    return {"photo": f"{width}x{height} JPEG q90", "images": count, "rounds": rounds, "ms_per_image": ms,
            "median_ms": {k: float(np.median(v)) for k, v in ms.items()}}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", default="../shared/data/cifar10-train")
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--images", type=int, default=1024)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--photos", type=int, default=64, help="ImageNet-sized JPEGs for the decode cost (0: none)")
    parser.add_argument("--photo-size", nargs="+", default=["500x375", "1000x750"], help="WxH of the photos")
    parser.add_argument("--skip-loaders", action="store_true", help="only the decode cost")
    parser.add_argument("--out", default="bench/results/loader.json")
    args = parser.parse_args()

    import torch

    from device_bench.stats import speedup_ci
    from mobilelwt.data import load_data
    from mobilelwt.data.images import DECODER, LoaderSettings
    from mobilelwt.manifest import environment

    loaders = {"threads (--workers 0)": 0, **{f"DataLoader, {w} worker(s)": w for w in args.workers}}
    bundles = {}
    if args.skip_loaders:
        loaders = {}
    for name, workers in loaders.items():
        bundle = load_data(args.data, args.size, val_fraction=0.02, seed=0, cache=False)
        bundle.use_loader(LoaderSettings(workers=workers))
        one_pass(bundle, args.batch_size * 2, args.batch_size, seed=999)  # warm-up: page cache, workers started
        bundles[name] = bundle
    rates: dict[str, list[float]] = {name: [] for name in loaders}
    for r in range(args.rounds):
        order = list(loaders) if r % 2 == 0 else list(reversed(loaders))
        for name in order:
            rates[name].append(one_pass(bundles[name], args.images, args.batch_size, seed=r))
            print(f"round {r + 1}/{args.rounds} {name}: {rates[name][-1]:.0f} images/s", flush=True)

    baseline = "threads (--workers 0)"
    rows = []
    for name, values in rates.items() if loaders else ():
        # a rate's inverse is a time per image: the interval of the ratio of medians, as for latencies
        low, high = speedup_ci([1 / v for v in rates[baseline]], [1 / v for v in values])
        rows.append(
            {
                "loader": name,
                "workers": loaders[name],
                "images_per_s_median": float(np.median(values)),
                "images_per_s": values,
                "vs_threads": float(np.median(values) / np.median(rates[baseline])),
                "vs_threads_ci95": [low, high],
            }
        )
    if rows:
        print(f"\n{args.images} images per pass at {args.size}², batch {args.batch_size}, {args.rounds} rounds")
        print(f"{'loader':28} {'images/s':>10} {'vs threads':>11} {'95% CI':>15}")
    for row in rows:
        low, high = row["vs_threads_ci95"]
        print(f"{row['loader']:28} {row['images_per_s_median']:10.0f} {row['vs_threads']:10.2f}× "
              f"{low:6.2f}–{high:.2f}×")  # fmt: skip
    decode = []
    for photo in args.photo_size if args.photos else []:
        w, h = (int(v) for v in photo.split("x"))
        decode.append(decode_costs(args.photos, args.size, args.rounds, (w, h)))
        print(f"ms per {decode[-1]['photo']} decoded to {args.size}² on one core (median of {args.rounds}): "
              + ", ".join(f"{k} {v:.2f}" for k, v in decode[-1]["median_ms"].items()))  # fmt: skip
    result = {
        "benchmark": "loader",
        "decode": decode,
        "data": str(Path(args.data).resolve()),
        "input_size": args.size,
        "images_per_pass": args.images,
        "batch_size": args.batch_size,
        "rounds": args.rounds,
        "decoder": DECODER,
        "machine": {"cpus": os.cpu_count(), "processor": platform.processor() or platform.machine()},
        "torch_threads": torch.get_num_threads(),
        "environment": environment(),
        "rows": rows,
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
