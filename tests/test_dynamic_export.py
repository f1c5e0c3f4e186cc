"""One artifact for every frame count (fan_convert.export, `fan-convert export` without --frames):
the stacked, branch-free form of a FAN, exported with a dynamic frame axis and verified at every
key and at untrained frame counts."""

import re
import warnings

import pytest
import torch
from test_deploy import tiny_fan
from torch import nn

import fan_convert
from fan_convert.deploy import VerificationError, export_verified
from fan_convert.deploy import dynamic as dynamic_module
from fan_convert.deploy.dynamic import check_frames_for, dynamic_form, export
from fan_convert.io import OutputError
from fan_convert.nn.stacked import StackedAlteration, StackedNorm, key_index_for
from fan_convert.testing import random_clip
from fan_convert.zoo import build

KEYS = (4, 8, 16)
SIZE = 32
fan = pytest.fixture(scope="module", name="fan")(tiny_fan)  # test_deploy's tiny FAN, every key moved apart


def test_the_key_index_is_the_nearest_key_with_ties_up():
    for keys in ((4, 8, 16), (3, 5), (8,), (2, 4, 6, 8, 32)):
        for t in range(1, 70):
            index = key_index_for(t, keys).item()
            assert sorted(keys)[index] == fan_convert.nearest_key(t, keys), (keys, t)


def test_check_frames_cover_keys_ties_and_both_sides():
    assert check_frames_for(KEYS, 64) == [2, 4, 5, 6, 8, 11, 12, 16, 20]
    assert check_frames_for((3, 6), 64) == [2, 3, 4, 5, 6, 7]


def test_the_stacked_form_computes_what_the_fan_computes(fan):
    form = dynamic_form(fan)
    assert not any(isinstance(m, (fan_convert.nn.NormBank, fan_convert.nn.WeightAlteration)) for m in form.modules())
    # stored: one specialized model's tensors, the other keys' rows of the norms, every key's scales
    norms = sum(getattr(m, name.replace(".", "__")).numel() for m in form.modules() if isinstance(m, StackedNorm)
                for name in m._stacked)
    scales = sum(m.scales.numel() for m in form.modules() if isinstance(m, StackedAlteration))
    plain = sum(t.numel() for t in fan_convert.specialize(fan, 8).state_dict().values())
    assert sum(t.numel() for t in form.state_dict().values()) == plain + norms * (len(KEYS) - 1) // len(KEYS) + scales
    assert any(isinstance(m, StackedNorm) for m in form.modules())
    assert any(isinstance(m, StackedAlteration) for m in form.modules())
    with torch.no_grad():
        for t in (2, 4, 6, 7, 12, 20):
            x = random_clip(t, SIZE)
            assert torch.allclose(form(x), fan(x), atol=1e-6), t
    assert any(isinstance(m, fan_convert.nn.NormBank) for m in fan.modules())  # the FAN is untouched



def test_tensors_equal_at_every_key_are_stored_once():
    torch.manual_seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fan = fan_convert.adapt(build("fan_convert:tiny_resnet", temporal="tsm", num_classes=3).eval(), frames=KEYS).eval()
    form = dynamic_form(fan)  # freshly adapted: every key equal, so no stack and no alteration remain
    assert not any(b.shape[:1] == (len(KEYS),) and b.dim() >= 2 for b in form.buffers())
    assert not any(isinstance(m, StackedAlteration) for m in form.modules())
    original = sum(p.numel() for p in build("fan_convert:tiny_resnet", temporal="tsm", num_classes=3).state_dict().values())
    assert sum(t.numel() for t in form.state_dict().values()) == original


def test_one_pt2_serves_every_frame_count(fan, tmp_path):
    result = export(fan, tmp_path / "all.pt2", input_size=SIZE)
    assert result.path.is_file() and result.bytes == result.path.stat().st_size
    assert sorted(result.checked) == [2, 4, 5, 6, 8, 11, 12, 16, 20] and result.max_diff <= 1e-4
    assert result.keys == KEYS and result.frames == (2, 64) and result.format == "torch-export"
    artifact = torch.export.load(str(result.path)).module()
    with torch.no_grad():
        for t in (3, 9, 33):  # frame counts the export never saw
            x = random_clip(t, SIZE, seed=t)
            assert (artifact(x) - fan(x)).abs().max() <= 1e-4, t
        x = random_clip(6, SIZE)  # a tie: key 8's sub-network, not key 4's
        with fan_convert.frames(4):
            assert (artifact(x) - fan(x)).abs().max() > 1e-3
    # one file, not one per key: the tiny model's norms are a large share of it, so the ratio to one
    # specialized file is larger here than for real models (bench/dynamic_export.py: 1.02x for ResNet-18)
    one = export_verified(fan, 16, tmp_path / "t16.pt2", input_size=SIZE).bytes
    assert result.bytes < 2 * one < len(KEYS) * one
    assert sorted(p.name for p in tmp_path.iterdir()) == ["all.pt2", "t16.pt2"]


def test_one_onnx_file_serves_every_frame_count(fan, tmp_path):
    ort = pytest.importorskip("onnxruntime")
    pytest.importorskip("onnxscript")
    result = export(fan, tmp_path / "all.onnx", input_size=SIZE, frames=(2, 4, 6, 16, 20))
    assert sorted(result.checked) == [2, 4, 6, 16, 20] and result.max_diff <= 1e-4
    session = ort.InferenceSession(str(result.path), providers=["CPUExecutionProvider"])
    (clip_input,) = session.get_inputs()
    assert clip_input.name == "clip" and isinstance(clip_input.shape[2], str)  # a symbolic frame axis
    with torch.no_grad():
        for t in (3, 13):
            x = random_clip(t, SIZE, seed=t)
            (logits,) = session.run(None, {"clip": x.numpy()})
            assert (torch.from_numpy(logits) - fan(x)).abs().max() <= 1e-4, t


def test_bad_arguments_and_a_failed_check_leave_no_file(fan, tmp_path, monkeypatch):
    with pytest.raises(ValueError, match="outside the artifact's range 2..64"):
        export(fan, tmp_path / "m.pt2", frames=(1, 8), input_size=SIZE)
    with pytest.raises(ValueError, match="below the largest trained key 16"):
        export(fan, tmp_path / "m.pt2", max_frames=8, input_size=SIZE)
    with pytest.raises(ValueError, match="not an adapted model"):
        export(nn.Linear(2, 2), tmp_path / "m.pt2")
    with pytest.raises(OutputError, match="does not exist"):
        export(fan, tmp_path / "missing" / "m.pt2", input_size=SIZE)
    real = dynamic_module.dynamic_form

    def spoiled(model, *args):
        form = real(model, *args)
        with torch.no_grad():
            form.model.backbone.fc.bias.add_(0.01)
        return form

    monkeypatch.setattr(dynamic_module, "dynamic_form", spoiled)
    with pytest.raises(VerificationError, match="at 2 frames .key 4. the exported model differs from the FAN by 0.01"):
        export(fan, tmp_path / "m.pt2", input_size=SIZE)
    existing = tmp_path / "m.pt2"
    existing.write_bytes(b"the previous artifact")
    with pytest.raises(OutputError, match="already exists"):
        export(fan, existing, input_size=SIZE)
    with pytest.raises(VerificationError):
        export(fan, existing, input_size=SIZE, overwrite=True)
    assert existing.read_bytes() == b"the previous artifact"
    assert [p.name for p in tmp_path.iterdir()] == ["m.pt2"]


def test_the_cli_exports_one_artifact_without_frames(fan, tmp_path):
    from typer.testing import CliRunner

    from fan_convert.cli import app, cli_args

    fan_file = fan_convert.save(fan, tmp_path / "tiny.fan.safetensors")

    def invoke(*args):
        return CliRunner().invoke(app, cli_args([str(a) for a in args]), env={"COLUMNS": "200"})

    result = invoke("export", fan_file, "--input-size", SIZE)
    assert result.exit_code == 0, result.output
    artifact = tmp_path / "tiny.pt2"
    assert artifact.is_file() and sorted(p.name for p in tmp_path.iterdir()) == ["tiny.fan.safetensors", "tiny.pt2"]
    assert "x one specialized export" in result.output and "takes 2 to 64 frames" in result.output
    assert re.search(r"│ +6 │ +8 \(nearest\) │ +\S+ │", result.output)  # a tie goes to the higher key
    meta = {"fan_convert": ""}
    torch.export.load(str(artifact), extra_files=meta)
    assert '"frames": "any"' in meta["fan_convert"] and '"keys": [4, 8, 16]' in meta["fan_convert"]
    again = invoke("export", fan_file, "--input-size", SIZE)  # never replaced without --force
    assert again.exit_code == 2 and "already exists" in again.output
    also = invoke("export", fan_file, "--frames", "all", "--input-size", SIZE, "-o", tmp_path / "all.pt2")  # the same
    assert also.exit_code == 0 and (tmp_path / "all.pt2").is_file() and not list(tmp_path.glob("all_*"))
    assert "takes 2 to 64 frames" in also.output
    bad = invoke("export", fan_file, "--frames", "8", "--max-frames", "40", "-o", tmp_path / "x.pt2")
    assert bad.exit_code == 2 and len(bad.output.strip().splitlines()) == 1 and "--max-frames is for" in bad.output


class _FirstFrames(nn.Module):
    """Halves a clip of more than 8 frames: a Python branch on the frame count, which one traced graph cannot serve."""

    def forward(self, x):
        return x[:, :, ::2] if x.shape[2] > 8 else x


def test_a_layer_that_fixes_t_is_named_in_the_refusal(tmp_path):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv3d(3, 4, 3, padding=1), nn.BatchNorm3d(4), nn.ReLU(), _FirstFrames(),
                          nn.AdaptiveAvgPool3d(1), nn.Flatten(), nn.Linear(4, 3)).eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fan = fan_convert.adapt(model, frames=KEYS, trained_at=16).eval()
    with pytest.raises(fan_convert.deploy.ExportError) as info:
        export(fan, tmp_path / "m.pt2", input_size=8)
    message = str(info.value)
    assert "\n" not in message and "'3' (_FirstFrames) fixes the frame count at" in message
    assert "test_dynamic_export.py" in message and "in forward" in message and "(--frames)" in message
    assert not (tmp_path / "m.pt2").exists() and not list(tmp_path.iterdir())


def test_recording_guards_prints_nothing_and_leaves_torch_logging_as_it_was(capfd):
    import logging

    from fan_convert.deploy.guards import GuardLog

    logger = logging.getLogger("torch.fx.experimental.symbolic_shapes")
    before = (logger.level, logger.propagate, list(logger.handlers))
    model = nn.Sequential(nn.Conv3d(3, 2, 1), _FirstFrames()).eval()
    x = torch.randn(1, 3, 12, 4, 4)
    frames = torch.export.Dim("frames", min=2, max=32)
    with GuardLog(model) as log, pytest.raises(Exception, match="frames"):  # torch's constraint violation
        torch.export.export(model, (x,), dynamic_shapes=({2: frames},), strict=False)
    assert log.culprit().module == "1" and log.culprit().kind == "_FirstFrames"
    assert (logger.level, logger.propagate, list(logger.handlers)) == before
    assert "guard added" not in capfd.readouterr().err
