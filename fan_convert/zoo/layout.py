"""The input layout a video model takes, read from its structure: one clip, or a list of
pathway clips (SlowFast: ``[slow, fast]``, the slow pathway taking every ``alpha``-th frame).
FAN files record it in their manifest (``"input"``) so that tools can build clips for them.

    input_layout(build("pytorchvideo:slowfast_r50"))   # {"pathways": ["slow", "fast"], "alpha": 4}
    input_layout(build("torchvision:r3d_18"))          # {}
"""

from __future__ import annotations

from torch import nn


def input_layout(model: nn.Module) -> dict:
    """What :func:`fan_convert.deploy.make_clip` needs to know beyond ``(B, C, T, H, W)``: the
    layout recorded on the model (``model.fan_input``, set by :func:`fan_convert.load`), else
    the one found in its modules."""
    recorded = getattr(model, "fan_input", None)
    if isinstance(recorded, dict):
        return dict(recorded)
    for module in model.modules():
        fuse = getattr(module, "conv_fast_to_slow", None)  # pytorchvideo's FuseFastToSlow
        stride = getattr(fuse, "stride", None) if isinstance(fuse, nn.Module) else None  # a FAN wrapper delegates it
        if isinstance(stride, tuple) and len(stride) == 3:
            # the fusion conv strides the fast pathway's time axis down to the slow one's
            return {"pathways": ["slow", "fast"], "alpha": int(stride[0])}
    return {}
