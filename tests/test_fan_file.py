import json

import pytest
import torch
import torchvision
from safetensors import safe_open
from safetensors.torch import save_file

import fan_convert
from fan_convert.io import FanFileError, OutputError, load, read_manifest, save, save_specialized
from fan_convert.testing import assert_same_at_every_key

KEYS = (4, 8, 16)


def trained_fan():
    torch.manual_seed(0)
    fan = fan_convert.adapt(torchvision.models.video.r3d_18(num_classes=5), frames=KEYS)
    with torch.no_grad():  # as if fine-tuned: every key differs
        for name, p in fan.named_parameters():
            if ".norms." in name or ".scales." in name:
                p.add_(0.05 * torch.randn_like(p))
    return fan.eval()


ARCH = dict(arch="torchvision:r3d_18", arch_kwargs={"num_classes": 5})


def test_save_then_load_is_exact_at_every_key(tmp_path):
    fan = trained_fan()
    path = save(fan, tmp_path / "fan.safetensors", **ARCH)
    back = load(path)
    assert_same_at_every_key(fan, back, torch.randn(1, 3, 16, 32, 32), KEYS)
    assert back.fan_plan.to_dict() == fan.fan_plan.to_dict()
    manifest = read_manifest(path)
    assert manifest["kind"] == "fan" and manifest["frames"] == [4, 8, 16] and manifest["trained_at"] == 16
    assert manifest["arch"] == {"spec": "torchvision:r3d_18", "kwargs": {"num_classes": 5}}
    assert set(manifest["versions"]) == {"fan_convert", "torch"}
    with safe_open(str(path), framework="pt") as f:
        assert json.loads(f.metadata()["fan_convert"])["plan"]["frames"] == [4, 8, 16]


def test_specialized_file_is_the_plain_architecture(tmp_path):
    fan = trained_fan()
    path = save_specialized(fan, 8, tmp_path / "plain8.safetensors", **ARCH)
    plain = load(path)
    assert type(plain) is torchvision.models.video.VideoResNet and not hasattr(plain, "fan_plan")
    x = torch.randn(1, 3, 8, 32, 32)
    with fan_convert.frames(8):
        torch.testing.assert_close(plain(x), fan(x), atol=1e-5, rtol=1e-5)
    reference = torchvision.models.video.r3d_18(num_classes=5).eval()
    reference.load_state_dict(plain.state_dict())
    assert sum(p.numel() for p in plain.parameters()) == sum(p.numel() for p in reference.parameters())


def test_load_without_a_recorded_architecture_needs_the_model(tmp_path):
    fan = trained_fan()
    path = save(fan, tmp_path / "fan.safetensors")
    with pytest.raises(FanFileError, match="records no architecture"):
        load(path)
    back = load(path, model=torchvision.models.video.r3d_18(num_classes=5))
    with fan_convert.frames(4):
        x = torch.randn(1, 3, 4, 32, 32)
        assert torch.equal(back(x), fan(x))


def test_factories_from_a_file_run_only_when_trusted(tmp_path):
    fan = trained_fan()
    path = save(fan, tmp_path / "fan.safetensors", arch="torchvision.models.video:r3d_18", arch_kwargs={"num_classes": 5})
    with pytest.raises(FanFileError, match="trust_factory=True"):
        load(path)
    assert load(path, trust_factory=True).fan_plan.frames == KEYS


def test_output_is_never_clobbered(tmp_path):
    fan = trained_fan()
    path = save(fan, tmp_path / "fan.safetensors", **ARCH)
    before = path.read_bytes()
    with pytest.raises(OutputError, match="already exists"):
        save(fan, path, **ARCH)
    assert path.read_bytes() == before
    save(fan, path, overwrite=True, **ARCH)


def test_files_that_are_not_fan_checkpoints(tmp_path):
    plain = tmp_path / "plain.safetensors"
    save_file({"w": torch.zeros(2)}, plain)
    with pytest.raises(FanFileError, match="no fan-convert manifest"):
        read_manifest(plain)
    broken = tmp_path / "broken.safetensors"
    broken.write_bytes(b"\x09\x00\x00\x00\x00\x00\x00\x00{not json")
    with pytest.raises(FanFileError, match=f"^'{broken}' has a damaged safetensors header; the file is damaged: write it again"):
        read_manifest(broken)
    broken.write_bytes(b"PK\x03\x04 a zip, as torch.save writes")
    with pytest.raises(FanFileError, match="is not a safetensors file, or is truncated"):
        read_manifest(broken)
    with pytest.raises(FanFileError, match="does not exist"):
        read_manifest(tmp_path / "missing.safetensors")


def test_specialized_file_can_keep_unfoldable_alterations_explicitly(tmp_path):
    torch.manual_seed(0)
    fan = fan_convert.adapt(torchvision.models.video.r3d_18(num_classes=5), frames=KEYS, kernel_size=3).eval()
    with pytest.raises(fan_convert.NotFoldableError, match="cannot be folded"):
        save_specialized(fan, 8, tmp_path / "refused.safetensors", **ARCH)
    assert not (tmp_path / "refused.safetensors").exists()
    path = save_specialized(fan, 8, tmp_path / "kept.safetensors", unfoldable="keep", **ARCH)
    plain = load(path)
    x = torch.randn(1, 3, 8, 32, 32)
    with fan_convert.frames(8):
        assert torch.equal(plain(x), fan(x))


def test_models_built_from_a_spec_remember_it(tmp_path):
    from fan_convert.zoo import build

    model = build("timm:resnet18", temporal="tsm", num_classes=3)
    assert model.fan_arch == {"spec": "timm:resnet18", "kwargs": {"temporal": "tsm", "shift_div": 8, "num_classes": 3}}
    fan = fan_convert.adapt(model, frames=(4, 8))
    back = load(save(fan, tmp_path / "tsm.safetensors"))
    x = torch.randn(1, 3, 8, 32, 32)
    assert torch.equal(back(x), fan.eval()(x))


def test_fixed_t_model_converts_saves_loads_and_specializes(tmp_path):
    """X3D's head pool is sized to its 4-frame clip: after conversion it runs at every key, the
    file reloads exactly, and a specialized file for 8 frames runs the plain architecture at 8."""
    arch = dict(arch="pytorchvideo.models.x3d:create_x3d",
                arch_kwargs={"input_clip_length": 4, "input_crop_size": 64, "model_num_class": 5})
    from pytorchvideo.models.x3d import create_x3d

    torch.manual_seed(0)
    model = create_x3d(**arch["arch_kwargs"]).eval()
    clip4 = torch.randn(1, 3, 4, 64, 64)
    fan = fan_convert.adapt(model, frames=(4, 8, 16), trained_at=4, example_input=clip4).eval()
    assert [s.path for s in fan.fan_plan.select("fixed_t")] == ["blocks.5.pool.pool"]
    with torch.no_grad():
        assert (fan(clip4) - model(clip4)).abs().max() <= 1e-5
        outputs = {t: fan(torch.randn(1, 3, t, 64, 64)) for t in (8, 16)}
    assert all(o.shape == (1, 5) for o in outputs.values())
    back = load(save(fan, tmp_path / "x3d.safetensors", **arch), trust_factory=True)
    clip8 = torch.randn(1, 3, 8, 64, 64)
    with torch.no_grad():
        assert torch.equal(back(clip8), fan(clip8))
        plain8 = load(save_specialized(fan, 8, tmp_path / "x3d8.safetensors", **arch), trust_factory=True)
        assert type(plain8.blocks[5].pool.pool) is torch.nn.AvgPool3d and plain8.blocks[5].pool.pool.kernel_size[0] == 8
        torch.testing.assert_close(plain8(clip8), fan(clip8), atol=1e-5, rtol=1e-5)
