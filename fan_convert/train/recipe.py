"""The optimisation recipe's pieces: parameter groups, learning-rate schedule, memory format."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import torch
from torch import nn

from ..nn import NormBank, ResidualAlteration, WeightAlteration

if TYPE_CHECKING:
    from .trainer import TrainConfig


def param_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """Weight decay on weights only: never on norms, biases or alteration scales.

    Example::

        optimizer = torch.optim.SGD(param_groups(fan, weight_decay=1e-4), lr=0.01, momentum=0.9)
    """
    no_decay_ids = set()
    for module in model.modules():
        if isinstance(module, (NormBank,)) or "Norm" in type(module).__name__:
            no_decay_ids |= {id(p) for p in module.parameters()}
        if isinstance(module, WeightAlteration):
            no_decay_ids |= {id(p) for p in module.scales.parameters()}
        if isinstance(module, ResidualAlteration):
            no_decay_ids |= {id(p) for p in module.adapters.parameters()}
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        (no_decay if id(p) in no_decay_ids or p.dim() <= 1 or name.endswith(".bias") else decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def lr_factor(step: int, steps_per_epoch: int, config: TrainConfig) -> float:
    """The multiplier of the base learning rate at optimizer step ``step``: a linear warm-up over
    ``config.warmup_epochs``, then a cosine decay to 0 at the end of the run, or for the
    ``"step"`` schedule a division by 10 at each of ``config.milestones`` (in epochs).

    Example::

        lr_factor(500, 100, TrainConfig(frames=(4, 8, 16), epochs=10))   # 0.5: halfway down the cosine
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: lr_factor(step, len(loader), config))
    """
    total = config.epochs * steps_per_epoch
    warmup = int(config.warmup_epochs * steps_per_epoch)
    if step < warmup:
        return (step + 1) / warmup
    if config.schedule == "step":
        return 0.1 ** sum(step >= m * steps_per_epoch for m in config.milestones)
    progress = (step - warmup) / max(1, total - warmup)
    return 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))


def to_channels_last(model: nn.Module) -> nn.Module:
    """Channels-last memory format for every 4-D (2D conv) and 5-D (3D conv) weight, in place.

    ``model.to(memory_format=torch.channels_last)`` refuses 5-D tensors, so 3D and mixed models
    need each tensor converted by its rank.

    Example::

        to_channels_last(fan)   # then feed clips as usual; convolutions pick the faster kernels on GPU
    """
    formats = {4: torch.channels_last, 5: torch.channels_last_3d}
    with torch.no_grad():
        for tensor in [*model.parameters(), *model.buffers()]:
            if tensor.dim() in formats:
                tensor.data = tensor.data.contiguous(memory_format=formats[tensor.dim()])
    return model


def start_momentum(optimizer: torch.optim.Optimizer) -> None:
    """Give every SGD parameter a zero momentum buffer up front (a no-op for the update: with no
    dampening the first step sets the buffer to the gradient either way). The fused SGD fails
    on a step that mixes parameters with and without a buffer, which happens whenever a key gets
    its first gradient after others (one frame count per step).

    Example::

        optimizer = torch.optim.SGD(fan.parameters(), lr=0.01, momentum=0.9, fused=True)
        start_momentum(optimizer)
    """
    for group in optimizer.param_groups:
        if group.get("momentum", 0) and not group.get("dampening", 0):
            for p in group["params"]:
                optimizer.state[p].setdefault("momentum_buffer", torch.zeros_like(p, memory_format=torch.preserve_format))
