"""A tiny 2D residual network for 32x32 frames: the backbone of the built-in benchmark and demo.

About 78k parameters with the defaults (widths 16/32/64, one BasicBlock per stage), batch norm
after every convolution, residual blocks whose first convolution is where a temporal shift goes
(:class:`~fan_convert.zoo.wrappers.TSM` finds them in the torch.fx graph)::

    from fan_convert.zoo.tiny import tiny_resnet
    from fan_convert.zoo.wrappers import TSM

    model = TSM(tiny_resnet(num_classes=16))      # clips (B, 3, T, 32, 32) -> logits (B, 16)
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

__all__ = ["BasicBlock", "TinyResNet", "tiny_resnet"]


class BasicBlock(nn.Module):
    """ResNet's basic block: two 3x3 convolutions with batch norm, plus the (projected) input."""

    def __init__(self, in_chans: int, out_chans: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(in_chans, out_chans, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_chans)
        self.conv2 = nn.Conv2d(out_chans, out_chans, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_chans)
        self.act = nn.ReLU(inplace=True)
        self.downsample = None
        if stride != 1 or in_chans != out_chans:
            self.downsample = nn.Sequential(
                nn.Conv2d(in_chans, out_chans, 1, stride, bias=False), nn.BatchNorm2d(out_chans)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.act(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.act(out + identity)


class TinyResNet(nn.Module):
    """A 3x3 stem (stride 2) then one stage per width, each after the first at half resolution.

    Args:
        num_classes: output logits (0: return the pooled features).
        in_chans: input channels.
        widths: channels of each stage.
        blocks: BasicBlocks per stage (an int for all stages).
        stem_stride: stride of the stem convolution (2: 32x32 frames become 16x16 feature maps;
            training is about 9x faster on a CPU than with 1).
        drop_rate: dropout before the classifier.
        zero_init_residual: start every block as the identity (zero last-norm scale); off by
            default: on the built-in benchmark it learned about half as fast.
    """

    def __init__(
        self,
        num_classes: int = 10,
        in_chans: int = 3,
        widths: Sequence[int] = (16, 32, 64),
        blocks: int | Sequence[int] = 1,
        stem_stride: int = 2,
        drop_rate: float = 0.0,
        zero_init_residual: bool = False,
    ):
        super().__init__()
        widths = tuple(int(w) for w in widths)
        blocks = (blocks,) * len(widths) if isinstance(blocks, int) else tuple(blocks)
        if not widths or len(blocks) != len(widths) or min(widths) < 1 or min(blocks) < 1:
            raise ValueError(f"widths and blocks must be non-empty, positive and of equal length, got {widths} and {blocks}")
        self.num_classes = num_classes
        self.stem = nn.Sequential(
            nn.Conv2d(in_chans, widths[0], 3, stem_stride, 1, bias=False), nn.BatchNorm2d(widths[0]), nn.ReLU(inplace=True)
        )
        stages, chans = [], widths[0]
        for i, (width, count) in enumerate(zip(widths, blocks, strict=True)):
            layers = []
            for j in range(count):
                layers.append(BasicBlock(chans, width, stride=2 if i > 0 and j == 0 else 1))
                chans = width
            stages.append(nn.Sequential(*layers))
        self.stages = nn.Sequential(*stages)
        self.num_features = chans
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.drop = nn.Dropout(drop_rate)
        self.fc = nn.Linear(chans, num_classes) if num_classes > 0 else nn.Identity()
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        if zero_init_residual:  # zero-init the last norm of each block: every block starts as identity
            for m in self.modules():
                if isinstance(m, BasicBlock):
                    nn.init.zeros_(m.bn2.weight)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.pool(self.stages(self.stem(x))).flatten(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.drop(self.forward_features(x)))


def tiny_resnet(num_classes: int = 10, in_chans: int = 3, **kwargs) -> TinyResNet:
    """A :class:`TinyResNet` (about 78k parameters at the defaults, for 32x32 frames).

    ``kwargs``: ``widths``, ``blocks``, ``stem_stride``, ``drop_rate``, ``zero_init_residual``.
    Wrap it as a video model with ``TSM(tiny_resnet(num_classes=K))`` (or ``TSN``).
    """
    return TinyResNet(num_classes=num_classes, in_chans=in_chans, **kwargs)
