"""Fixed-T sites: layers that bake the training frame count into a model (head pools sized to the
training clip, temporal positional embeddings, stored frame counts) are found, rewritten to be
length-agnostic and identical at the trained T. Random weights; nothing downloads."""

import copy
import warnings

import pytest
import torch
import torch.nn.functional as F
import torchvision.models.video as tv_video
from conftest import randomize_norms
from pytorchvideo.layers.positional_encoding import SpatioTemporalClsPositionalEncoding
from pytorchvideo.models import hub as pv_hub
from pytorchvideo.models.resnet import create_resnet
from pytorchvideo.models.x3d import create_x3d
from torch import nn
from torchvision.models.video.mvit import PositionalEncoding as TVPositionalEncoding

from fan_convert.nn.position_encodings import (
    InterpolatedMViTPositionalEncoding,
    InterpolatedSpatioTemporalClsPositionalEncoding,
    interpolate_time,
)
from fan_convert.nn.time_pool import AdaptiveTimePool3d
from fan_convert.surgery.conversion import ConversionPlan, Site
from fan_convert.surgery.fixed_t import FIXED_T, find_fixed_t_sites, scale_clip
from fan_convert.surgery.rewriter import rewrite_fixed_t
from fan_convert.testing import fresh, random_clip


def by_status(sites, status):
    return {s.path: s for s in sites if s.status == status}


# ---------------------------------------------------------------------------- AdaptiveTimePool3d

POOLS = {
    "avg": lambda: nn.AvgPool3d((4, 3, 3), stride=(1, 2, 2), padding=(0, 1, 1)),
    "avg_no_pad_count": lambda: nn.AvgPool3d((4, 3, 3), stride=(4, 2, 2), padding=(0, 1, 1), count_include_pad=False, ceil_mode=True),
    "avg_divisor": lambda: nn.AvgPool3d((4, 2, 2), stride=1, divisor_override=8),
    "max": lambda: nn.MaxPool3d((4, 3, 3), stride=(1, 2, 2), padding=(0, 1, 1)),
}


@pytest.mark.parametrize("name", POOLS)
def test_pool_adapter_is_exact_at_trained_length_and_pools_all_time_elsewhere(name):
    pool = POOLS[name]()
    adapter = AdaptiveTimePool3d(pool, trained_frames=8)  # head sees 4 steps of an 8-frame clip
    x = torch.randn(2, 5, 4, 9, 9)
    assert torch.equal(adapter(x), pool(x))
    assert adapter.kernel_size == (4, 3, 3) or adapter.kernel_size == (4, 2, 2)
    assert adapter.original_class is type(pool) and adapter.trained_len == 4
    for t in (1, 2, 3, 8, 16):
        y = adapter(torch.randn(2, 5, t, 9, 9))
        assert y.shape[2] == 1 and y.shape[3:] == pool(x).shape[3:]
        plain = adapter.specialize(length=t)
        assert type(plain) is type(pool) and plain.kernel_size[0] == t
        z = torch.randn(2, 5, t, 9, 9)
        assert torch.allclose(adapter(z), plain(z), atol=1e-6)
    assert adapter.specialize(4).kernel_size[0] == 2  # 4 frames of a clip trained at 8 -> 2 steps


def test_pool_adapter_averages_uniformly_over_time():
    adapter = AdaptiveTimePool3d(nn.AvgPool3d((8, 7, 7), stride=1))
    x = torch.randn(2, 3, 5, 7, 7)
    assert torch.allclose(adapter(x), x.mean(dim=(2, 3, 4), keepdim=True), atol=1e-6)
    assert adapter(torch.randn(1, 3, 16, 7, 7)).shape == (1, 3, 1, 1, 1)


def test_pool_adapter_rejects_pools_that_do_not_cover_time_with_one_window():
    with pytest.raises(ValueError, match="temporal padding"):
        AdaptiveTimePool3d(nn.AvgPool3d((3, 3, 3), padding=1))
    with pytest.raises(TypeError):
        AdaptiveTimePool3d(nn.AvgPool2d(3))
    with pytest.raises(ValueError, match="length="):
        AdaptiveTimePool3d(nn.AvgPool3d((4, 3, 3))).specialize(8)  # trained_frames unknown
    with pytest.raises(ValueError, match="whole number"):
        AdaptiveTimePool3d(nn.AvgPool3d((4, 3, 3)), trained_frames=8).specialize(3)


# ------------------------------------------------------------------- positional-embedding adapters

def test_interpolate_time_is_identity_at_the_same_length_and_linear_otherwise():
    embed = torch.randn(1, 2, 5)
    assert interpolate_time(embed, 2, dim=1) is embed
    out = interpolate_time(embed, 4, dim=1)
    e0, e1 = embed[:, 0], embed[:, 1]
    expected = torch.stack([e0, 0.75 * e0 + 0.25 * e1, 0.25 * e0 + 0.75 * e1, e1], dim=1)
    assert torch.allclose(out, expected, atol=1e-6)
    assert interpolate_time(torch.randn(4, 3), 7, dim=0).shape == (7, 3)


def _randomized(module):
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn_like(p))
    return module


@pytest.mark.parametrize("rel_pos", [False, True])
def test_torchvision_mvit_encoding_adapter(rel_pos):
    torch.manual_seed(0)
    original = _randomized(TVPositionalEncoding(embed_size=6, spatial_size=(2, 3), temporal_size=4, rel_pos_embed=rel_pos))
    adapter = InterpolatedMViTPositionalEncoding.for_module(original, trained_frames=8)
    assert adapter.state_dict().keys() == original.state_dict().keys()
    x = torch.randn(2, 4 * 6, 6)
    assert torch.equal(adapter(x.clone()), original(x.clone()))  # bit-exact at the trained length
    assert adapter.temporal_size == 4
    for t in (1, 2, 8):
        tokens = torch.randn(2, t * 6, 6)
        y = adapter(tokens.clone())
        assert y.shape == (2, t * 6 + 1, 6) and adapter.temporal_size == t
        plain = adapter.specialize(length=t)
        assert type(plain) is TVPositionalEncoding and plain.temporal_size == t
        assert torch.allclose(plain(tokens.clone()), y, atol=1e-6)
    assert adapter.specialize(16).temporal_size == 8  # 16 frames at 2 frames per temporal patch
    with pytest.raises(ValueError, match="spatial"):
        adapter(torch.randn(1, 7, 6))


@pytest.mark.parametrize("sep", [True, False])
@pytest.mark.parametrize("cls", [True, False])
def test_pytorchvideo_encoding_adapter(sep, cls):
    torch.manual_seed(0)
    original = _randomized(SpatioTemporalClsPositionalEncoding(6, patch_embed_shape=(4, 2, 3), sep_pos_embed=sep, has_cls=cls))
    adapter = InterpolatedSpatioTemporalClsPositionalEncoding.for_module(original, trained_frames=8)
    assert adapter.state_dict().keys() == original.state_dict().keys()
    x = torch.randn(2, 24, 6)
    assert torch.equal(adapter(x), original(x))
    for t in (1, 2, 8):
        tokens = torch.randn(2, t * 6, 6)
        y = adapter(tokens)
        assert y.shape == (2, t * 6 + cls, 6)
        assert list(adapter.patch_embed_shape) == [t, 2, 3] and adapter.num_temporal_patch == t
        plain = adapter.specialize(length=t)
        assert type(plain) is SpatioTemporalClsPositionalEncoding and list(plain.patch_embed_shape) == [t, 2, 3]
        assert torch.allclose(plain(tokens), y, atol=1e-6)


def test_the_rule_table_converts_pools_by_exact_class_and_reports_subclasses():
    from fan_convert.surgery import rules

    pool = nn.MaxPool3d((2, 3, 3))
    rule = rules.match(pool, FIXED_T)
    assert rule.exact_match(pool) and isinstance(rule.make(pool, rules.BuildContext()), AdaptiveTimePool3d)

    class MyPool(nn.AvgPool3d):
        pass

    model = nn.Sequential(nn.Conv3d(3, 4, 1), MyPool((8, 2, 2), stride=1))
    sites = find_fixed_t_sites(model, 8, (4, 8))
    assert [(s.path, s.status) for s in sites] == [("1", "unsupported")] and "MyPool subclasses AvgPool3d" in sites[0].reason


# ------------------------------------------------------------------------------- whole models

# Small spatial sizes keep the file fast on 2 CPU cores. pytorchvideo's hub functions fix the head's
# spatial kernel, so slow_r50 and x3d_xs are built with their builders' hub arguments at a smaller
# crop; torchvision's s3d has no size argument, so its head pool is re-made for 64 px (same class,
# temporal kernel and stride; only the spatial kernel differs).

def slow_r50_32():  # pytorchvideo slow_r50 (the hub's builder arguments) at 32 px
    return create_resnet(stem_conv_kernel_size=(1, 7, 7), head_pool_kernel_size=(8, 1, 1), model_depth=50)


def x3d_xs_64():  # pytorchvideo x3d_xs (the hub's builder arguments) at 64 px
    return create_x3d(input_clip_length=4, input_crop_size=64)


def s3d_64():
    model = tv_video.s3d(weights=None)
    assert model.avgpool.kernel_size == (2, 7, 7) and model.avgpool.stride == 1
    model.avgpool = nn.AvgPool3d(kernel_size=(2, 2, 2), stride=1)
    return model


MODELS = {
    # name: (builder, example at the trained T, trained_at, expected converted sites)
    "pytorchvideo:slow_r50": (slow_r50_32, lambda: random_clip(8, 32), 8, {"blocks.5.pool"}),
    "pytorchvideo:x3d_xs": (x3d_xs_64, lambda: random_clip(4, 64), 4, {"blocks.5.pool.pool"}),
    "pytorchvideo:slowfast_r50": (
        lambda: pv_hub.slowfast_r50(pretrained=False, head_pool_kernel_sizes=((8, 1, 1), (32, 1, 1))),
        lambda: [random_clip(8, 32), random_clip(32, 32, seed=1)], 32, {"blocks.5.pool.0", "blocks.5.pool.1"}),
    "torchvision:s3d": (s3d_64, lambda: random_clip(16, 64), 16, {"avgpool"}),
}


@pytest.mark.parametrize("name", MODELS)
def test_head_pools_are_rewritten_exactly_and_run_at_half_and_double_length(name):
    build, make_input, trained, expected = MODELS[name]
    torch.manual_seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = randomize_norms(build()).train()
    x = make_input()
    before = dict(model.named_modules())
    half, double = trained // 2, trained * 2
    sites = find_fixed_t_sites(model, trained, (half, trained, double), example_input=fresh(x))
    assert dict(model.named_modules()) == before and model.training  # find leaves the model alone

    assert all(s.kind == FIXED_T and s.params_added == 0 for s in sites)
    converted = by_status(sites, "converted")
    assert set(converted) == expected, sites
    assert all(s.becomes == "AdaptiveTimePool3d" for s in converted.values())
    assert not by_status(sites, "unsupported"), sites  # verified: runs at every T after rewriting
    model.eval()
    with torch.no_grad():
        reference = model(fresh(x))
        rewrite_fixed_t(model, sites, trained_at=trained)
        assert all(isinstance(model.get_submodule(p), AdaptiveTimePool3d) for p in expected)
        assert (model(fresh(x)) - reference).abs().max().item() <= 1e-5
        out = model(scale_clip(x, trained, half))  # (and find_fixed_t_sites ran it at half and double)
        assert out.shape == reference.shape and torch.isfinite(out).all()
    again = find_fixed_t_sites(model, trained, (trained,))
    assert not by_status(again, "converted")  # idempotent: adapters are not sites


def test_s3d_refuses_keys_its_head_pool_cannot_serve_and_leaves_sliding_pools_alone():
    model = s3d_64()
    # the head pool sees 2 time steps at 16 frames: 4 frames would be half a step (and features.13,
    # a (2, 2, 2) stride-2 pool, gets one time step there): refused before anything is run
    with pytest.raises(ValueError, match=r"'avgpool' .* 2 time steps at trained_at=16 frames, so 4 frames .* multiples of 8"):
        find_fixed_t_sites(model, 16, (4, 16), example_input=random_clip(16, 64))
    sites = find_fixed_t_sites(model, 16, (8, 16), example_input=random_clip(16, 64))
    assert set(by_status(sites, "converted")) == {"avgpool"}  # branch/downsampling max-pools slide: not sites
    assert not by_status(sites, "unsupported")
    assert type(model.avgpool) is nn.AvgPool3d  # the model was given its pool back


def test_static_detection_finds_the_zoo_heads_at_their_canonical_size():
    for model, expected in (
        (pv_hub.slow_r50(pretrained=False), {"blocks.5.pool"}),
        (pv_hub.x3d_xs(pretrained=False), {"blocks.5.pool.pool"}),
        (pv_hub.slowfast_r50(pretrained=False), {"blocks.5.pool.0", "blocks.5.pool.1"}),
        (pv_hub.i3d_r50(pretrained=False), {"blocks.6.pool"}),  # its stage-1 MaxPool3d((2, 1, 1)) is left alone
        (tv_video.s3d(weights=None), {"avgpool"}),
    ):
        sites = find_fixed_t_sites(model, 8, (4, 8, 16))
        assert set(by_status(sites, "converted")) == expected and not by_status(sites, "unsupported")


def test_pytorchvideo_mvit_positional_embedding_is_interpolated():
    torch.manual_seed(0)
    model = pv_hub.mvit_base_16x4(pretrained=False, spatial_size=64).eval()
    keys = model.state_dict().keys()
    x16 = random_clip(16, 64)
    sites = find_fixed_t_sites(model, 16, (8, 16), example_input=x16)
    assert [(s.path, s.becomes, s.status) for s in sites] == [
        ("cls_positional_encoding", "InterpolatedSpatioTemporalClsPositionalEncoding", "converted")]
    with torch.no_grad():
        reference = model(x16)
        with pytest.raises(RuntimeError):
            model(random_clip(8, 64))
        rewrite_fixed_t(model, sites, trained_at=16)
        assert model.state_dict().keys() == keys  # same parameters under the same names
        assert (model(x16) - reference).abs().max().item() <= 1e-5
        out8 = model(random_clip(8, 64))
        assert out8.shape == reference.shape and torch.isfinite(out8).all()
    plain8 = model.cls_positional_encoding.specialize(8)
    assert type(plain8) is SpatioTemporalClsPositionalEncoding and list(plain8.patch_embed_shape) == [4, 16, 16]


def test_torchvision_mvit_positional_embedding_is_interpolated():
    # No size argument: canonical 224 px. The encoding is found by type; exactness at the trained
    # length is checked bit for bit by test_torchvision_mvit_encoding_adapter.
    model = tv_video.mvit_v1_b(weights=None).eval()
    keys = model.state_dict().keys()
    sites = find_fixed_t_sites(model, 16, (8, 16))
    assert [(s.path, s.becomes, s.status) for s in sites] == [("pos_encoding", "InterpolatedMViTPositionalEncoding", "converted")]
    rewrite_fixed_t(model, sites, trained_at=16)
    assert model.state_dict().keys() == keys
    with torch.no_grad():
        for t in (8, 16):
            out = model(random_clip(t, 224))
            assert out.shape == (1, 400) and torch.isfinite(out).all() and model.pos_encoding.temporal_size == t // 2
    assert model.pos_encoding.specialize(8).temporal_size == 4


def test_mvit_v2_relative_positions_only_need_the_temporal_size():
    model = tv_video.mvit_v2_s(weights=None).eval()
    sites = find_fixed_t_sites(model, 16, (8, 16))
    assert [(s.path, s.status) for s in sites] == [("pos_encoding", "converted")]
    rewrite_fixed_t(model, sites, trained_at=16)
    with torch.no_grad():
        assert model(random_clip(8, 224)).shape == (1, 400)


# ------------------------------------------------------------------- unsupported and left alone

class TemporalShift(nn.Module):
    def __init__(self, n_segment):
        super().__init__()
        self.n_segment = n_segment

    def forward(self, x):  # (B*T, C, H, W): shift a quarter of the channels one frame back
        nt, c, h, w = x.shape
        x = x.view(nt // self.n_segment, self.n_segment, c, h, w)
        return torch.cat([x[:, 1:, : c // 4], x[:, -1:, : c // 4]], 1).flatten(0, 1).repeat(1, 4, 1, 1)


class TSN(nn.Module):
    def __init__(self, num_segments=8):
        super().__init__()
        self.num_segments = num_segments
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.shift = TemporalShift(num_segments)

    def forward(self, x):  # (B, C, T, H, W) -> frames folded into the batch, averaged by num_segments
        b, c, t, h, w = x.shape
        y = self.shift(self.conv(x.transpose(1, 2).reshape(b * t, c, h, w)))
        return y.mean(dim=(2, 3)).view(-1, self.num_segments, 4).mean(1)


def test_stored_frame_counts_are_reported_unsupported():
    model = TSN()
    sites = find_fixed_t_sites(model, 8, (4, 8, 16), example_input=random_clip(8, 16))
    failed = by_status(sites, "unsupported")
    assert "num_segments=8" in failed[""].reason and "n_segment=8" in failed["shift"].reason
    assert all(s.becomes == "" for s in sites) and not by_status(sites, "converted")
    assert "T=4" in failed["shift"].reason  # and verification saw it break
    rewrite_fixed_t(model, sites)  # nothing to do
    assert isinstance(model.shift, TemporalShift)


class StemAndHead(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv3d(3, 4, 1)
        self.stem_pool = nn.MaxPool3d((2, 3, 3), stride=(1, 2, 2), padding=(0, 1, 1))  # slides over time
        self.smooth = nn.AvgPool3d((2, 1, 1), stride=1)  # slides too, though configured like a head
        self.head_pool = nn.AvgPool3d((6, 4, 4), stride=1)  # 8 frames -> 6 steps here: the whole axis
        self.fc = nn.Linear(4, 2)

    def forward(self, x):
        return self.fc(self.head_pool(self.smooth(self.stem_pool(self.conv(x)))).flatten(1))


def test_a_stem_pool_with_a_sliding_temporal_kernel_is_left_alone():
    model = StemAndHead().eval()
    x = random_clip(8, 8)
    sites = find_fixed_t_sites(model, 8, (4, 8, 16), example_input=x)
    assert [(s.path, s.status) for s in sites] == [("head_pool", "converted")]
    assert "pools all 6 time steps" in sites[0].reason
    with torch.no_grad():
        reference = model(x)
        rewrite_fixed_t(model, sites, trained_at=8)
        assert type(model.stem_pool) is nn.MaxPool3d and type(model.smooth) is nn.AvgPool3d
        assert isinstance(model.head_pool, AdaptiveTimePool3d)
        assert torch.equal(model(x), reference)
        for t in (4, 16):
            assert model(random_clip(t, 8)).shape == (1, 2)


def test_sites_round_trip_through_the_plan_and_bad_inputs_are_refused():
    model = StemAndHead()
    sites = find_fixed_t_sites(model, 8, (4, 8))  # static: stride 1 and no padding everywhere
    assert "stem_pool" not in {s.path for s in sites} and "head_pool" in by_status(sites, "converted")
    plan = ConversionPlan(frames=(4, 8), trained_at=8, targets=None, kernel_size=1, frame_axis=2,
                          analysis="module walk", params_before=0, sites=sites)
    assert ConversionPlan.from_dict(plan.to_dict()).sites == sites
    with pytest.raises(ValueError, match="trained_at=8"):
        find_fixed_t_sites(model, 8, (4, 8), example_input=random_clip(4, 8))
    with pytest.raises(ValueError, match="does not run"):
        find_fixed_t_sites(model, 8, (4, 8), example_input=torch.randn(1, 5, 8, 8, 8))
    with pytest.raises(ValueError, match="find the sites again"):
        rewrite_fixed_t(model, [Site("fc", FIXED_T, "AvgPool3d", "AdaptiveTimePool3d", "converted")])


def test_scale_clip_scales_every_pathway_by_the_same_factor():
    slow, fast = random_clip(8, 4), random_clip(32, 4)
    scaled = scale_clip([slow, fast], 32, 16)
    assert [c.shape[2] for c in scaled] == [4, 16]
    assert torch.equal(scale_clip(slow, 8, 4), slow[:, :, ::2])
    with pytest.raises(ValueError):
        scale_clip([slow, fast], 32, 10)


def test_rewritten_models_copy_and_save():
    model = StemAndHead()
    rewrite_fixed_t(model, find_fixed_t_sites(model, 8, (8,), example_input=random_clip(8, 8)), trained_at=8)
    twin = copy.deepcopy(model)
    assert isinstance(twin.head_pool, AdaptiveTimePool3d) and twin.head_pool.trained_frames == 8
    twin.load_state_dict(model.state_dict())
    assert F.mse_loss(twin(random_clip(4, 8)), model(random_clip(4, 8))).item() == 0


def test_adapters_trace_with_torch_fx_and_keep_reading_t_from_the_input():
    pool = AdaptiveTimePool3d(nn.AvgPool3d((4, 3, 3), stride=1))
    encoding = InterpolatedMViTPositionalEncoding.for_module(
        _randomized(TVPositionalEncoding(embed_size=6, spatial_size=(2, 2), temporal_size=4, rel_pos_embed=False)))
    for adapter, make in ((pool, lambda t: torch.randn(1, 2, t, 3, 3)), (encoding, lambda t: torch.randn(1, 4 * t, 6))):
        traced = torch.fx.symbolic_trace(adapter)
        for t in (2, 4, 8):
            x = make(t)
            assert torch.equal(traced(x.clone()), adapter(x.clone()))


def test_one_family_of_fixed_t_layers_stands_in_for_library_modules():
    """Every fixed-T layer that replaces a library's module is a frame-following adapter: an
    instance of the class it replaces, with the same parameters; the head pool (rebuilt from its
    settings) is the one other kind."""
    from fan_convert.nn.frame_following import FrameFollowing
    from fan_convert.surgery import rules

    layers = set(rules.fan_layer_types(FIXED_T))
    assert layers - {AdaptiveTimePool3d} and all(issubclass(layer, FrameFollowing) for layer in layers - {AdaptiveTimePool3d})
    original = _randomized(TVPositionalEncoding(embed_size=6, spatial_size=(2, 3), temporal_size=4, rel_pos_embed=False))
    adapter = InterpolatedMViTPositionalEncoding.for_module(original, trained_frames=8)
    assert isinstance(adapter, TVPositionalEncoding) and adapter.temporal_pos is original.temporal_pos
    twin = copy.deepcopy(adapter)  # remade through the frame-following pickling path
    x = torch.randn(1, 2 * 6, 6)
    assert type(twin) is type(adapter) and torch.equal(twin(x.clone()), adapter(x.clone()))
