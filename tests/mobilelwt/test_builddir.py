"""The freshness rule: a re-run with any changed input into an existing directory equals a fresh run."""

import json
import shutil
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from mobilelwt.builddir import BuildDir, BuildFileError
from mobilelwt.compress import CompressConfig, compress
from mobilelwt.distill import DistillConfig
from mobilelwt.errors import ConfigError
from mobilelwt.hashing import digest, state_dict_sha256
from mobilelwt.layerwise import LayerwiseConfig
from mobilelwt.loading import load_build
from mobilelwt.settings import RunSettings
from mobilelwt.teachers import build_teacher
from tests.conftest import write_image_folder

VOLATILE = {"seconds", "threads", "device", "finetune_history", "images_per_s", "data_wait_s", "layerwise_images_per_s",
            "data_wait_share"}  # fmt: skip


def _config(**overrides) -> CompressConfig:
    base = CompressConfig(
        mac_speedup=3.0,
        layerwise=LayerwiseConfig(epochs=1.0, max_steps=8, eval_every=4),
        finetune=DistillConfig(epochs=1, max_steps_per_epoch=3),
    )
    return replace(base, **overrides)


def _strip(value):
    """Metrics without what legitimately differs between two identical runs (wall time, thread count)."""
    if isinstance(value, dict):
        return {k: _strip(v) for k, v in value.items() if k not in VOLATILE}
    if isinstance(value, list):
        return [_strip(v) for v in value]
    return value


def _same_build(a: Path, b: Path) -> None:
    plan_a, plan_b = (json.loads((d / "plan.json").read_text()) for d in (a, b))
    assert plan_a["layers"] == plan_b["layers"]
    metrics_a, metrics_b = (json.loads((d / "metrics.json").read_text()) for d in (a, b))
    assert _strip(metrics_a) == _strip(metrics_b)
    student_a = torch.load(a / "student.pt", weights_only=True)
    student_b = torch.load(b / "student.pt", weights_only=True)
    assert student_a.keys() == student_b.keys()
    for key in student_a:
        torch.testing.assert_close(student_a[key], student_b[key], rtol=0, atol=1e-6, msg=key)


@pytest.fixture(scope="module")
def base(tmp_path_factory, tiny_teacher):
    out = tmp_path_factory.mktemp("base") / "b"
    compress("tinynet", out=out, weights=str(tiny_teacher), config=_config(), run=RunSettings(threads=1))
    return out


@pytest.fixture(scope="module")
def other_teacher(tmp_path_factory, tiny_teacher):
    """Teacher B: the same shapes as A, other weights (A's state perturbed), so old layers would 'fit'."""
    path = tmp_path_factory.mktemp("teacher-b") / "b.pt"
    checkpoint = torch.load(tiny_teacher, weights_only=True)
    generator = torch.Generator().manual_seed(1)
    checkpoint["state_dict"] = {
        k: v + 0.05 * torch.randn(v.shape, generator=generator) if v.is_floating_point() else v
        for k, v in checkpoint["state_dict"].items()
    }
    torch.save(checkpoint, path)
    return path


CHANGES = {
    "speedup": dict(config=_config(mac_speedup=2.0)),
    "planner": dict(config=_config(planner="sensitivity", calib_images=16)),
    "conv_module": dict(config=_config(conv_module="bottleneck")),
    "layerwise": dict(config=_config(layerwise=LayerwiseConfig(epochs=1.0, max_steps=5, eval_every=4))),
    "finetune": dict(config=_config(finetune=DistillConfig(epochs=0))),
    "seed": dict(config=_config(seed=3)),
    "val_fraction": dict(run=RunSettings(threads=1, val_fraction=0.2)),
    "teacher": "other_teacher",
}


@pytest.mark.parametrize("change", list(CHANGES))
def test_a_rerun_after_one_changed_input_equals_a_fresh_run(change, base, tmp_path, tiny_teacher, request) -> None:
    kwargs = {"weights": str(tiny_teacher), "config": _config(), "run": RunSettings(threads=1)}
    if CHANGES[change] == "other_teacher":
        kwargs["weights"] = str(request.getfixturevalue("other_teacher"))
    else:
        kwargs.update(CHANGES[change])
    reused = tmp_path / "reused"
    shutil.copytree(base, reused)
    (reused / "android").mkdir()
    (reused / "android" / "tinynet-student-fp32.pte").write_bytes(b"an old export")
    (reused / "bench.jsonl").write_text('{"artifact": "android/tinynet-student-fp32.pte"}\n')
    compress("tinynet", out=reused, **kwargs)
    compress("tinynet", out=tmp_path / "fresh", **kwargs)
    _same_build(reused, tmp_path / "fresh")
    assert not (reused / "android").exists() and not (reused / "bench.jsonl").exists()  # downstream removed
    old = json.loads((base / "manifest.json").read_text())["inputs"]["key"]
    assert BuildDir(reused).compress_key() != old


def test_unchanged_inputs_reuse_the_build_without_work(base, tiny_teacher) -> None:
    before = (base / "student.pt").stat().st_mtime_ns
    result = compress("tinynet", out=base, weights=str(tiny_teacher), config=_config(), run=RunSettings(threads=1))
    assert (base / "student.pt").stat().st_mtime_ns == before
    assert result.metrics["inputs"]["key"] == BuildDir(base).compress_key()


def test_speedup_3_5_then_2_in_one_directory(tmp_path, tiny_teacher) -> None:
    out = tmp_path / "b"
    first = compress(
        "tinynet", out=out, weights=str(tiny_teacher), config=_config(mac_speedup=3.5), run=RunSettings(threads=1)
    )
    two = compress(
        "tinynet", out=out, weights=str(tiny_teacher), config=_config(mac_speedup=2.0), run=RunSettings(threads=1)
    )
    assert first.metrics["mac_speedup"] > 3.2 and 1.8 < two.metrics["mac_speedup"] < 2.5
    assert load_build(out).plan.target_speedup == 2.0  # the directory loads, and is the new build


def test_layerwise_progress_of_another_teacher_is_never_resumed(tmp_path, tiny_teacher, other_teacher) -> None:
    out = tmp_path / "b"
    config = _config(finetune=DistillConfig(epochs=0))
    compress("tinynet", out=out, weights=str(tiny_teacher), config=config, run=RunSettings(threads=1))
    (out / "manifest.json").unlink()  # as if interrupted after layer-wise training: progress stays
    result = compress("tinynet", out=out, weights=str(other_teacher), config=config, run=RunSettings(threads=1))
    progress = json.loads((out / "layerwise" / "progress.json").read_text())
    assert progress["key"] == result.metrics["inputs"]["layerwise_key"]
    fresh = compress(
        "tinynet", out=tmp_path / "fresh", weights=str(other_teacher), config=config, run=RunSettings(threads=1)
    )
    assert fresh.metrics["student"]["top1"] == result.metrics["student"]["top1"]


def test_a_changed_teacher_file_makes_the_build_unloadable_not_silently_stale(tmp_path, tiny_teacher) -> None:
    teacher = tmp_path / "t.pt"
    shutil.copy(tiny_teacher, teacher)
    out = tmp_path / "b"
    compress(
        "tinynet",
        out=out,
        weights=str(teacher),
        config=_config(finetune=DistillConfig(epochs=0)),
        run=RunSettings(threads=1),
    )
    checkpoint = torch.load(teacher, weights_only=True)
    checkpoint["state_dict"]["features.0.bias"] += 1.0
    torch.save(checkpoint, teacher)
    with pytest.raises(BuildFileError, match="teacher weights .* have changed"):
        load_build(out)


def test_random_teachers_are_seeded_and_reproducible() -> None:
    a = build_teacher("tinynet", num_classes=10, input_size=32, seed=5)
    b = build_teacher("tinynet", num_classes=10, input_size=32, seed=5)
    c = build_teacher("tinynet", num_classes=10, input_size=32, seed=6)
    assert state_dict_sha256(a.model) == state_dict_sha256(b.model) != state_dict_sha256(c.model)


def test_a_random_teacher_build_reloads_the_same_teacher(tmp_path) -> None:
    config = _config(layerwise=LayerwiseConfig(epochs=0), finetune=DistillConfig(epochs=0), seed=2)
    out = tmp_path / "b"
    result = compress("tinynet", out=out, weights="none", run=RunSettings(input_size=32, threads=1), config=config)
    assert state_dict_sha256(load_build(out).teacher.model) == state_dict_sha256(result.teacher.model)


def test_svd_cache_tells_permuted_weights_apart() -> None:
    from mobilelwt.modules._common import truncated_svd

    matrix = torch.randn(24, 16, generator=torch.Generator().manual_seed(0))
    permuted = matrix[torch.randperm(24, generator=torch.Generator().manual_seed(1))]
    a, b = truncated_svd(matrix, 4)
    c, d = truncated_svd(permuted, 4)
    torch.testing.assert_close(c @ d, (a @ b)[torch.randperm(24, generator=torch.Generator().manual_seed(1))])


def test_data_fingerprint_sees_a_changed_image(tmp_path) -> None:
    from mobilelwt.data import source_fingerprint

    root = write_image_folder(tmp_path / "imgs", {"a": 4, "b": 4})
    before = source_fingerprint(root, 32)
    image = next((root / "a").glob("*.png"))
    image.write_bytes(image.read_bytes() + b"\0")
    assert source_fingerprint(root, 32) != before


@pytest.mark.parametrize(
    "content, needle",
    [("", "is empty"), ('{"teacher": ', "not valid JSON"), ("[1, 2]", "JSON list"), ('{"a": 1}', "lacks")],
)
def test_damaged_manifest_is_one_clear_error(base, tmp_path, content, needle) -> None:
    broken = tmp_path / "broken"
    shutil.copytree(base, broken)
    (broken / "manifest.json").write_text(content)
    with pytest.raises(BuildFileError, match=needle) as info:
        load_build(broken)
    assert "manifest.json" in str(info.value)


def test_invalidate_removes_downstream_first_and_keeps_what_is_asked(tmp_path) -> None:
    d = BuildDir(tmp_path)
    for name in ("plan.json", "student.pt", "manifest.json", "artifacts.json", "bench.jsonl", "report.html"):
        (tmp_path / name).write_text("x")
    (tmp_path / "ios").mkdir()
    removed = d.invalidate("compress", keep=("plan.json",))
    assert (tmp_path / "plan.json").exists()
    assert [p.name for p in removed][:2] == ["report.html", "bench.jsonl"]
    assert {p.name for p in tmp_path.iterdir()} == {"plan.json"}


def test_digest_ignores_key_order_but_not_values() -> None:
    assert digest({"a": 1, "b": [1, 2]}) == digest({"b": [1, 2], "a": 1}) != digest({"a": 1, "b": [2, 1]})


def test_bad_numbers_in_configs_are_refused() -> None:
    for bad in (dict(mac_speedup=float("nan")), dict(mac_speedup=0.5), dict(calib_images=0)):
        with pytest.raises(ConfigError):
            _config(**bad)
    for bad in (dict(batch_size=0), dict(epochs=float("nan")), dict(lr=-1.0)):
        with pytest.raises(ConfigError):
            LayerwiseConfig(**bad)


def test_a_changed_latency_target_replans_and_equals_a_fresh_run(tmp_path, tiny_teacher) -> None:
    """The measured planner's target (here the runtime threads) is a compress input: a re-run into the same
    directory plans again against its own table and equals a fresh run (a deterministic fake target)."""
    from mobilelwt.compress import LatencyTarget
    from tests.mobilelwt.fake_probe import FakeProbe

    asked = []

    def target(latency):  # the fake runtime is slower with fewer threads, so the plans differ
        context = {"runtime": "fake", "runtime_version": "1", "precision": "fp32", "threads": latency.threads}
        asked.append(FakeProbe(per_mac_ns=2.0 / latency.threads, context=context))
        return asked[-1]

    def config(threads: int) -> CompressConfig:
        latency = LatencyTarget(threads=threads, grid_points=3)
        return _config(mac_speedup=None, planner="latency", speedup=1.5, calib_images=8, latency=latency)

    kwargs = {"weights": str(tiny_teacher), "run": RunSettings(threads=1), "latency_probe": target}
    reused, fresh = tmp_path / "reused", tmp_path / "fresh"
    compress("tinynet", out=reused, config=config(2), **kwargs)
    first_table = json.loads((reused / "latency-table.json").read_text())
    compress("tinynet", out=reused, config=config(1), **kwargs)
    assert asked[-1].timed  # planned again, against a table of the new context (the old one was for 2 threads)
    assert json.loads((reused / "latency-table.json").read_text())["context"]["threads"] == 1
    assert first_table["context"]["threads"] == 2
    compress("tinynet", out=fresh, config=config(1), **kwargs)
    _same_build(reused, fresh)
    assert load_build(reused).plan.details["measured_ci95"][1] >= 1.5
