"""Fixed-T site counts for every architecture of the zoo catalog (fan_convert/zoo/catalog.py), in
the default suite: ``fan_convert.plan(model, frames, trained_at=..., ...)`` lists the layers that
bake the training clip length into the model (kind ``"fixed_t"``), counted by status, once found
by type only and once confirmed on an example clip (which also runs the rewritten model at every
key of the catalog entry).

The expected counts are written down from the architectures, not computed by fan-convert:

- 2D backbones wrapped as TSM/TSN (timm, torchvision): none (the wrappers read T from the clip;
  ViT/DeiT position tables are spatial).
- torchvision R3D/MC3/R(2+1)D and Swin3D: none (``AdaptiveAvgPool3d`` heads; Swin's relative
  position tables belong to a window, which is cut to the input).
- torchvision S3D: its head ``AvgPool3d((2, 7, 7), stride=1)`` covers the 2 time steps left of a
  16-frame clip.
- torchvision MViT v1/v2: ``pos_encoding`` (v1: one temporal position per temporal patch; v2: no
  absolute table, but the model reads the token grid's T from it; v2's relative-position tables
  are interpolated by torchvision itself).
- pytorchvideo X3D: the head's ``ProjectedPool`` ``AvgPool3d`` (T, H/32, W/32); EfficientX3D's head
  pools with ``AdaptiveAvgPool3dOutSize1``: none.
- pytorchvideo Slow/C2D/I3D/R(2+1)D/CSN: the head ``AvgPool3d`` (C2D and I3D also have a stage-1
  ``MaxPool3d((2, 1, 1))`` that slides over time: not a site). SlowFast: one head pool per
  pathway. MViT: ``SpatioTemporalClsPositionalEncoding``.
- transformers: the model itself, whose config records the training clip length (``skipped``: the
  sites below read the running clip's), plus VideoMAE: sinusoid position table and tubelet (2
  frames) embedding; TimeSformer: time embeddings and each of its ``num_hidden_layers`` (2) layers,
  which reshape by ``config.num_frames``; ViViT: space-time positions and tubelet embedding;
  V-JEPA 2: tubelet embedding (rotary positions); VideoPrism: temporal position embeddings
  (tubelet of 1 frame).

Canonical sizes take minutes to run on 2 CPU cores, so the default suite builds the architectures
small: the hub's builder arguments with a 32 px crop and narrow stems for pytorchvideo (the head
pools' temporal kernels unchanged), torchvision's video models at 32 px (MViT: its builder's first 4
blocks; S3D: its head pool re-made for 64 px), the catalog's tiny transformers configs; about 25 s
on one core. The catalog's own builds are checked, found by type, with ``-m slow``.
"""

from __future__ import annotations

import warnings
from collections import Counter
from unittest import mock

import pytest
import torch
import torchvision.models.video as tv_video
import torchvision.models.video.mvit as tv_mvit
from pytorchvideo.models import hub
from pytorchvideo.models.csn import create_csn
from pytorchvideo.models.resnet import create_resnet
from pytorchvideo.models.slowfast import create_slowfast
from pytorchvideo.models.x3d import create_x3d
from torch import nn

import fan_convert
from fan_convert.testing import random_clip
from fan_convert.zoo.catalog import ZOO

NUM_CLASSES = 10


def _with(builder, **override):
    """A pytorchvideo ``model_builder`` that is ``builder`` with ``override`` replacing the hub's arguments."""
    return lambda **kwargs: builder(**{**kwargs, **override})


def _s3d():  # torchvision has no size argument for S3D: its head pool is re-made for 64 px (same temporal kernel, stride 1)
    model = tv_video.s3d(weights=None, num_classes=NUM_CLASSES)
    assert model.avgpool.kernel_size == (2, 7, 7) and model.avgpool.stride == 1
    model.avgpool = nn.AvgPool3d(kernel_size=(2, 2, 2), stride=1)
    return model


def _mvit(builder):
    """torchvision's MViT builders fix spatial_size and take no depth: the builder's first 4 blocks
    (its first two scales; the positional encoding is the model's, before any block) at 32 px."""
    def build():
        make = tv_mvit._mvit

        def small(block_setting, **kwargs):
            return make(block_setting=block_setting[:4], **{**kwargs, "spatial_size": (32, 32)})

        with mock.patch.object(tv_mvit, "_mvit", small):
            model = builder(weights=None, num_classes=NUM_CLASSES)
        assert len(model.blocks) == 4
        return model
    return build


def _x3d(clip_length, **kwargs):  # hub.x3d_* fixes the crop: create_x3d with the hub's arguments at 32 px
    return lambda: create_x3d(input_clip_length=clip_length, input_crop_size=32, model_num_class=NUM_CLASSES, **kwargs)


def _catalog(spec, **override):
    entry = next(e for e in ZOO if e.name == spec)
    return lambda: fan_convert.zoo.build(spec, **{**entry.kwargs, **override})


SMALL_RESNET = dict(stem_dim_out=8, model_num_class=NUM_CLASSES)
SMALL_SLOWFAST = dict(stem_dim_outs=(16, 2), model_num_class=NUM_CLASSES)
NONE = {}
ONE = {"converted": 1}

# catalog name: (small builder, clip size, expected fixed-T sites by status)
MODELS = {
    **{f"timm:{n}": (_catalog(f"timm:{n}"), 32, NONE) for n in (
        "resnet18", "resnet50", "mobilenetv2_100", "mobilenetv3_small_100", "efficientnet_b0", "regnetx_002",
        "convnext_tiny")},
    "timm:vit_tiny_patch16_224": (_catalog("timm:vit_tiny_patch16_224", img_size=32), 32, NONE),
    "timm:deit_tiny_patch16_224": (_catalog("timm:deit_tiny_patch16_224", img_size=32), 32, NONE),
    "torchvision:r3d_18": (lambda: tv_video.r3d_18(weights=None, num_classes=NUM_CLASSES), 32, NONE),
    "torchvision:mc3_18": (lambda: tv_video.mc3_18(weights=None, num_classes=NUM_CLASSES), 32, NONE),
    "torchvision:r2plus1d_18": (lambda: tv_video.r2plus1d_18(weights=None, num_classes=NUM_CLASSES), 32, NONE),
    "torchvision:swin3d_t": (lambda: tv_video.swin3d_t(weights=None, num_classes=NUM_CLASSES), 32, NONE),
    "torchvision:s3d": (_s3d, 64, ONE),
    "torchvision:mvit_v1_b": (_mvit(tv_video.mvit_v1_b), 32, ONE),
    "torchvision:mvit_v2_s": (_mvit(tv_video.mvit_v2_s), 32, ONE),
    "pytorchvideo:x3d_xs": (_x3d(4), 32, ONE),
    "pytorchvideo:x3d_s": (_x3d(13), 32, ONE),
    "pytorchvideo:x3d_m": (_x3d(16), 32, ONE),
    "pytorchvideo:x3d_l": (_x3d(16, depth_factor=5.0), 32, ONE),
    "pytorchvideo:efficient_x3d_xs": (lambda: hub.efficient_x3d_xs(pretrained=False, num_classes=NUM_CLASSES), 32, NONE),
    "pytorchvideo:efficient_x3d_s": (lambda: hub.efficient_x3d_s(pretrained=False, num_classes=NUM_CLASSES), 32, NONE),
    "pytorchvideo:slow_r50": (lambda: hub.slow_r50(
        pretrained=False, model_builder=_with(create_resnet, head_pool_kernel_size=(8, 1, 1), **SMALL_RESNET)), 32, ONE),
    "pytorchvideo:c2d_r50": (lambda: hub.c2d_r50(
        pretrained=False, model_builder=_with(create_resnet, head_pool_kernel_size=(4, 1, 1), **SMALL_RESNET)), 32, ONE),
    "pytorchvideo:i3d_r50": (lambda: hub.i3d_r50(
        pretrained=False, model_builder=_with(create_resnet, head_pool_kernel_size=(4, 1, 1), **SMALL_RESNET)), 32, ONE),
    "pytorchvideo:r2plus1d_r50": (lambda: hub.r2plus1d_r50(
        pretrained=False, head_pool_kernel_size=(4, 1, 1), **SMALL_RESNET), 32, ONE),
    "pytorchvideo:csn_r101": (lambda: create_csn(  # hub.csn_r101's arguments, the head pool for 32 px
        model_depth=101, stem_pool=nn.MaxPool3d, head_pool_kernel_size=(4, 1, 1), **SMALL_RESNET), 32, ONE),
    "pytorchvideo:slowfast_r50": (lambda: hub.slowfast_r50(pretrained=False, model_builder=_with(
        create_slowfast, head_pool_kernel_sizes=((8, 1, 1), (32, 1, 1)), **SMALL_SLOWFAST)), 32, {"converted": 2}),
    "pytorchvideo:slowfast_r101": (lambda: hub.slowfast_r101(pretrained=False, model_builder=_with(
        create_slowfast, head_pool_kernel_sizes=((8, 1, 1), (32, 1, 1)), **SMALL_SLOWFAST)), 32, {"converted": 2}),
    "pytorchvideo:slowfast_16x8_r101_50_50": (lambda: hub.slowfast_16x8_r101_50_50(pretrained=False, model_builder=_with(
        create_slowfast, head_pool_kernel_sizes=((16, 1, 1), (64, 1, 1)), **SMALL_SLOWFAST)), 32, {"converted": 2}),
    "pytorchvideo:mvit_base_16x4": (lambda: hub.mvit_base_16x4(
        pretrained=False, spatial_size=32, patch_embed_dim=16, head_num_classes=NUM_CLASSES), 32, ONE),
    "pytorchvideo:mvit_base_32x3": (lambda: hub.mvit_base_32x3(
        pretrained=False, spatial_size=32, patch_embed_dim=16, head_num_classes=NUM_CLASSES), 32, ONE),
    "torchvision:resnet50": (_catalog("torchvision:resnet50"), 32, NONE),
    "torchvision:mobilenet_v2": (_catalog("torchvision:mobilenet_v2"), 32, NONE),
    # transformers: the catalog's configs are tiny already
    "hf:videomae": (_catalog("hf:videomae"), 32, {"skipped": 1, "converted": 2}),
    "hf:timesformer": (_catalog("hf:timesformer"), 32, {"skipped": 1, "converted": 3}),
    "hf:vivit": (_catalog("hf:vivit"), 32, {"skipped": 1, "converted": 2}),
    "hf:vjepa2": (_catalog("hf:vjepa2"), 32, {"skipped": 1, "converted": 1}),
    "hf:videoprism_vision_model": (_catalog("hf:videoprism_vision_model"), 36, {"skipped": 1, "converted": 1}),
}


def test_every_catalog_entry_has_expected_counts():
    assert {e.name for e in ZOO} == set(MODELS)


def fixed_t_counts(conversion) -> dict[str, int]:
    return dict(Counter(s.status for s in conversion.sites if s.kind == "fixed_t"))


@pytest.mark.parametrize("entry", [e for e in ZOO if e.name in MODELS], ids=lambda e: e.name)
def test_fixed_t_sites_by_status(entry):
    builder, size, expected = MODELS[entry.name]
    torch.manual_seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = builder().eval()
    options = dict(trained_at=entry.trained_at, frame_axis=entry.frame_axis)
    assert fixed_t_counts(fan_convert.plan(model, entry.frames, **options)) == expected, "found by type"
    clip = random_clip(entry.trained_at, size, alpha=entry.alpha, frame_axis=entry.frame_axis)
    confirmed = fan_convert.plan(model, entry.frames, example_input=clip, **options)
    assert fixed_t_counts(confirmed) == expected, [(s.path, s.status, s.reason) for s in confirmed.sites if s.kind == "fixed_t"]


@pytest.mark.slow
@pytest.mark.parametrize("entry", ZOO, ids=lambda e: e.name)
def test_fixed_t_sites_by_status_at_the_catalog_size(entry):
    model = entry.build().eval()
    conversion = fan_convert.plan(model, entry.frames, trained_at=entry.trained_at, frame_axis=entry.frame_axis)
    assert fixed_t_counts(conversion) == MODELS[entry.name][2]
