"""The zoo that fan-convert is tested on: architectures video people use, each with the clip it
was built for and the frame counts it is converted to. Random weights; nothing downloads."""

from __future__ import annotations

import importlib.util
import warnings
from dataclasses import dataclass, field

import torch
from torch import nn

from ..clips import random_clip
from .specs import build


@dataclass(frozen=True)
class ZooEntry:
    """One architecture: how to build it, its training clip, and its natural frame counts."""

    spec: str
    trained_at: int  # frames of the training clip (SlowFast: the fast pathway)
    frames: tuple[int, ...]
    size: int  # spatial size of a clip
    kwargs: dict = field(default_factory=dict)
    alpha: int | None = None  # SlowFast: the slow pathway takes every alpha-th frame
    heavy: bool = False  # slow on 2 CPU cores: excluded from the default test run
    targets: tuple[str | None, ...] = ("default", "paper", None)  # alteration presets it supports
    frame_axis: int = 2  # where T sits in a clip: 2 for (B, C, T, H, W), 1 for transformers' (B, T, C, H, W)
    untrained: int | None = None  # a T between the keys it is not trained at (default: between the first two)

    @property
    def name(self) -> str:
        return self.spec

    def build(self) -> nn.Module:
        """The architecture with random weights (the libraries' deprecation chatter silenced)."""
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            model = build(self.spec, **self.kwargs)
        if self.spec.startswith("hf:"):  # transformers zero-initialises position tables and tokens: make them count
            with torch.no_grad():
                for p in model.parameters():
                    p.add_(0.1 * torch.randn_like(p))
        return model

    @property
    def untrained_t(self) -> int:
        return self.untrained or (self.frames[0] + self.frames[1]) // 2 + 1

    def clip(self, t: int, seed: int = 0) -> torch.Tensor | list[torch.Tensor]:
        """A random clip of ``t`` frames in the model's input layout (a fresh list for SlowFast,
        whose forward rewrites its input list)."""
        return random_clip(t, self.size, alpha=self.alpha, frame_axis=self.frame_axis, seed=seed)


_TIMM = ("resnet18", "resnet50", "mobilenetv2_100", "mobilenetv3_small_100", "efficientnet_b0", "regnetx_002", "convnext_tiny")

ZOO: tuple[ZooEntry, ...] = (
    *(ZooEntry(f"timm:{n}", 8, (4, 8, 16), 64, {"temporal": "tsm", "num_classes": 10}) for n in _TIMM),
    ZooEntry("timm:vit_tiny_patch16_224", 8, (4, 8, 16), 64, {"temporal": "tsm", "num_classes": 10, "img_size": 64}),
    ZooEntry("timm:deit_tiny_patch16_224", 8, (4, 8, 16), 64, {"temporal": "tsn", "num_classes": 10, "img_size": 64}),
    ZooEntry("torchvision:r3d_18", 16, (4, 8, 16), 64),
    ZooEntry("torchvision:mc3_18", 16, (4, 8, 16), 64),
    ZooEntry("torchvision:r2plus1d_18", 16, (4, 8, 16), 64),
    ZooEntry("torchvision:swin3d_t", 16, (4, 8, 16), 64),
    ZooEntry("torchvision:s3d", 16, (8, 16, 32), 224, heavy=True, targets=("default", None)),  # no residual blocks
    ZooEntry("torchvision:mvit_v1_b", 16, (4, 8, 16), 224, heavy=True),
    ZooEntry("torchvision:mvit_v2_s", 16, (4, 8, 16), 224, heavy=True),
    ZooEntry("pytorchvideo:x3d_xs", 4, (4, 8, 16), 160),
    ZooEntry("pytorchvideo:x3d_s", 13, (4, 8, 13), 160),
    ZooEntry("pytorchvideo:x3d_m", 16, (4, 8, 16), 224),
    ZooEntry("pytorchvideo:x3d_l", 16, (4, 8, 16), 312, heavy=True),
    ZooEntry("pytorchvideo:efficient_x3d_xs", 4, (4, 8, 16), 160),
    ZooEntry("pytorchvideo:efficient_x3d_s", 13, (4, 8, 13), 160),
    ZooEntry("pytorchvideo:slow_r50", 8, (4, 8, 16), 224),
    ZooEntry("pytorchvideo:c2d_r50", 8, (4, 8, 16), 224),
    ZooEntry("pytorchvideo:i3d_r50", 8, (4, 8, 16), 224),
    ZooEntry("pytorchvideo:r2plus1d_r50", 16, (4, 8, 16), 224, heavy=True),
    ZooEntry("pytorchvideo:csn_r101", 32, (8, 16, 32), 224, heavy=True),
    ZooEntry("pytorchvideo:slowfast_r50", 32, (16, 32, 64), 224, alpha=4, heavy=True),
    ZooEntry("pytorchvideo:slowfast_r101", 32, (16, 32, 64), 224, alpha=4, heavy=True),
    ZooEntry("pytorchvideo:slowfast_16x8_r101_50_50", 64, (16, 32, 64), 224, alpha=4, heavy=True),
    ZooEntry("pytorchvideo:mvit_base_16x4", 16, (4, 8, 16), 224, heavy=True),
    ZooEntry("pytorchvideo:mvit_base_32x3", 32, (8, 16, 32), 224, heavy=True),
    *(ZooEntry(f"torchvision:{n}", 8, (4, 8, 16), 64, {"temporal": "tsm", "num_classes": 10}, heavy=True)
      for n in ("resnet50", "mobilenet_v2")),  # torchvision 2D classifiers as TSM (as timm's; slow under the matrix)
)


HF_BLOCK = dict(hidden_size=32, num_attention_heads=2, num_labels=10)
# transformers video classifiers at tiny sizes, trained at 8 frames; 6 frames is whole tubelets
HF_SMALL = {
    "videomae": dict(num_frames=8, image_size=32, patch_size=16, num_hidden_layers=2, intermediate_size=64),
    "timesformer": dict(num_frames=8, image_size=32, patch_size=16, num_hidden_layers=2, intermediate_size=64),
    "vivit": dict(num_frames=8, image_size=32, tubelet_size=[2, 16, 16], num_hidden_layers=2, intermediate_size=64),
    "vjepa2": dict(frames_per_clip=8, crop_size=32, patch_size=16, num_hidden_layers=2, num_pooler_layers=1,
                   pred_hidden_size=32, pred_num_hidden_layers=1, pred_num_attention_heads=2),
    "videoprism_vision_model": dict(num_frames=8, image_size=36, tubelet_size=[1, 18, 18], num_spatial_layers=1,
                                    num_temporal_layers=1, num_auxiliary_layers=0, intermediate_size=64),
}
if importlib.util.find_spec("transformers") is not None:  # the optional extra 'hf'
    ZOO += tuple(
        ZooEntry(f"hf:{n}", 8, (4, 8, 16), kw.get("image_size", kw.get("crop_size")), {**kw, **HF_BLOCK},
                 targets=("default", None), frame_axis=1, untrained=6)  # no residual blocks for "paper"
        for n, kw in HF_SMALL.items()
    )
