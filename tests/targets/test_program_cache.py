"""The lowered-program cache: a hit returns what a fresh lowering gives, a change of content is lowered again."""

import hashlib
import json

import pytest
import torch
from torch import nn

import targets.tflite as tfl
from targets import program_cache
from targets.executorch import ExecuTorchConfig, lower
from targets.tflite import TFLiteConfig, convert


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv(program_cache.CACHE_ENV, str(tmp_path / "programs"))
    return tmp_path / "programs"


@pytest.fixture(scope="module")
def shared_cache(tmp_path_factory):
    """One cache for the tests that only count lowerings: the unchanged network is lowered once for all of them."""
    return tmp_path_factory.mktemp("shared") / "programs"


@pytest.fixture
def lowerings(monkeypatch) -> list[str]:
    """The lowerings that really ran (not served from the cache), by kind."""
    import targets.executorch as et
    import targets.tflite as tfl

    ran: list[str] = []
    real_lower, real_convert = et._lower, tfl._convert
    monkeypatch.setattr(et, "_lower", lambda *a, **k: ran.append("pte") or real_lower(*a, **k))
    monkeypatch.setattr(tfl, "_convert", lambda *a, **k: ran.append("tflite") or real_convert(*a, **k))
    return ran


def _net(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(8 * 8 * 8, 4))


X = (torch.randn(1, 3, 8, 8),)


def test_a_second_lowering_of_the_same_content_is_served_with_the_same_bytes(cache, lowerings) -> None:
    first, summary = lower(_net(), X, ExecuTorchConfig())
    again, summary_again = lower(_net(), (torch.zeros(1, 3, 8, 8),), ExecuTorchConfig())  # the input's values: no part
    assert again == first and summary_again == summary and lowerings == ["pte"]
    tflite = convert(_net(), X, TFLiteConfig())
    assert convert(_net(), X, TFLiteConfig()) == tflite and lowerings == ["pte", "tflite"]
    # what a lowering without the cache gives: the same bytes
    assert lower(_net(), X, ExecuTorchConfig(), keep_manager=[])[0] == first


@pytest.mark.parametrize(
    "change",
    ["weights", "shape", "architecture", "config"],
)
def test_any_change_of_content_is_lowered_again(shared_cache, monkeypatch, lowerings, change) -> None:
    monkeypatch.setenv(program_cache.CACHE_ENV, str(shared_cache))
    lower(_net(), X, ExecuTorchConfig())
    base = lowerings.count("pte")  # 1 the first time, then 0: served
    model, inputs, config = _net(), X, ExecuTorchConfig()
    if change == "weights":
        with torch.no_grad():
            model[0].weight[0, 0, 0, 0] += 1e-3
    elif change == "shape":
        model = nn.Sequential(*list(model)[:2])  # no Linear: any input size works
        lower(model, X, config)
        inputs = (torch.randn(1, 3, 16, 16),)
    elif change == "architecture":
        model[1] = nn.Hardtanh()
    else:
        config = ExecuTorchConfig("int8")
    calibration = torch.randn(2, 3, 8, 8) if change == "config" else None
    lower(model, inputs, config, calibration=calibration)
    assert lowerings.count("pte") == base + (2 if change == "shape" else 1)


def test_int8_programs_are_keyed_by_their_calibration_images() -> None:
    images = torch.randn(2, 3, 8, 8)

    def key(calibration, config=ExecuTorchConfig("int8")):
        return program_cache.program_key("pte", _net(), X, config, calibration=calibration)

    assert key(images) == key(images.clone()) != key(images * 2)
    assert key(images) != key(images, ExecuTorchConfig()) and key(None) != key(images)
    assert program_cache.program_key("pte", nn.Identity(), X, ExecuTorchConfig()) is not None
    # a dynamic int8 TFLite conversion without calibration images observes the example input: its values count
    dynamic = TFLiteConfig("int8", "dynamic")
    assert tfl._calibrated_on(dynamic, X, None) is X[0] and tfl._calibrated_on(TFLiteConfig(), X, None) is None


def test_a_damaged_entry_is_lowered_again_and_replaced(cache, lowerings) -> None:
    first = lower(_net(), X, ExecuTorchConfig())[0]
    (entry,) = cache.glob("pte/*/*.bin")
    entry.write_bytes(b"damaged")
    assert lower(_net(), X, ExecuTorchConfig())[0] == first and lowerings == ["pte", "pte"]
    record = json.loads(entry.with_suffix(".json").read_text())
    assert entry.read_bytes() == first and record["sha256"] == hashlib.sha256(first).hexdigest()


def test_off_writes_nothing(tmp_path, monkeypatch, lowerings) -> None:
    monkeypatch.setenv(program_cache.CACHE_ENV, "off")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    lower(_net(), X, ExecuTorchConfig())
    lower(_net(), X, ExecuTorchConfig())
    assert lowerings == ["pte", "pte"] and not any(tmp_path.iterdir())
    monkeypatch.delenv(program_cache.CACHE_ENV)
    assert program_cache.cache_dir() == tmp_path / "mobilelwt" / "programs"


def test_pruning_removes_the_least_recently_used_first(cache) -> None:
    import os

    for index, size in enumerate((300, 300, 300)):
        program_cache.write("pte", f"{index:02d}" + "0" * 62, bytes(size))
        meta = next(cache.glob(f"pte/{index:02d}/*.json"))
        os.utime(meta, (1000 + index, 1000 + index))
    program_cache.read("pte", "00" + "0" * 62)  # used now: the newest
    assert program_cache.prune(cache, max_bytes=650) == 1
    assert sorted(p.parent.name for p in cache.glob("pte/*/*.bin")) == ["00", "02"]


def test_an_unwritable_cache_only_costs_time(tmp_path, monkeypatch, lowerings) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    monkeypatch.setenv(program_cache.CACHE_ENV, str(blocker / "programs"))
    first = lower(_net(), X, ExecuTorchConfig())[0]
    assert lower(_net(), X, ExecuTorchConfig())[0] == first and lowerings == ["pte", "pte"]
