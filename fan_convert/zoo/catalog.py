"""The zoo that fan-convert is tested on: architectures video people use, each with the clip it
was built for and the frame counts it is converted to. Random weights; nothing downloads."""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field

import torch
from torch import nn

from ..testing import random_clip
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

    @property
    def name(self) -> str:
        return self.spec

    def build(self) -> nn.Module:
        """The architecture with random weights (the libraries' deprecation chatter silenced)."""
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return build(self.spec, **self.kwargs)

    def clip(self, t: int, seed: int = 0) -> torch.Tensor | list[torch.Tensor]:
        """A random clip of ``t`` frames in the model's input layout (a fresh list for SlowFast,
        whose forward rewrites its input list)."""
        return random_clip(t, self.size, alpha=self.alpha, seed=seed)


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
