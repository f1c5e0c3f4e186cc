"""Video models from 2D image backbones: TSN (frames classified independently, logits
averaged) and TSM (TSN plus a temporal shift before every residual block).

Both take a clip ``(B, C, T, H, W)``, fold its frames into the batch ``(B*T, C, H, W)`` (video
by video), run the backbone inside ``with fan_convert.context.clip(T):`` so every temporal
operation knows T, and average the per-frame outputs over time (the TSN consensus). T is
read from each input, never stored: one model serves any clip length, and
:func:`fan_convert.adapt` turns it into a Frame Adaptive Network like any other video model::

    model = TSM(timm.create_model("resnet50", num_classes=174))
    fan = fan_convert.adapt(model, frames=(4, 8, 16))
    logits = fan(clip)                     # (B, 3, 8, 224, 224): T = 8 selects key 8
"""

from __future__ import annotations

from contextlib import nullcontext

import torch
from torch import fx, nn

from .. import context
from ..nn.temporal import ShiftedInput, check_shift_div

__all__ = ["TSN", "TSM"]


class TSN(nn.Module):
    """Temporal Segment Network consensus around a 2D backbone: ``mean_t backbone(frame_t)``.

    Args:
        backbone: any image model mapping ``(N, C, H, W)`` to ``(N, ...)`` (logits).

    Input ``(B, C, T, H, W)``; output ``(B, ...)``, the backbone's output averaged over T.
    """

    def __init__(self, backbone: nn.Module):
        super().__init__()
        self.backbone = backbone

    def checkpoint_keys(self, tensors: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], list[str]]:
        """``tensors`` renamed to this wrapper's keys when they are the bare backbone's (an ImageNet
        checkpoint of the 2D model): ``layer1.0.conv1.weight`` becomes
        ``backbone.layer1.0.conv1.net.weight`` behind a temporal shift, ``backbone.fc.weight``
        otherwise. Keys that already fit, or fit nothing, are left as they are."""
        own = set(self.state_dict())
        shifted = getattr(self, "shifted", ())
        renamed, count = {}, 0
        for key, value in tensors.items():
            new = key
            if key not in own:
                bare = key.removeprefix("backbone.")
                for path in shifted:
                    if bare.startswith(path + ".") and not bare.startswith(path + ".net."):
                        bare = f"{path}.net.{bare[len(path) + 1:]}"
                        break
                if "backbone." + bare in own:
                    new = "backbone." + bare
            count += new != key
            renamed[new] = value
        return renamed, ([f"renamed {count} 2D backbone key(s) to the video wrapper's"] if count else [])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if isinstance(x, torch.Tensor) and x.dim() != 5:  # (a Proxy while torch.fx traces)
            raise ValueError(
                f"{type(self).__name__} expects a clip (B, C, T, H, W), got shape {tuple(x.shape)}; "
                "for a single video add the batch dimension with clip.unsqueeze(0)"
            )
        t = x.shape[2]
        frames = x.transpose(1, 2).flatten(0, 1)  # (B*T, C, H, W), video-major
        with _declare_clip(t):
            out = self.backbone(frames)
        return out.unflatten(0, (-1, t)).mean(1)


class TSM(TSN):
    """TSN with the Temporal Shift Module: before the first weight layer on the main branch of
    every residual block, ``1/shift_div`` of the channels move one frame backward in time and
    as many forward (:class:`~fan_convert.nn.temporal.ShiftedInput`, zero-padded at the ends of
    each clip, never across videos).

    The blocks are found in the backbone's torch.fx graph
    (:func:`fan_convert.surgery.analyze.residual_entry_layers`), so no block class is named:
    ResNet's ``conv1``, MobileNet/EfficientNet's ``conv_pw``, RegNet's ``conv1.conv``, ConvNeXt's
    depthwise ``conv_dw`` (a shift before a depthwise convolution still mixes time into every
    channel it shifts). Shifted convolutions shift channels (dim 1).

    Transformers (ViT, DeiT): the residual blocks' entry layers are the attention's ``qkv`` and
    the MLP's ``fc1`` Linears, so the shift acts on tokens ``(B*T, N, C)`` along the embedding
    (dim -1), before both the attention and the MLP of each block — the token-shift reading of
    TSM (the class token is shifted like the patch tokens). The residual stream itself is not
    shifted, as in TSM's residual shift.

    ``backbone`` is modified in place (its entry layers are wrapped); pass a copy to keep the
    original. The parameters and their values are unchanged; state-dict keys of shifted layers
    gain ``.net`` (``layer1.0.conv1.net.weight``), as in official TSM and mmaction2 checkpoints.

    Args:
        backbone: a 2D image model with residual blocks.
        shift_div: 1/shift_div of the channels move each way (TSM's default 8).

    Raises:
        ValueError: the backbone has no residual block torch.fx can find (use :class:`TSN`),
            or a block's entry layer is neither a convolution nor a Linear.
    """

    def __init__(self, backbone: nn.Module, shift_div: int = 8):
        super().__init__(backbone)
        self.shift_div = check_shift_div(shift_div)
        already = [p for p, m in backbone.named_modules() if isinstance(m, ShiftedInput)]
        if already:
            raise ValueError(f"backbone already has temporal shifts (e.g. at '{already[0]}'); wrap the unshifted backbone")
        from ..surgery.analyze import analyze, residual_entry_layers
        from ..surgery.building import replace_module

        entries = residual_entry_layers(analyze(backbone), backbone)
        if not entries:
            raise ValueError(
                f"TSM found no residual block in {type(backbone).__name__} (temporal shifts go before the first "
                "layer of each residual block); use TSN(backbone), or temporal='tsn' in fan_convert.zoo.build"
            )
        wrapped = []
        for path in entries:
            layer = backbone.get_submodule(path)
            if isinstance(layer, nn.modules.conv._ConvNd):
                channel_dim = 1
            elif isinstance(layer, nn.Linear):
                channel_dim = -1
            else:
                raise ValueError(
                    f"TSM cannot shift the input of '{path}' ({type(layer).__name__}): only convolutions "
                    "(channels on dim 1) and Linear layers (channels last) are supported; use TSN(backbone)"
                )
            wrapped.append((path, ShiftedInput(layer, shift_div, channel_dim)))
        for path, shifted in wrapped:
            replace_module(backbone, path, shifted)
        self.shifted = tuple(path for path, _ in wrapped)

    def extra_repr(self) -> str:
        return f"shift_div={self.shift_div}, shifted={len(self.shifted)} layers"


def _declare_clip(t):
    """``context.clip(t)``; nothing while torch.fx traces (T is then a Proxy, and a trace only
    records structure: the shift reads T when the model runs)."""
    if isinstance(t, fx.Proxy):
        return nullcontext()
    return context.clip(t if isinstance(t, torch.SymInt) else int(t))  # a SymInt stays symbolic (dynamic export)
