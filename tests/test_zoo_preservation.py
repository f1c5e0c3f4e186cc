"""Function preservation across the zoos: in eval mode the adapted model gives the original
logits at every key (max |difference| <= 1e-5). Random weights; nothing downloads."""

import warnings

import pytest
import timm
import torch
import torchvision.models.video as tv_video
from conftest import randomize_norms
from pytorchvideo.models import hub as pv_hub

import fan_convert

KEYS = (4, 8, 16)


def clip(t, size):
    return torch.randn(1, 3, t, size, size)


# name -> (builder, input maker); timm backbones take frames folded into the batch (B*T, C, H, W).
ZOO = {
    "timm:resnet18": (lambda: timm.create_model("resnet18", num_classes=10), lambda: torch.randn(8, 3, 64, 64)),
    "timm:resnet50": (lambda: timm.create_model("resnet50", num_classes=10), lambda: torch.randn(8, 3, 64, 64)),
    "timm:mobilenetv3_small_100": (lambda: timm.create_model("mobilenetv3_small_100", num_classes=10), lambda: torch.randn(8, 3, 64, 64)),
    "timm:efficientnet_b0": (lambda: timm.create_model("efficientnet_b0", num_classes=10), lambda: torch.randn(8, 3, 64, 64)),
    "timm:convnext_tiny": (lambda: timm.create_model("convnext_tiny", num_classes=10), lambda: torch.randn(8, 3, 64, 64)),
    "timm:vit_tiny": (lambda: timm.create_model("vit_tiny_patch16_224", img_size=64, num_classes=10), lambda: torch.randn(8, 3, 64, 64)),
    "pytorchvideo:x3d_xs": (lambda: pv_hub.x3d_xs(pretrained=False), lambda: clip(4, 160)),
    "pytorchvideo:slow_r50": (lambda: pv_hub.slow_r50(pretrained=False), lambda: clip(8, 224)),
    "pytorchvideo:r2plus1d_r50": (lambda: pv_hub.r2plus1d_r50(pretrained=False), lambda: clip(16, 224)),
    "pytorchvideo:mvit_base_16x4": (lambda: pv_hub.mvit_base_16x4(pretrained=False), lambda: clip(16, 224)),
    "pytorchvideo:slowfast_r50": (lambda: pv_hub.slowfast_r50(pretrained=False), lambda: [clip(8, 224), clip(32, 224)]),
    "torchvision:r3d_18": (lambda: tv_video.r3d_18(num_classes=10), lambda: clip(8, 112)),
    "torchvision:r2plus1d_18": (lambda: tv_video.r2plus1d_18(num_classes=10), lambda: clip(8, 112)),
    "torchvision:mvit_v1_b": (lambda: tv_video.mvit_v1_b(num_classes=10), lambda: clip(16, 224)),
}


@pytest.mark.parametrize("targets", ["default", "paper"])
@pytest.mark.parametrize("name", ZOO)
def test_function_is_preserved_at_every_key(name, targets):
    build, make_input = ZOO[name]
    torch.manual_seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = randomize_norms(build()).eval()
    x = make_input()
    fresh = (lambda: list(x)) if isinstance(x, list) else (lambda: x)  # SlowFast rewrites its input list
    with torch.no_grad():
        expected = model(fresh())
        fan = fan_convert.adapt(model, frames=KEYS, targets=targets).eval()
        conversion = fan.fan_plan
        assert conversion.select("norm") and conversion.select("alteration")
        for k in KEYS:
            with fan_convert.frames(k):
                got = fan(fresh())
            assert (got - expected).abs().max().item() <= 1e-5, f"key {k}"
