"""TSN/TSM video wrappers for timm 2D backbones, and the temporal shift reading T at run time.
Random weights; nothing downloads."""

import copy
import warnings

import pytest
import timm
import torch
from conftest import randomize_norms
from torch import nn

import fan_convert
from fan_convert.context import clip
from fan_convert.nn.temporal import ShiftedInput, TemporalShift, temporal_shift
from fan_convert.surgery.analyze import analyze
from fan_convert.testing import count_parameters
from fan_convert.zoo import build
from fan_convert.zoo.catalog import ZOO
from fan_convert.zoo.specs import UnknownArchError
from fan_convert.zoo.wrappers import TSM, TSN

KEYS = (4, 8, 16)

# the 2D backbones of the zoo catalog, with their own arguments (the wrapper's left out)
BACKBONES = {
    e.spec.removeprefix("timm:"): {k: v for k, v in e.kwargs.items() if k not in ("temporal", "num_classes")}
    for e in ZOO if e.spec.startswith("timm:")
}


def backbone(name, **kw):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return timm.create_model(name, pretrained=False, num_classes=5, **{**BACKBONES.get(name, {}), **kw})


def coded(b, t, c, *rest):
    """A (b*t, c, *rest) tensor whose value names its video, frame and channel: 1000b + 100f + c + 1."""
    values = torch.empty(b, t, c, *rest)
    for i in range(b):
        for f in range(t):
            for ch in range(c):
                values[i, f, ch] = 1000 * i + 100 * f + ch + 1
    return values.flatten(0, 1)


def reference_shift(x, t, fold, channel_dim=1):
    """The TSM shift written frame by frame, with T given (the test's independent oracle)."""
    x = x.movedim(channel_dim, 1)
    out = x.clone()
    for start in range(0, x.shape[0], t):
        for f in range(t):
            row = start + f
            out[row, :fold] = x[row + 1, :fold] if f + 1 < t else 0
            out[row, fold:2 * fold] = x[row - 1, fold:2 * fold] if f > 0 else 0
    return out.movedim(1, channel_dim)


# ---------------------------------------------------------------- the shift


def test_shift_moves_one_eighth_backward_one_eighth_forward_zero_padded():
    x = coded(2, 4, 16, 1, 1)  # two videos of 4 frames, 16 channels: fold = 2
    with clip(4):
        out = TemporalShift()(x)
    out = out.unflatten(0, (2, 4))[..., 0, 0]
    for v in range(2):
        for f in range(4):
            for ch in range(16):
                got = out[v, f, ch].item()
                if ch < 2:  # backward: frame f takes frame f+1; zeros after the clip's last frame
                    want = 1000 * v + 100 * (f + 1) + ch + 1 if f < 3 else 0
                elif ch < 4:  # forward: frame f takes frame f-1; zeros before the clip's first frame
                    want = 1000 * v + 100 * (f - 1) + ch + 1 if f > 0 else 0
                else:
                    want = 1000 * v + 100 * f + ch + 1
                assert got == want, (v, f, ch)
    # no frame crosses from one video to the other
    assert ((out[0] < 1000) | (out[0] == 0)).all() and ((out[1] >= 1000) | (out[1] == 0)).all()


def test_token_shift_uses_the_last_dimension():
    x = coded(2, 4, 16).unsqueeze(1).expand(8, 3, 16).clone()  # (B*T, N=3 tokens, C=16)
    with clip(4):
        out = temporal_shift(x, 8, channel_dim=-1)
    assert torch.equal(out, reference_shift(x, 4, 2, channel_dim=-1))
    assert torch.equal(out[:, :, 4:], x[:, :, 4:])


def test_the_clip_length_is_read_at_run_time_not_stored():
    """One shift serves every clip length (the official FAN code built its shift for 16 frames
    and fed it 4- and 8-frame clips, mixing videos and frames)."""
    shift = TemporalShift(shift_div=4)
    x = torch.randn(8, 8, 3, 3)
    with clip(4):
        as_two_clips = shift(x)
    with clip(8):
        as_one_clip = shift(x)
    assert torch.equal(as_two_clips, reference_shift(x, 4, 2))
    assert torch.equal(as_one_clip, reference_shift(x, 8, 2))
    assert not torch.equal(as_two_clips, as_one_clip)
    with clip(16), fan_convert.frames(4):  # selecting a sub-network does not change the clip
        assert torch.equal(shift(torch.ones(16, 8)), reference_shift(torch.ones(16, 8), 16, 2))


def test_shift_errors_are_clear():
    with pytest.raises(fan_convert.NoActiveFrames, match=r"\(B, C, T, H, W\) clip.*fan_convert.context.clip\(T\)"):
        TemporalShift()(torch.randn(8, 16))
    with clip(4), pytest.raises(ValueError, match="batch of 6, which is not a whole number of 4-frame clips"):
        TemporalShift()(torch.randn(6, 16))
    with pytest.raises(ValueError, match="shift_div"):
        TemporalShift(shift_div=1)


def test_shifted_input_keeps_official_state_dict_keys_and_delegates():
    conv = nn.Conv2d(16, 4, 1)
    shifted = ShiftedInput(conv)
    assert list(shifted.state_dict()) == ["net.weight", "net.bias"]
    assert shifted.in_channels == 16 and shifted.weight is conv.weight
    x = torch.randn(8, 16, 2, 2)
    with clip(4):
        assert torch.allclose(shifted(x), conv(reference_shift(x, 4, 2)))


# ---------------------------------------------------------------- the wrappers


@pytest.mark.parametrize("name", BACKBONES)
def test_tsn_and_tsm_map_clips_to_logits(name):
    x = torch.randn(2, 3, 4, 64, 64)
    net = backbone(name).eval()
    with torch.no_grad():
        assert TSN(net)(x).shape == (2, 5)
        tsm = TSM(net)
        assert tsm.shifted and tsm(x).shape == (2, 5)
    assert all(isinstance(net.get_submodule(p), ShiftedInput) for p in tsm.shifted)


def test_tsm_shifts_the_first_layer_of_every_residual_block():
    resnet = TSM(backbone("resnet18"))
    assert resnet.shifted == tuple(f"layer{i}.{j}.conv1" for i in range(1, 5) for j in range(2))
    assert resnet.backbone.layer1[0].conv1.channel_dim == 1
    assert "backbone.layer1.0.conv1.net.weight" in resnet.state_dict()
    vit = TSM(backbone("vit_tiny_patch16_224"))
    assert vit.shifted[:2] == ("blocks.0.attn.qkv", "blocks.0.mlp.fc1") and len(vit.shifted) == 24
    assert vit.backbone.blocks[0].attn.qkv.channel_dim == -1
    convnext = TSM(backbone("convnext_tiny"))
    assert convnext.shifted[0] == "stages.0.blocks.0.conv_dw"  # depthwise: shifting before it is fine


def test_tsm_keeps_every_parameter():
    plain = backbone("resnet18")
    tsm = TSM(copy.deepcopy(plain))
    assert count_parameters(tsm) == count_parameters(plain)
    renamed = {k.replace("conv1.net.", "conv1."): v for k, v in tsm.backbone.state_dict().items()}
    assert all(torch.equal(renamed[k], v) for k, v in plain.state_dict().items())


def test_tsn_is_the_mean_of_per_frame_logits():
    net = backbone("resnet18").eval()
    x = torch.randn(2, 3, 4, 64, 64)
    with torch.no_grad():
        expected = torch.stack([net(x[:, :, f]) for f in range(4)], dim=1).mean(1)
        assert torch.allclose(TSN(net)(x), expected, atol=1e-6)


@pytest.mark.parametrize("name", ["resnet18", "vit_tiny_patch16_224"])
def test_tsm_equals_the_backbone_with_hand_written_shifts_at_any_clip_length(name):
    plain = randomize_norms(backbone(name)).eval()
    tsm = TSM(copy.deepcopy(plain)).eval()
    state = {"t": None}
    for path, dim in zip(tsm.shifted, [tsm.backbone.get_submodule(p).channel_dim for p in tsm.shifted], strict=True):
        layer = plain.get_submodule(path)
        fold = (layer.in_channels if dim == 1 else layer.in_features) // 8
        layer.register_forward_pre_hook(lambda m, args, dim=dim, fold=fold: (reference_shift(args[0], state["t"], fold, dim),))
    for b, t in ((2, 4), (1, 8)):
        x = torch.randn(b, 3, t, 64, 64)
        state["t"] = t
        with torch.no_grad():
            expected = plain(x.transpose(1, 2).flatten(0, 1)).unflatten(0, (b, t)).mean(1)
            assert (tsm(x) - expected).abs().max().item() <= 1e-5, (b, t)


def test_videos_in_a_batch_never_exchange_frames():
    tsm = TSM(randomize_norms(backbone("resnet18"))).eval()
    x = torch.randn(2, 3, 4, 64, 64)
    with torch.no_grad():
        together = tsm(x)
        apart = torch.cat([tsm(x[:1]), tsm(x[1:])])
    assert (together - apart).abs().max().item() <= 1e-5


def test_wrapper_errors_are_clear():
    with pytest.raises(ValueError, match=r"expects a clip \(B, C, T, H, W\)"):
        TSN(backbone("resnet18"))(torch.randn(2, 3, 64, 64))
    plain = nn.Sequential(nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 5))
    with pytest.raises(ValueError, match=r"no residual block.*use TSN\(backbone\)"):
        TSM(plain)
    tsm = TSM(backbone("resnet18"))
    with pytest.raises(ValueError, match="already has temporal shifts"):
        TSM(tsm.backbone)
    with pytest.raises(fan_convert.NoActiveFrames, match="clip"):  # the backbone alone, frames already folded
        tsm.backbone(torch.randn(8, 3, 32, 32))


def test_tsm_trains():
    tsm = TSM(backbone("resnet18")).train()
    tsm(torch.randn(2, 3, 4, 32, 32)).sum().backward()
    assert tsm.backbone.layer1[0].conv1.net.weight.grad is not None


# ---------------------------------------------------------------- with fan_convert.adapt


# Preservation, fold and round trips of adapted TSM/TSN models: tests/test_invariants.py.


def test_adapted_tsm_traces_whole_and_reads_t_from_the_clip():
    torch.manual_seed(0)
    tsm = TSM(randomize_norms(backbone("resnet18"))).eval()
    assert analyze(tsm).mode == "fx"  # the shift stays one call in the graph; the whole model traces
    clip8 = torch.randn(1, 3, 8, 64, 64)
    with torch.no_grad():
        expected = tsm(clip8)
        fan = fan_convert.adapt(tsm, frames=KEYS, targets="paper").eval()
        assert (fan(clip8) - expected).abs().max().item() <= 1e-5  # T = 8 inferred from the clip


@pytest.mark.parametrize("name", ["resnet18", "vit_tiny_patch16_224"])
def test_paper_targets_are_the_layers_behind_the_shifts(name):
    altered = [s.path for s in fan_convert.plan(TSM(backbone(name)), KEYS, targets="paper").select("alteration")]
    assert altered and all(p.endswith(".net") for p in altered)


def test_default_targets_reach_the_shifted_transformer_inputs():
    vit = TSM(backbone("vit_tiny_patch16_224", depth=1))
    altered = [s.path for s in fan_convert.plan(vit, KEYS).select("alteration")]
    assert "backbone.blocks.0.attn.qkv.net" in altered and "backbone.blocks.0.mlp.fc1.net" in altered


def test_adapted_tsm_on_folded_frames_needs_an_explicit_clip():
    fan = fan_convert.adapt(TSM(backbone("resnet18")), frames=KEYS).eval()
    frames = torch.randn(8, 3, 32, 32)
    with pytest.raises(fan_convert.NoActiveFrames):
        fan.backbone(frames)
    with torch.no_grad(), clip(8):
        assert fan.backbone(frames).shape == (8, 5)


# ---------------------------------------------------------------- zoo.build


def test_build_wraps_timm_backbones():
    assert isinstance(build("timm:resnet18", num_classes=5), TSN)
    tsm = build("timm:resnet18", temporal="tsm", shift_div=4, num_classes=5)
    assert isinstance(tsm, TSM) and tsm.backbone.layer1[0].conv1.shift_div == 4
    assert not isinstance(build("timm:resnet18", temporal="none"), TSN)
    vit = build("timm:vit_tiny_patch16_224", temporal="tsm", img_size=64, num_classes=5).eval()
    with torch.no_grad():
        assert vit(torch.randn(1, 3, 4, 64, 64)).shape == (1, 5)


def test_build_refuses_bad_temporal_options():
    with pytest.raises(ValueError, match="temporal must be one of 'tsn', 'tsm', 'none'"):
        build("timm:resnet18", temporal="tsx")
    with pytest.raises(ValueError, match="shift_div applies to temporal='tsm' only"):
        build("timm:resnet18", shift_div=4)
    with pytest.raises(ValueError, match="applies to 2D backbones"):
        build("torchvision:r3d_18", temporal="tsm")
    with pytest.raises(UnknownArchError, match="did you mean timm:resnet18"):
        build("timm:resnet1", temporal="tsm")
