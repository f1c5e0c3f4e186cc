"""Clips in a model's input layout, for exporting, verifying and timing it."""

from __future__ import annotations

from typing import Any, Sequence

import torch
from torch import nn
from torch.utils._pytree import tree_map

from ..context import check_frame_count
from ..zoo.layout import input_layout

__all__ = ["make_clip"]


def _size(input_size: int | Sequence[int]) -> tuple[int, int]:
    size = (input_size, input_size) if isinstance(input_size, int) else tuple(input_size)
    if len(size) != 2 or not all(isinstance(s, int) and not isinstance(s, bool) and s > 0 for s in size):
        raise ValueError(f"input_size must be a positive int or (H, W), got {input_size!r}")
    return size


def make_clip(
    model: nn.Module, t: int, input_size: int | Sequence[int] = 224, *, batch: int = 1, alpha: int | None = None,
    device: str | torch.device = "cpu", seed: int = 0,
) -> torch.Tensor | list[torch.Tensor]:
    """A random clip of ``t`` frames in ``model``'s input layout: ``(batch, 3, t, H, W)``, or
    ``(batch, t, 3, H, W)`` for a model adapted with ``frame_axis=1``, or ``[slow, fast]`` for a
    SlowFast model (``alpha``: the slow pathway takes every alpha-th frame; default: the
    layout recorded in the FAN file or found in the model, see :func:`fan_convert.zoo.layout.input_layout`).

    Example::

        x = make_clip(fan, 8, 112, batch=2)   # (2, 3, 8, 112, 112)
        logits = fan(x)
    """
    t = check_frame_count(t, "frames")
    check_frame_count(batch, "batch")
    h, w = _size(input_size)
    plan = getattr(model, "fan_plan", None)
    axis = getattr(plan, "frame_axis", 2)
    g = torch.Generator().manual_seed(seed)
    shape = [batch, 3, h, w]
    shape.insert(axis, t)
    clip = torch.randn(shape, generator=g).to(device)
    alpha = alpha if alpha is not None else input_layout(model).get("alpha")
    if alpha:
        slow = clip[(slice(None),) * axis + (slice(None, None, alpha),)].contiguous()
        return [slow, clip]
    return clip


def _fresh(x: Any) -> Any:
    """A new container around the same tensors (SlowFast's forward rewrites its input list)."""
    return tree_map(lambda v: v, x)


