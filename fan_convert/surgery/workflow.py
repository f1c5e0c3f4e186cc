"""adapt(): plan a conversion and carry it out, in one call."""

from __future__ import annotations

import inspect
from typing import Any, Sequence

from torch import nn

from .planner import plan
from .rewriter import apply_plan

__all__ = ["adapt"]


def adapt(model: nn.Module, frames: Sequence[int] = (4, 8, 16), *, inplace: bool = False, **options: Any) -> nn.Module:
    """Turn a pretrained video model into a Frame Adaptive Network.

    Every normalisation layer becomes a :class:`~fan_convert.nn.NormBank` (one private copy per
    frame count) and every target layer a zero-initialised
    :class:`~fan_convert.nn.WeightAlteration`, so before fine-tuning the result computes
    exactly what ``model`` computes, at every key.

    Args:
        frames: the frame counts to specialise for (the keys).
        options: how to convert — the keywords of :func:`~fan_convert.surgery.plan`
            (``targets``, ``exclude``, ``norms``, ``kernel_size``, ``trained_at``,
            ``frame_axis``, ``example_input``), documented there.
        inplace: modify ``model`` itself instead of a deep copy (the default, like torch.ao).

    Returns:
        The adapted model; ``model.fan_plan`` holds the :class:`ConversionPlan`.

    Example::

        fan = fan_convert.adapt(model, frames=(4, 8, 16))
        print(fan.fan_plan)
        logits = fan(clip)                   # T read from clip.shape[2]
        with fan_convert.frames(8):          # or chosen explicitly
            logits = fan(frames_in_batch)
    """
    return apply_plan(model, plan(model, frames, **options), inplace=inplace)


def _signature_of_adapt() -> inspect.Signature:
    """plan()'s parameters plus ``inplace``: what help() and editors show for adapt()."""
    planned = inspect.signature(plan)
    inplace = inspect.Parameter("inplace", inspect.Parameter.KEYWORD_ONLY, default=False, annotation="bool")
    return planned.replace(parameters=[*planned.parameters.values(), inplace], return_annotation="nn.Module")


adapt.__signature__ = _signature_of_adapt()
