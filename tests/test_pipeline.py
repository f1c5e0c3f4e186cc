"""fan_convert.from_checkpoint: read -> build -> strict load -> eval -> adapt in one call."""

import warnings

import pytest
import torch

import fan_convert
from fan_convert.io import CheckpointError
from fan_convert.pipeline import load_pretrained
from fan_convert.zoo import build

ARCH = "fan_convert:tiny_resnet"
KWARGS = {"temporal": "tsm", "num_classes": 3}


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A model with non-trivial norm statistics, saved nested and DDP-prefixed."""
    torch.manual_seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = build(ARCH, **KWARGS).eval()
    with torch.no_grad():
        for name, b in model.named_buffers():
            if "running" in name:
                b.uniform_(0.5, 1.5)
    path = tmp_path_factory.mktemp("ckpt") / "tiny.pth"
    torch.save({"model_state": {f"module.{k}": v for k, v in model.state_dict().items()}, "epoch": 9}, path)
    return model, path


def test_from_checkpoint_gives_the_checkpoint_as_a_fan(trained, tmp_path):
    model, path = trained
    fan = fan_convert.from_checkpoint(path, ARCH, frames=(4, 8), arch_kwargs=KWARGS, targets="paper")
    assert not fan.training and fan.fan_plan.frames == (4, 8) and fan.fan_plan.targets == "paper"
    assert fan.fan_source == {"checkpoint": "tiny.pth", "notes": ["unwrapped 'model_state'", "stripped prefix 'module.'"]}
    clip = torch.randn(2, 3, 8, 32, 32)
    with torch.no_grad():
        assert torch.allclose(fan(clip), model(clip), atol=1e-5)  # the checkpoint's weights and statistics
    written = fan_convert.save(fan, tmp_path / "tiny.fan.safetensors")
    assert fan_convert.read_manifest(written)["source"] == fan.fan_source
    assert fan_convert.load(written).fan_source == fan.fan_source


def test_load_pretrained_is_the_plain_half(trained):
    model, path = trained
    plain = load_pretrained(path, ARCH, arch_kwargs=KWARGS)
    assert not plain.training and not hasattr(plain, "fan_plan")
    assert all(torch.equal(a, b) for a, b in zip(plain.state_dict().values(), model.state_dict().values(), strict=True))


def test_bad_frames_fail_before_the_checkpoint_is_read(tmp_path):
    with pytest.raises(ValueError, match="positive integer, got 0"):
        fan_convert.from_checkpoint(tmp_path / "missing.pth", ARCH, frames=(0, 8))
    with pytest.raises(CheckpointError, match="does not exist"):
        fan_convert.from_checkpoint(tmp_path / "missing.pth", ARCH, frames=(4, 8))


def test_a_missing_arch_names_the_python_argument_before_the_file_is_read(tmp_path):
    with pytest.raises(ValueError, match=r"^arch \(--arch\) is required: .* arch='timm:resnet50'"):
        load_pretrained(tmp_path / "missing.pth")  # not "does not exist": refused before reading


def test_strict_loading_and_its_escape_hatches(trained):
    _, path = trained
    with pytest.raises(CheckpointError, match="shape-mismatched key"):
        fan_convert.from_checkpoint(path, ARCH, frames=(4, 8), arch_kwargs={**KWARGS, "num_classes": 5})
    fan = fan_convert.from_checkpoint(path, ARCH, frames=(4, 8), arch_kwargs={**KWARGS, "num_classes": 5}, allow_missing=("backbone.fc",))
    assert fan.fan_source["notes"][-1].startswith("allowed 2 shape-mismatched key(s)")
