import errno
import os

import pytest
import torch
from safetensors.torch import save_file
from torch import nn

from fan_convert.io import CheckpointError, OutputError, atomic_write, load_into, read_checkpoint


def small_model():
    return nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 2))


@pytest.fixture
def state():
    torch.manual_seed(0)
    return small_model().state_dict()


@pytest.mark.parametrize(
    "wrap, notes",
    [
        (lambda sd: sd, []),
        (lambda sd: {"state_dict": sd, "epoch": 3, "arch": "resnet50"}, ["unwrapped 'state_dict'"]),  # FFN/TSM style
        (lambda sd: {"model_state": sd, "optimizer_state": {}}, ["unwrapped 'model_state'"]),  # pytorchvideo
        (lambda sd: {"meta": {"epoch": 1}, "state_dict": sd}, ["unwrapped 'state_dict'"]),  # mmaction2
        (lambda sd: {"model": {f"module.{k}": v for k, v in sd.items()}}, ["unwrapped 'model'", "stripped prefix 'module.'"]),
        (lambda sd: {f"_orig_mod.{k}": v for k, v in sd.items()}, ["stripped prefix '_orig_mod.'"]),
    ],
)
def test_nested_checkpoints_are_unwrapped_and_say_so(tmp_path, state, wrap, notes):
    path = tmp_path / "ckpt.pth.tar"
    torch.save(wrap(state), path)
    ckpt = read_checkpoint(path)
    assert ckpt.notes == notes
    assert ckpt.tensors.keys() == state.keys()
    assert all(torch.equal(ckpt.tensors[k], v) for k, v in state.items())


def test_safetensors_checkpoints(tmp_path, state):
    path = tmp_path / "w.safetensors"
    save_file(state, path)
    assert read_checkpoint(path).tensors.keys() == state.keys()


def test_pickled_module_needs_explicit_trust(tmp_path):
    path = tmp_path / "whole.pt"
    torch.save(small_model(), path)
    with pytest.raises(CheckpointError, match="pickled Python objects.*--trust-pickle"):
        read_checkpoint(path)
    ckpt = read_checkpoint(path, trust_pickle=True)
    assert "took the state dict of a pickled Sequential" in ckpt.notes


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda p: None, "does not exist"),
        (lambda p: p.write_bytes(b""), "is empty"),
        (lambda p: p.write_bytes(b"not a checkpoint at all"), "truncated or not a PyTorch checkpoint"),
        (lambda p: torch.save([1, 2, 3], p), "not a state dict"),
        (lambda p: torch.save({"epoch": 3, "lr": 0.1}, p), "has no tensors"),
    ],
)
def test_unreadable_checkpoints_give_one_line_errors(tmp_path, make, message):
    path = tmp_path / "bad.pth"
    make(path)
    with pytest.raises(CheckpointError, match=message) as info:
        read_checkpoint(path)
    assert "\n" not in str(info.value)


def test_truncated_checkpoints_are_reported(tmp_path, state):
    for name, writer in (("t.pth", lambda p: torch.save(state, p)), ("t.safetensors", lambda p: save_file(state, p))):
        path = tmp_path / name
        writer(path)
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
        with pytest.raises(CheckpointError, match="truncated"):
            read_checkpoint(path)


def test_strict_loading_lists_problems_and_offers_escape_hatches(state):
    model = small_model()
    bad = dict(state)
    bad["4.weight"] = torch.zeros(7, 4)  # a head for another class count
    bad["extra.weight"] = torch.zeros(1)
    del bad["1.running_mean"]
    with pytest.raises(CheckpointError) as info:
        load_into(model, bad)
    message = str(info.value)
    assert "1 missing key(s): '1.running_mean'" in message
    assert "1 shape-mismatched key(s): '4.weight' (7, 4) vs model (2, 4)" in message
    assert "1 unexpected key(s): 'extra.weight'" in message
    notes = load_into(model, bad, allow_missing=("1.running_mean", "4"), allow_unexpected=(r"extra\..*",))
    assert notes == ["allowed 1 missing key(s)", "allowed 1 shape-mismatched key(s)", "allowed 1 unexpected key(s)"]
    assert torch.equal(model[0].weight, state["0.weight"])


def test_prefixes_are_aligned_to_the_model(state):
    wrapped = nn.Module()
    wrapped.backbone = small_model()
    notes = load_into(wrapped, {f"base_model.{k}": v for k, v in state.items()})
    assert notes == ["renamed prefix 'base_model.' -> 'backbone.'"]
    assert torch.equal(wrapped.backbone[0].weight, state["0.weight"])


def test_atomic_write_leaves_nothing_behind_on_failure(tmp_path):
    target = tmp_path / "out.safetensors"

    def disk_full(temp):
        with open(temp, "wb") as f:
            f.write(b"partial")
        raise OSError(errno.ENOSPC, "No space left on device")

    with pytest.raises(OSError, match="No space left"):
        atomic_write(target, disk_full)
    assert os.listdir(tmp_path) == []
    target.write_bytes(b"keep me")
    with pytest.raises(OutputError, match="already exists.*--force"):
        atomic_write(target, lambda temp: None)
    assert target.read_bytes() == b"keep me"
    with pytest.raises(OutputError, match="does not exist; create it first"):
        atomic_write(tmp_path / "nope" / "out.safetensors", lambda temp: None)


def test_written_files_get_the_usual_permissions(tmp_path):
    old = os.umask(0o022)
    try:
        path = atomic_write(tmp_path / "out.bin", lambda temp: open(temp, "wb").close())
    finally:
        os.umask(old)
    assert path.stat().st_mode & 0o777 == 0o644  # readable by a serving process of another user


def test_allow_missing_matches_a_module_name_suffix_inside_a_wrapper():
    from torch import nn

    from fan_convert.io import load_into

    class Wrapper(nn.Module):
        def __init__(self, classes):
            super().__init__()
            self.backbone = nn.Sequential()
            self.backbone.add_module("fc", nn.Linear(4, classes))

    tensors = Wrapper(10).state_dict()
    notes = load_into(Wrapper(3), tensors, allow_missing=("fc",))
    assert any("shape-mismatched" in note for note in notes)
    with pytest.raises(Exception, match=r"pattern 'c' matches no model key \(nearest: 'fc'\)"):
        load_into(Wrapper(3), tensors, allow_missing=("c",))  # a suffix of a name, not of a module path: an error


@pytest.mark.parametrize("pattern", ["fc", "backbone.fc", "fc.*", "fc.weight|fc.bias", "backbone.fc.weight|backbone.fc.bias"])
def test_allow_missing_patterns_are_a_key_a_prefix_or_a_full_match_regex(pattern):
    from torch import nn

    from fan_convert.io import load_into

    model = nn.Sequential()
    model.add_module("backbone", nn.Sequential())
    model.backbone.add_module("fc", nn.Linear(4, 3))
    tensors = {"backbone.fc.weight": torch.zeros(10, 4), "backbone.fc.bias": torch.zeros(10)}
    assert "allowed 2 shape-mismatched key(s)" in load_into(model, tensors, allow_missing=(pattern,))
