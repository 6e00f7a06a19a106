import json

import torch

from mobilelwt.data import load_data
from mobilelwt.evaluation import evaluate, topk_correct
from mobilelwt.settings import RunSettings
from mobilelwt.teachers import build_teacher
from mobilelwt.train import TrainConfig, train_teacher


def test_topk_counts() -> None:
    logits = torch.tensor([[0.1, 0.9, 0.0], [0.8, 0.05, 0.15], [0.2, 0.3, 0.5]])
    labels = torch.tensor([1, 2, 0])
    assert topk_correct(logits, labels, ks=(1, 2, 5)) == [1, 2, 3]


def test_teacher_training_on_digits_learns_far_above_chance(tmp_path) -> None:
    # tinynet at 32² (tests/conftest.py): the same loop as AlexNet at 64², which took 45 of the suite's seconds here
    # (the session's digits_teacher still trains an AlexNet, briefly)
    out = tmp_path / "tinynet.pt"
    result = train_teacher(
        "tinynet", run=RunSettings(data="digits", input_size=32), out=out, config=TrainConfig(epochs=2, lr=2e-3, seed=0)
    )
    history = result.metrics["history"]
    assert len(history) == 2
    assert history[-1]["train_loss"] < history[0]["train_loss"]
    assert result.metrics["val_top1"] > 40.0  # chance is 10%; two epochs reached 80 % (3 s on a 2-core EPYC)
    assert result.metrics["val_top5"] > result.metrics["val_top1"]

    # the checkpoint reloads through --weights and reproduces the reported accuracy
    teacher = build_teacher("tinynet", weights=out)
    data = load_data("digits", teacher.input_size, val_fraction=0.1, seed=0)
    again = evaluate(teacher.model, data.eval_batches(data.val, 256))
    assert abs(again["top1"] - result.metrics["val_top1"]) < 1e-6

    manifest = json.loads(result.manifest.read_text())
    assert manifest["command"] == "train-teacher"
    assert manifest["seeds"] == {"seed": 0, "split_seed": 0}
    assert manifest["files"]["tinynet.pt"]["bytes"] == out.stat().st_size
    assert manifest["settings"]["data"]["classes"] == [str(i) for i in range(10)]
    assert manifest["environment"]["versions"]["torch"].startswith("2.14")
    assert not list(tmp_path.glob(".*.tmp"))


def test_an_interrupted_teacher_training_resumes_after_its_last_finished_epoch(tmp_path) -> None:
    import pytest

    out = tmp_path / "tiny.pt"
    progress = out.with_name(out.name + ".progress.pt")
    config = TrainConfig(epochs=3, max_steps_per_epoch=3, lr=2e-3)
    first: list = []

    def stop_after_two(event) -> None:
        if event.stage == "epoch":
            first.append(event.info)
            if event.done == 2:
                raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train_teacher(
            "tinynet", run=RunSettings(data="digits", input_size=32), out=out, config=config, on_progress=stop_after_two
        )
    assert not out.exists() and progress.is_file()  # no checkpoint yet, the two epochs kept

    events: list = []
    result = train_teacher(
        "tinynet", run=RunSettings(data="digits", input_size=32), out=out, config=config, on_progress=events.append
    )
    resumed = [e for e in events if e.stage == "epoch" and e.info.get("resumed")]
    assert [e.done for e in resumed] == [1, 2]
    assert [e.info["val_top1"] for e in resumed] == [r["val_top1"] for r in first]
    assert [r["epoch"] for r in result.metrics["history"]] == [1, 2, 3]
    assert sum(e.stage == "train" for e in events) == 3  # only the third epoch trained
    assert out.is_file() and not progress.exists()

    # saved epochs of other settings are never mixed in
    with pytest.raises(KeyboardInterrupt):
        train_teacher(
            "tinynet", run=RunSettings(data="digits", input_size=32), out=out, config=config, on_progress=stop_after_two
        )
    other: list = []
    changed = TrainConfig(epochs=3, max_steps_per_epoch=3, lr=1e-3)
    train_teacher(
        "tinynet", run=RunSettings(data="digits", input_size=32), out=out, config=changed, on_progress=other.append
    )
    assert not [e for e in other if e.info.get("resumed")]
    assert sum(e.stage == "train" for e in other) == 9
