"""Data-parallel runs under torchrun (gloo on the CPU): one build written once by rank 0, lost ranks, resume;
sharded batches that add up to the one-process batch."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
import torch

from mobilelwt import distributed
from mobilelwt.data import DataBundle, ImageSet
from mobilelwt.distributed import World
from mobilelwt.errors import ConfigError
from mobilelwt.loading import load_build

TINY = """
from torch import nn


class TinyNet(nn.Module):
    def __init__(self, num_classes=10):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 16, 3, padding=1), nn.ReLU(inplace=True), nn.MaxPool2d(2),
            nn.Conv2d(16, 48, 3, padding=1), nn.ReLU(inplace=True), nn.MaxPool2d(2),
            nn.Conv2d(48, 64, 3, padding=1), nn.ReLU(inplace=True), nn.MaxPool2d(2),
        )
        self.avgpool = nn.AdaptiveAvgPool2d(2)
        self.classifier = nn.Sequential(nn.Linear(256, 128), nn.ReLU(inplace=True), nn.Linear(128, num_classes))

    def forward(self, x):
        return self.classifier(self.avgpool(self.features(x)).flatten(1))


def tinynet(num_classes=10):
    return TinyNet(num_classes)
"""
ROOT = Path(__file__).resolve().parents[2]


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
    return {**env, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "GLOO_SOCKET_IFNAME": "lo", **extra}


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, Path]:
    """A user-code teacher (so that torchrun's fresh processes can build it), trained on digits at 32² by two
    gloo ranks (DDP teacher training, rank 0 writes the checkpoint)."""
    folder = tmp_path_factory.mktemp("distributed")
    (folder / "tiny.py").write_text(TINY)
    model = f"{folder / 'tiny.py'}:tinynet"
    weights = folder / "tiny-digits.pt"
    done = subprocess.run(
        [sys.executable, "-m", "mobilelwt", "train-teacher", "--model", model, "--trust-code", "--out", weights,
         "--input-size", "32", "--epochs", "6", "--lr", "2e-3", "--nproc", "2"],
        capture_output=True, text=True, env=_env(), cwd=folder, timeout=600,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert done.stdout.count("checkpoint:") == 1 and "2 ranks (gloo)" in done.stdout
    manifest = json.loads(weights.with_suffix(".json").read_text())
    assert manifest["metrics"]["distributed"]["world_size"] == 2
    assert manifest["metrics"]["val_top1"] > 60  # 10 classes: far above chance
    assert manifest["metrics"]["history"][-1]["images_per_s"] > 0
    return model, weights


def _compress_args(model: str, weights: Path, out: Path, *extra: str) -> list[str]:
    return ["compress", "--model", model, "--trust-code", "--weights", str(weights), "--out", str(out),
            "--mac-speedup", "2", "--layer-max-steps", "60", "--finetune-epochs", "1", *extra]  # fmt: skip


def test_two_gloo_ranks_write_one_build_that_matches_one_process(tiny, tmp_path: Path) -> None:
    model, weights = tiny
    one, two = tmp_path / "one", tmp_path / "two"
    single = subprocess.run([sys.executable, "-m", "mobilelwt", *_compress_args(model, weights, one, "--threads", "2")],
                            capture_output=True, text=True, env=_env(), timeout=600)  # fmt: skip
    assert single.returncode == 0, single.stderr
    ranks = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "-m", "mobilelwt",
         *_compress_args(model, weights, two)],
        capture_output=True, text=True, env=_env(), timeout=600,
    )  # fmt: skip
    assert ranks.returncode == 0, ranks.stderr
    assert "Traceback" not in ranks.stderr
    # rank 0 alone prints: one summary, one data line
    assert ranks.stdout.count("build directory:") == 1 and "2 ranks (gloo)" in ranks.stdout

    metrics = json.loads((two / "metrics.json").read_text())
    reference = json.loads((one / "metrics.json").read_text())
    assert metrics["distributed"] == {"world_size": 2, "backend": "gloo", "launcher": "torchrun",
                                      "global_batch": {"layerwise": 32, "finetune": 64}}  # fmt: skip
    assert reference["distributed"]["world_size"] == 1
    assert metrics["data_loader"]["layerwise_images_per_s"] > 0
    # the same plan and the same settings mean the same key: world size is how, not what
    assert metrics["inputs"]["key"] == reference["inputs"]["key"]
    assert metrics["student"]["images"] == reference["student"]["images"]  # every val image counted once
    assert abs(metrics["student"]["top1"] - reference["student"]["top1"]) <= 6.0
    assert metrics["student"]["top1"] > 50.0  # well above chance (10 classes), as the one-process run
    for name, record in metrics["layers"].items():
        assert record["steps"] == reference["layers"][name]["steps"] or record["early_stopped"]
    # written once and whole: no temporary files, the manifest's hashes hold, the student loads
    assert not [p for p in two.rglob("*") if p.name.endswith(".tmp")]
    build = load_build(two)
    reference_state = load_build(one).student.state_dict()
    assert {k: v.shape for k, v in build.student.state_dict().items()} == {
        k: v.shape for k, v in reference_state.items()
    }


def test_independent_layers_are_spread_over_the_ranks(tiny, tmp_path: Path) -> None:
    """``--layer-input teacher``: each rank trains whole layers on whole batches; a layer trained on rank 1 is the
    layer one process trains (same seed, same batches), handed to rank 0 to be saved."""
    model, weights = tiny
    one, two = tmp_path / "one", tmp_path / "two"
    args = ("--layer-input", "teacher", "--finetune-epochs", "0")
    single = subprocess.run([sys.executable, "-m", "mobilelwt", *_compress_args(model, weights, one, *args),
                             "--threads", "1"], capture_output=True, text=True, env=_env(), timeout=600)  # fmt: skip
    assert single.returncode == 0, single.stderr
    ranks = subprocess.run([sys.executable, "-m", "mobilelwt", *_compress_args(model, weights, two, *args),
                            "--nproc", "2"], capture_output=True, text=True, env=_env(), timeout=600)  # fmt: skip
    assert ranks.returncode == 0, ranks.stderr
    metrics = json.loads((two / "metrics.json").read_text())
    reference = json.loads((one / "metrics.json").read_text())
    layers = list(metrics["layers"])
    assert [metrics["layers"][n]["trained_on_rank"] for n in layers] == [i % 2 for i in range(len(layers))]
    for name in layers:
        mine, theirs = metrics["layers"][name], reference["layers"][name]
        assert mine["steps"] == theirs["steps"]
        assert mine["error_final"] == pytest.approx(theirs["error_final"], rel=0.02, abs=1e-4)
    state, reference_state = (load_build(d).student.state_dict() for d in (two, one))
    for key in state:
        torch.testing.assert_close(state[key], reference_state[key], rtol=0.05, atol=2e-3, msg=key)
    assert metrics["student"]["top1"] == pytest.approx(reference["student"]["top1"], abs=2.0)


def _rank_pid(tag: str, rank: int) -> int | None:
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            env = (entry / "environ").read_bytes().split(b"\0")
        except OSError:
            continue
        if f"MLWT_TEST_TAG={tag}".encode() in env and f"RANK={rank}".encode() in env:
            return int(entry.name)
    return None


def test_a_killed_rank_is_one_clear_error_and_the_directory_resumes(tiny, tmp_path: Path) -> None:
    model, weights = tiny
    out, tag = tmp_path / "build", uuid.uuid4().hex
    args = _compress_args(model, weights, out, "--nproc", "2")
    args[args.index("60")] = "3000"  # slow enough to be killed half-way
    run = subprocess.Popen([sys.executable, "-m", "mobilelwt", *args], stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, text=True, env=_env(MLWT_TEST_TAG=tag))  # fmt: skip
    progress = out / "layerwise" / "progress.json"
    deadline = time.monotonic() + 300
    while not progress.is_file() and run.poll() is None and time.monotonic() < deadline:
        time.sleep(0.2)
    pid = _rank_pid(tag, 1)
    assert pid is not None and run.poll() is None, "the run ended before a rank could be killed"
    os.kill(pid, signal.SIGKILL)
    stdout, stderr = run.communicate(timeout=300)
    assert run.returncode == 3, stderr
    assert "Traceback" not in stderr + stdout
    errors = [line for line in stderr.splitlines() if "error:" in line]
    assert len(errors) == 1 and "fix:" in errors[0] and "resume" in errors[0], stderr
    assert not (out / "manifest.json").exists()
    finished = list(json.loads(progress.read_text())["layers"])
    assert finished  # at least the first layer was kept

    resumed = subprocess.run([sys.executable, "-m", "mobilelwt", *strip(args, "--nproc")], capture_output=True,
                             text=True, env=_env(), timeout=900)  # fmt: skip
    assert resumed.returncode == 0, resumed.stderr
    assert f"layer={finished[0]}  resumed=yes" in resumed.stderr
    load_build(out)


def strip(args: list[str], flag: str) -> list[str]:
    i = args.index(flag)
    return args[:i] + args[i + 2 :]


def _indexed_bundle(n: int) -> DataBundle:
    """Images whose pixels spell their index, so that batches can be compared as index sets."""
    images = torch.arange(n, dtype=torch.int64).view(n, 1, 1, 1).expand(n, 3, 2, 2).remainder(256).to(torch.uint8)
    images = images.clone()
    images[:, 1] = (torch.arange(n) // 256).view(n, 1, 1).to(torch.uint8)
    train = ImageSet(torch.arange(n) % 10, [str(i) for i in range(10)], 2, images=images)
    val = ImageSet(torch.arange(10), [str(i) for i in range(10)], 2, images=images[:10].clone())
    return DataBundle("indexed", train, val, train.classes, 2, "none")


def test_rank_shares_of_each_batch_make_up_the_one_process_batch(monkeypatch: pytest.MonkeyPatch) -> None:
    bundle = _indexed_bundle(203)  # not a multiple of the ranks: the last batches are padded like DistributedSampler

    def ids(batches) -> list[list[int]]:
        out = []
        for images, _ in batches:
            raw = images * torch.tensor(bundle.std).view(1, 3, 1, 1) + torch.tensor(bundle.mean).view(1, 3, 1, 1)
            raw = (raw * 255).round().long()
            out.append((raw[:, 0, 0, 0] + 256 * raw[:, 1, 0, 0]).tolist())
        return out

    single = ids(bundle.train_batches(16, seed=5, augment=False, limit=160))
    shares = []
    for rank in range(2):
        monkeypatch.setattr(distributed, "world", lambda rank=rank: World(rank=rank, size=2, backend="gloo"))
        shares.append(ids(bundle.train_batches(16, seed=5, augment=False, limit=160)))
    assert [len(b) for b in shares[0]] == [8] * 10
    for k, batch in enumerate(single):
        assert sorted(shares[0][k] + shares[1][k]) == sorted(batch)
    assert not set(sum(shares[0], [])) & set(sum(shares[1], []))
    # a whole epoch covers every image: DistributedSampler pads 203 to 204 with one repeat
    epoch = sum(ids(bundle.train_batches(16, seed=5, augment=False)), [])
    monkeypatch.setattr(distributed, "world", lambda: World(rank=0, size=2, backend="gloo"))
    epoch += sum(ids(bundle.train_batches(16, seed=5, augment=False)), [])
    assert len(epoch) == 204 and set(epoch) == set(range(203))
    with pytest.raises(ConfigError, match="does not split evenly over 2 ranks"):
        next(bundle.train_batches(15, seed=0))


def test_eval_shards_cover_every_image_once(monkeypatch: pytest.MonkeyPatch) -> None:
    seen = []
    for rank in range(3):
        monkeypatch.setattr(distributed, "world", lambda rank=rank: World(rank=rank, size=3, backend="gloo"))
        seen += distributed.shard_range(11).tolist()
    assert sorted(seen) == list(range(11))


def test_nproc_inside_torchrun_and_outside_a_command_line_are_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    from mobilelwt.app.cli._launch import relaunch, strip_nproc

    assert strip_nproc(["compress", "--nproc", "2", "--out", "x", "--nproc=3"]) == ["compress", "--out", "x"]
    relaunch(None)
    relaunch(1)
    with pytest.raises(ConfigError, match="--nproc must be"):
        relaunch(0)
    monkeypatch.setattr(sys, "argv", ["pytest", "-q"])
    with pytest.raises(ConfigError, match="did not come from one"):
        relaunch(2)
    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(ConfigError, match="torchrun already started"):
        relaunch(2)


def test_bad_parallel_options_are_one_clear_error(tmp_path: Path) -> None:
    from tests.mobilelwt.app.cli.test_cli import assert_user_error, invoke

    assert_user_error(invoke("compress", "--model", "alexnet", "--out", tmp_path / "b", "--workers", "-1"), "--workers")
    assert_user_error(invoke("compress", "--model", "alexnet", "--out", tmp_path / "b", "--nproc", "0"), "--nproc")
