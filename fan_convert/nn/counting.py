"""Counting a model's parameters, the one way every report in fan-convert does it."""

from __future__ import annotations

from torch import nn

__all__ = ["count_parameters"]


def count_parameters(model: nn.Module) -> int:
    """The number of parameter values in ``model`` (shared parameters counted once)."""
    return sum(p.numel() for p in model.parameters())
