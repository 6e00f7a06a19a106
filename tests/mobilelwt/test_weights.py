import os
import pickle

import pytest
import torch

from mobilelwt.errors import CheckpointError
from mobilelwt.teachers import build_teacher
from mobilelwt.weights import load_checkpoint


class _Exploit:
    """Unpickling this would run a shell command; weights_only loading must refuse it."""

    def __reduce__(self):
        return (os.system, ("touch /tmp/mobilelwt-pwned",))


@pytest.fixture
def small_state():
    return build_teacher("alexnet", num_classes=4, input_size=64).model.state_dict()


def test_plain_state_dict_loads(tmp_path, small_state) -> None:
    path = tmp_path / "w.pt"
    torch.save(small_state, path)
    teacher = build_teacher("alexnet", num_classes=4, input_size=64, weights=path)
    assert torch.equal(teacher.model.state_dict()["features.0.weight"], small_state["features.0.weight"])


def test_checkpoint_dict_and_dataparallel_prefix(tmp_path, small_state) -> None:
    path = tmp_path / "ckpt.pt"
    torch.save({"epoch": 3, "model_state_dict": {f"module.{k}": v for k, v in small_state.items()}}, path)
    loaded = load_checkpoint(path)
    assert set(loaded["state_dict"]) == set(small_state)


def test_corrupt_file(tmp_path) -> None:
    path = tmp_path / "broken.pt"
    path.write_bytes(b"\x80\x02this is not a checkpoint at all")
    with pytest.raises(CheckpointError, match="not a readable PyTorch checkpoint"):
        build_teacher("alexnet", weights=path)


def test_truncated_file(tmp_path, small_state) -> None:
    path = tmp_path / "cut.pt"
    torch.save(small_state, path)
    path.write_bytes(path.read_bytes()[:5000])
    with pytest.raises(CheckpointError, match="not a readable"):
        load_checkpoint(path)


def test_missing_file(tmp_path) -> None:
    with pytest.raises(CheckpointError, match="does not exist"):
        build_teacher("alexnet", weights=tmp_path / "nope.pt")


def test_not_weights(tmp_path) -> None:
    path = tmp_path / "list.pt"
    torch.save([1, 2, 3], path)
    with pytest.raises(CheckpointError, match="holds a list, not model weights"):
        load_checkpoint(path)


def test_mismatched_keys_and_shapes_are_summarised(tmp_path, small_state) -> None:
    state = dict(small_state)
    del state["features.0.bias"]
    state["extra.weight"] = torch.zeros(1)
    path = tmp_path / "w.pt"
    torch.save(state, path)
    with pytest.raises(CheckpointError) as info:
        build_teacher("alexnet", num_classes=10, input_size=64, weights=path)
    message = str(info.value)
    assert "1 missing key(s) (features.0.bias)" in message
    assert "1 unexpected key(s) (extra.weight)" in message
    assert "classifier.6.weight (4, 4096) vs (10, 4096)" in message


def test_malicious_pickle_is_refused_without_running(tmp_path) -> None:
    marker = "/tmp/mobilelwt-pwned"
    if os.path.exists(marker):
        os.unlink(marker)
    path = tmp_path / "evil.pt"
    with open(path, "wb") as handle:
        pickle.dump({"state_dict": _Exploit()}, handle, protocol=2)
    torch_path = tmp_path / "evil-zip.pt"
    torch.save({"payload": _Exploit()}, torch_path)
    for candidate in (path, torch_path):
        with pytest.raises(CheckpointError, match="refused: it contains pickled Python objects"):
            load_checkpoint(candidate)
    assert not os.path.exists(marker)
