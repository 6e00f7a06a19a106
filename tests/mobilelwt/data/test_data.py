import pytest
import torch

from mobilelwt.data import augment_batch, list_builtin_datasets, load_data, scan_image_folder, stratified_split
from mobilelwt.errors import DataError
from tests.conftest import write_image_folder


def test_digits_are_real_and_rgb_at_input_size() -> None:
    data = load_data("digits", 32, val_fraction=0.1, seed=0)
    assert data.classes == [str(i) for i in range(10)]
    assert len(data.train) + len(data.val) == 1797
    images, labels = next(data.eval_batches(data.val, 16))
    assert images.shape == (16, 3, 32, 32) and images.dtype == torch.float32
    raw = data.val.images
    assert torch.equal(raw[:, 0], raw[:, 1])  # grey replicated to RGB
    assert raw.dtype == torch.uint8 and raw.max() > 200 and raw.min() == 0
    assert {"name": "digits"}.items() <= list_builtin_datasets()[0].items()


def test_split_is_seeded_stratified_and_disjoint() -> None:
    labels = torch.arange(10).repeat_interleave(50)
    train_a, val_a = stratified_split(labels, 0.2, seed=3)
    train_b, val_b = stratified_split(labels, 0.2, seed=3)
    _, val_c = stratified_split(labels, 0.2, seed=4)
    assert torch.equal(val_a, val_b) and not torch.equal(val_a, val_c)
    assert len(set(train_a.tolist()) & set(val_a.tolist())) == 0
    assert len(train_a) + len(val_a) == 500
    assert torch.bincount(labels[val_a]).tolist() == [10] * 10


def test_image_folder_reads_resizes_and_normalises(image_folder) -> None:
    data = load_data(image_folder, 16, val_fraction=0.25, seed=0)
    assert data.classes == ["cat", "dog", "eel"]
    assert len(data.val) == 9 and len(data.train) == 27
    images, labels = next(data.eval_batches(data.val, 100))
    assert images.shape == (9, 3, 16, 16)
    # the classes differ in their dominant channel; normalisation keeps that visible
    for label in range(3):
        means = images[labels == label].mean(dim=(0, 2, 3))
        assert int(means.argmax()) == label
    description = data.describe()
    assert description["mean"] == [0.485, 0.456, 0.406] and description["split_seed"] == 0


def test_streamed_and_cached_images_agree(image_folder) -> None:
    cached = load_data(image_folder, 16, cache=True)
    streamed = load_data(image_folder, 16, cache=False)
    assert cached.train.in_memory and not streamed.train.in_memory
    a = torch.cat([x for x, _ in cached.eval_batches(cached.val, 4)])
    b = torch.cat([x for x, _ in streamed.eval_batches(streamed.val, 4)])
    assert torch.equal(a, b)


def test_training_batches_are_augmented_reproducibly(image_folder) -> None:
    data = load_data(image_folder, 16)
    first = [x for x, _ in data.train_batches(8, seed=1)]
    again = [x for x, _ in data.train_batches(8, seed=1)]
    other = [x for x, _ in data.train_batches(8, seed=2)]
    assert all(torch.equal(a, b) for a, b in zip(first, again, strict=True))
    assert not torch.equal(first[0], other[0])
    assert sum(len(x) for x in first) == len(data.train)


def test_augment_keeps_shape_and_dtype() -> None:
    images = torch.randint(0, 255, (4, 3, 16, 16), dtype=torch.uint8)
    out = augment_batch(images, "crop+flip", torch.Generator().manual_seed(0))
    assert out.shape == images.shape and out.dtype == torch.uint8
    assert torch.equal(augment_batch(images, "none", torch.Generator()), images)


def test_calibration_subset_is_balanced_and_normalised() -> None:
    data = load_data("digits", 16)
    calib = data.calibration(20, seed=0)
    assert calib.shape == (20, 3, 16, 16) and calib.dtype == torch.float32


def test_separate_val_data_must_have_same_classes(tmp_path, image_folder) -> None:
    val = write_image_folder(tmp_path / "val", {"cat": 2, "dog": 2, "eel": 2})
    data = load_data(image_folder, 16, val_data=val)
    assert len(data.train) == 36 and len(data.val) == 6
    wrong = write_image_folder(tmp_path / "wrong", {"cat": 2, "fox": 2})
    with pytest.raises(DataError, match="missing dog, eel; unexpected fox"):
        load_data(image_folder, 16, val_data=wrong)


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda p: p / "missing", "does not exist"),
        (lambda p: p, "no class sub-directories"),
        (lambda p: (p / "a").mkdir() or p, "holds no images"),
        (lambda p: (p / "f.txt").write_text("x") and p / "f.txt", "is a file"),
    ],
)
def test_bad_data_directories(tmp_path, make, message) -> None:
    with pytest.raises(DataError, match=message):
        scan_image_folder(make(tmp_path), 16)


def test_empty_class_folder_is_named(tmp_path) -> None:
    root = write_image_folder(tmp_path / "d", {"a": 2})
    (root / "b").mkdir()
    with pytest.raises(DataError, match="without images.*: b"):
        load_data(root, 16)


def test_corrupt_image_names_the_file(image_folder) -> None:
    bad = image_folder / "cat" / "zzz.jpg"
    bad.write_bytes(b"not a jpeg")
    with pytest.raises(DataError, match="zzz.jpg"):
        load_data(image_folder, 16)


def test_unknown_builtin_name() -> None:
    with pytest.raises(DataError, match="Built-in datasets: digits"):
        load_data("mnist", 16)


def _photo_folder(root):
    """JPEG photos larger than the input size (the decoder's draft path), PNGs, and odd aspect ratios."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(1)
    for label, name in enumerate(("a", "b", "c")):
        (root / name).mkdir(parents=True)
        for i in range(7):
            w, h = (300 + 20 * i, 200) if i % 2 else (64, 90)
            base = np.zeros(3)
            base[label] = 180
            pixels = np.clip(base + rng.normal(0, 30, (h, w, 3)), 0, 255).astype(np.uint8)
            Image.fromarray(pixels).save(root / name / f"{i}.{'jpg' if i % 3 else 'png'}")
    return root


def test_dataloader_workers_threads_and_memory_give_the_same_tensors(tmp_path) -> None:
    from mobilelwt.data.images import LoaderSettings

    folder = _photo_folder(tmp_path / "photos")
    cached = load_data(folder, 32, val_fraction=0.2, seed=0, cache=True)
    paths = {}
    for workers in (0, 2):
        streamed = load_data(folder, 32, val_fraction=0.2, seed=0, cache=False)
        streamed.use_loader(LoaderSettings(workers=workers))
        assert not streamed.train.in_memory
        assert streamed.loader_facts()["path"] == ("dataloader" if workers else "threads")
        paths[workers] = streamed
    for epoch in range(2):  # persistent workers serve a second pass with another order
        reference = list(cached.train_batches(4, seed=epoch, augment=True))
        for streamed in paths.values():
            batches = list(streamed.train_batches(4, seed=epoch, augment=True))
            assert len(batches) == len(reference) == 5
            for (x, y), (rx, ry) in zip(batches, reference, strict=True):
                assert torch.equal(x, rx) and torch.equal(y, ry)
    # a pass abandoned half-way (early stopping) does not leak its batches into the next one
    worker_set = paths[2]
    next(iter(worker_set.train_batches(4, seed=7)))
    again = list(worker_set.train_batches(4, seed=8))
    assert all(torch.equal(a[0], b[0]) for a, b in zip(again, cached.train_batches(4, seed=8), strict=True))
    assert worker_set.train.stats.images >= 2 * 17 + 4 + 17
    assert cached.loader_facts() == {"path": "in-memory", "workers": 0, "pin_memory": False}


def test_jpeg_draft_decoding_stays_close_to_a_full_decode(tmp_path) -> None:
    import numpy as np
    from PIL import Image

    from mobilelwt.data import decode_image

    x = np.linspace(0, 255, 640)[None, :, None] * np.ones((480, 1, 3))
    path = tmp_path / "big.jpg"
    Image.fromarray(x.astype(np.uint8)).save(path, quality=95)
    fast = decode_image(path, 64).float()
    with Image.open(path) as img:
        full = img.convert("RGB").resize((85, 64), Image.Resampling.BILINEAR).crop((10, 0, 74, 64))
    reference = torch.from_numpy(np.asarray(full).copy()).permute(2, 0, 1).float()
    assert fast.shape == (3, 64, 64)
    assert (fast - reference).abs().mean() < 3.0


def test_a_sample_of_a_split_stored_class_by_class_covers_every_class() -> None:
    # CIFAR-10's split is stored class by class: its first 1000 of 5000 images held two classes of ten
    from mobilelwt.data import ImageSet

    labels = torch.arange(4).repeat_interleave(5)  # 0,0,0,0,0,1,…,3
    images = ImageSet(labels, ["a", "b", "c", "d"], 2, images=torch.zeros(20, 3, 2, 2, dtype=torch.uint8))
    picked = images.sample_indices(6)
    assert picked.tolist() == [0, 1, 5, 6, 10, 15]  # one of each class, then the second of the first two
    assert images.sample_indices(6).tolist() == picked.tolist()  # the same images every time
    assert images.sample_indices(99).tolist() == list(range(20))
    assert labels[images.sample_indices(8)].bincount().tolist() == [2, 2, 2, 2]
