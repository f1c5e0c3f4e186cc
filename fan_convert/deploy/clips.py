"""Clips in a model's input layout, for exporting, verifying and timing it."""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from ..clips import random_clip
from ..context import check_frame_count
from ..zoo.layout import input_layout

__all__ = ["make_clip"]


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
    axis = getattr(getattr(model, "fan_plan", None), "frame_axis", 2)
    alpha = alpha if alpha is not None else input_layout(model).get("alpha")
    return random_clip(t, input_size, batch=batch, alpha=alpha, frame_axis=axis, seed=seed, device=device)
