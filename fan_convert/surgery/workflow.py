"""adapt(): plan a conversion and carry it out, in one call."""

from __future__ import annotations

from typing import Any, Sequence

from torch import nn

from .patterns import Pattern
from .planner import plan
from .rewriter import apply_plan

__all__ = ["adapt"]


def adapt(
    model: nn.Module,
    frames: Sequence[int] = (4, 8, 16),
    *,
    targets: str | Sequence[Pattern] | None = "default",
    exclude: Sequence[Pattern] | None = None,
    norms: bool = True,
    kernel_size: int = 1,
    trained_at: int | None = None,
    frame_axis: int = 2,
    example_input: Any = None,
    inplace: bool = False,
) -> nn.Module:
    """Turn a pretrained video model into a Frame Adaptive Network.

    Every normalisation layer becomes a :class:`~fan_convert.nn.NormBank` (one private copy per
    frame count) and every target layer a zero-initialised
    :class:`~fan_convert.nn.WeightAlteration`, so before fine-tuning the result computes
    exactly what ``model`` computes, at every key.

    Args:
        frames: the frame counts to specialise for (the keys).
        targets: where weight alterations go: ``"default"`` (every non-depthwise convolution
            and each transformer block's attention/MLP input), ``"paper"`` (the first weight
            layer of every residual block, as in the FAN paper; needs torch.fx), a list of
            module-name patterns (regex full-match or name suffix) and/or module types, or
            None for no alterations.
        exclude: patterns/types of modules to leave untouched (norms and alterations).
        norms: False keeps the shared norms (the paper's "no Specialized Normalization" ablation).
        kernel_size: 1 (foldable, weight-side) or an odd size > 1 (activation-side depthwise
            convolution on conv inputs; more context, not foldable).
        trained_at: the frame count the checkpoint was trained at (default: the largest key);
            its key answers attribute reads such as ``norm.weight`` outside a forward.
        frame_axis: where T sits in a 5-D input clip, for automatic frame inference.
        example_input: a clip (or list of clips) at ``trained_at`` frames. Optional: with it,
            fixed-T sites (temporal pooling sized to the training clip, temporal position
            embeddings) are confirmed from the shapes and the rewritten model is run at every
            key; without it they are recognised by type.
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
    conversion = plan(
        model, frames, targets=targets, exclude=exclude, norms=norms, kernel_size=kernel_size,
        trained_at=trained_at, frame_axis=frame_axis, example_input=example_input,
    )
    return apply_plan(model, conversion, inplace=inplace)
