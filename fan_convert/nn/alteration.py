"""Weight Alteration: a zero-initialised, per-frame-count residual adapter on a layer's input.

The paper's adapter is a residual depthwise convolution on a block's input,
``y = layer(x + dw_k(x))``. With a 1x1 kernel, ``x + dw_k(x) = x * (1 + s_k)`` per channel,
so the same output comes from altering the *weights* instead:
``W*_k = W * (1 + s_k)`` along the layer's input channels. :class:`WeightAlteration`
computes ``W*_k`` at forward time (weight-sized work, not activation-sized) and folds into
the layer exactly; a training forward whose input has fewer elements than the weight scales
the input instead (:func:`scale_input`, the same product, cheaper there: deep layers at small
batches), and inference caches ``W*_k`` per key. :class:`ResidualAlteration` keeps a larger depthwise kernel on the
activations; it sees spatial context but cannot be folded away.
"""

from __future__ import annotations

import copy
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

from ..context import active_frames, nearest_key, select_key
from .delegate import delegate

_PLAIN_CONVS = (nn.Conv1d, nn.Conv2d, nn.Conv3d)


class NotFoldableError(ValueError):
    """An alteration that cannot be folded into its layer's weights."""


def weight_name(layer: nn.Module) -> str:
    """The parameter that multiplies the layer's input channels."""
    return "in_proj_weight" if isinstance(layer, nn.MultiheadAttention) else "weight"


def input_channels(layer: nn.Module) -> int:
    if isinstance(layer, nn.modules.conv._ConvNd):
        return layer.in_channels
    if isinstance(layer, nn.Linear):
        return layer.in_features
    if isinstance(layer, nn.MultiheadAttention):
        return layer.embed_dim
    raise TypeError(f"cannot alter {type(layer).__name__}: expected a convolution, Linear or MultiheadAttention")


def alterable(layer: nn.Module) -> str | None:
    """None if ``layer`` can carry a weight alteration, otherwise the reason it cannot."""
    if isinstance(layer, nn.modules.conv._ConvTransposeNd):
        return "transposed convolutions are not supported"
    if isinstance(layer, nn.MultiheadAttention) and not layer._qkv_same_embed_dim:
        return "MultiheadAttention with separate q/k/v projections is not supported"
    if not isinstance(layer, (nn.modules.conv._ConvNd, nn.Linear, nn.MultiheadAttention)):
        return f"{type(layer).__name__} is not a convolution, Linear or MultiheadAttention"
    return None


def alter_weight(weight: torch.Tensor, scale: torch.Tensor, groups: int = 1) -> torch.Tensor:
    """``weight * (1 + scale)`` along input channels, for Linear ``(O, I)`` or conv ``(O, I/g, *k)``
    weights; ``scale`` has one entry per input channel of the layer (``I``).

    Example::

        conv = nn.Conv2d(64, 128, 3, groups=2)
        w = alter_weight(conv.weight, torch.full((64,), 0.1), groups=conv.groups)   # conv.weight * 1.1
    """
    out_channels, in_per_group = weight.shape[:2]
    factor = (1 + scale).to(weight.dtype).view(groups, 1, in_per_group)
    factor = factor.expand(groups, out_channels // groups, in_per_group).reshape(out_channels, in_per_group)
    return weight * factor.view(out_channels, in_per_group, *([1] * (weight.dim() - 2)))


def _can_cache(weight: torch.Tensor) -> bool:
    return (
        not torch.is_grad_enabled()
        and weight.device.type != "meta"
        and not torch.compiler.is_compiling()
        and not torch.jit.is_tracing()
        and type(weight) in (torch.Tensor, nn.Parameter)
    )


_PLAIN_KINDS: dict[type, type | None] = {}


def plain_kind(layer: nn.Module) -> type | None:
    """``nn.Conv1d/2d/3d`` or ``nn.Linear`` if ``layer`` computes exactly what that class does
    (the class itself, or a subclass that keeps its forward, like torchvision's ``Conv3DSimple``),
    so that its forward can be called with another weight; otherwise None.

    Example::

        plain_kind(torchvision.models.video.resnet.Conv3DSimple(64, 64))   # nn.Conv3d
    """
    kind = type(layer)
    if kind not in _PLAIN_KINDS:
        _PLAIN_KINDS[kind] = next(
            (base for base in (*_PLAIN_CONVS, nn.Linear) if issubclass(kind, base) and kind.forward is base.forward
             and (base is nn.Linear or kind._conv_forward is base._conv_forward)),
            None,
        )
    return _PLAIN_KINDS[kind]


def scale_input(x: torch.Tensor, scale: torch.Tensor, channel_axis: int) -> torch.Tensor:
    """``x * (1 + scale)`` along ``x``'s channel axis: what :func:`alter_weight` does to a layer's
    weight, done to its input instead (``layer(scale_input(x, s)) == layer`` with ``alter_weight(W, s)``,
    up to float rounding, for convolutions of any kernel, padding or groups, and Linear).

    Example::

        conv = nn.Conv3d(64, 128, 3, padding=1)
        y = conv(scale_input(x, s, channel_axis=1))   # == conv with alter_weight(conv.weight, s)
    """
    shape = [1] * x.dim()
    shape[channel_axis] = -1
    return x * (1 + scale).to(x.dtype).view(shape)


def _scale_activations(x: torch.Tensor, weight: torch.Tensor) -> bool:
    """Alter the activations rather than the weight: in a training forward (autograd on, eager)
    where the input has fewer elements than the weight. Both forms cost one multiply forward and
    two (plus a sum) backward of the tensor they scale; the weight form keeps graphs for export
    and compilation, and its per-key weights are cached for inference."""
    return (
        torch.is_grad_enabled()
        and not torch.jit.is_tracing()
        and not torch.compiler.is_compiling()
        and type(x) is torch.Tensor
        and type(weight) in (torch.Tensor, nn.Parameter)
        and x.numel() < weight.numel()
    )


class WeightAlteration(nn.Module):
    """Per-key input-channel scales folded into ``base_layer``'s weight at forward time.

    ``base_layer`` is the original layer, unchanged; ``scales[str(k)]`` (zeros at creation,
    so the adapted model equals the original) holds ``s_k``. Works for ``nn.Conv1d/2d/3d``
    and ``nn.Linear`` (fast path), their subclasses and ``nn.MultiheadAttention`` (by
    substituting the parameter with :func:`torch.func.functional_call`).

    Example::

        layer = WeightAlteration(nn.Conv2d(64, 64, 3), keys=(4, 8, 16))
        conv8 = layer.specialize(8)   # a plain Conv2d with W * (1 + s_8) folded in
    """

    def __init__(self, base_layer: nn.Module, keys: Sequence[int], site: str = ""):
        super().__init__()
        reason = alterable(base_layer)
        if reason:
            raise TypeError(f"cannot alter '{site or type(base_layer).__name__}': {reason}")
        self.keys = tuple(sorted(keys))
        self.site = site
        self.base_layer = base_layer
        weight = getattr(base_layer, weight_name(base_layer))
        channels = input_channels(base_layer)
        self.scales = nn.ParameterDict(
            {str(k): nn.Parameter(torch.zeros(channels, device=weight.device, dtype=weight.dtype)) for k in self.keys}
        )

    @property
    def groups(self) -> int:
        return getattr(self.base_layer, "groups", 1)

    def altered_weight(self, key: int) -> torch.Tensor:
        weight = getattr(self.base_layer, weight_name(self.base_layer))
        scale = self.scales[str(key)]
        if not _can_cache(weight):
            return alter_weight(weight, scale, self.groups)
        # Without autograd the altered weight only changes when its inputs do: keep one per key,
        # so inference (evaluation across frame counts too) costs what the original layer costs.
        stamp = (weight._version, scale._version, weight.data_ptr(), scale.data_ptr(), torch.is_inference_mode_enabled())
        cache = self.__dict__.setdefault("_inference_cache", {})
        cached = cache.get(key)
        if cached is None or cached[0] != stamp:
            cached = cache[key] = (stamp, alter_weight(weight, scale, self.groups))
        return cached[1]

    def __getstate__(self):
        state = super().__getstate__().copy()
        state.pop("_inference_cache", None)
        return state

    def forward(self, *args, **kwargs):
        key = select_key(self.keys, self.site)
        layer = self.base_layer
        kind = plain_kind(layer)
        if kind is not None and len(args) == 1 and not kwargs:
            x, weight = args[0], layer.weight
            if _scale_activations(x, weight) and (kind is type(layer) or not (layer._forward_hooks or layer._forward_pre_hooks)):
                # Training at a small batch: scaling the input channels of x is the same product
                # as scaling W's, and cheaper when x is the smaller tensor (forward and backward).
                x = scale_input(x, self.scales[str(key)], channel_axis=-1 if kind is nn.Linear else x.dim() - weight.dim() + 1)
            elif kind is type(layer):
                weight = self.altered_weight(key)
            else:  # a subclass is called (its hooks run) as before
                return functional_call(layer, {"weight": self.altered_weight(key)}, args, kwargs)
            if kind is nn.Linear:
                return F.linear(x, weight, layer.bias)
            return layer._conv_forward(x, weight, layer.bias)
        return functional_call(layer, {weight_name(layer): self.altered_weight(key)}, args, kwargs)

    def specialize(self, t: int) -> nn.Module:
        """A standalone copy of ``base_layer`` with the alteration for ``t`` frames folded in."""
        layer = copy.deepcopy(self.base_layer)
        with torch.no_grad():
            getattr(layer, weight_name(layer)).copy_(self.altered_weight(nearest_key(t, self.keys)))
        return layer

    def extra_repr(self) -> str:
        return f"keys={self.keys}"

    def __getattr__(self, name: str):
        # A forward that reads the layer's weight directly (torchvision's Swin3D attention calls
        # F.linear(x, self.qkv.weight)) gets the active key's altered weight, as a call would.
        base = self.__dict__["_modules"]["base_layer"]
        if name == weight_name(base) and (len(self.keys) == 1 or active_frames() is not None):
            return self.altered_weight(select_key(self.keys, self.site))
        return delegate(self, name, "base_layer")


class ResidualAlteration(nn.Module):
    """``base_layer(x + dw_k(x))`` with a zero-initialised depthwise ``kernel_size`` convolution
    per key on the activations (convolutions only). Sees a spatio-temporal neighbourhood, costs
    an extra activation-sized convolution, and cannot be folded: ``specialize`` keeps a one-key
    copy of this module.

    Example::

        layer = ResidualAlteration(nn.Conv3d(64, 64, 3, padding=1), keys=(4, 8, 16), kernel_size=3)
        with fan_convert.frames(8):
            y = layer(x)                  # conv(x + dw_8(x)), x: (B, 64, T, H, W)
    """

    def __init__(self, base_layer: nn.Module, keys: Sequence[int], kernel_size: int, site: str = ""):
        super().__init__()
        if not isinstance(base_layer, nn.modules.conv._ConvNd) or alterable(base_layer):
            raise TypeError(
                f"cannot alter '{site or type(base_layer).__name__}' with kernel_size={kernel_size}: "
                "kernels > 1 need a spatial layout and apply to convolutions only; use kernel_size=1"
            )
        self.keys = tuple(sorted(keys))
        self.site = site
        self.kernel_size = kernel_size
        self.base_layer = base_layer
        conv_type = _PLAIN_CONVS[len(base_layer.kernel_size) - 1]
        channels = base_layer.in_channels
        weight = base_layer.weight
        self.adapters = nn.ModuleDict()
        for k in self.keys:
            dw = conv_type(channels, channels, kernel_size, padding=kernel_size // 2, groups=channels, bias=False)
            nn.init.zeros_(dw.weight)
            self.adapters[str(k)] = dw.to(device=weight.device, dtype=weight.dtype)

    def forward(self, x, *args, **kwargs):
        adapter = self.adapters[str(select_key(self.keys, self.site))]
        return self.base_layer(x + adapter(x), *args, **kwargs)

    def specialize(self, t: int) -> nn.Module:
        key = nearest_key(t, self.keys)
        single = ResidualAlteration(copy.deepcopy(self.base_layer), (key,), self.kernel_size, self.site)
        single.adapters[str(key)].load_state_dict(self.adapters[str(key)].state_dict())
        return single

    def extra_repr(self) -> str:
        return f"keys={self.keys}, kernel_size={self.kernel_size}"

    def __getattr__(self, name: str):
        return delegate(self, name, "base_layer")


def fold_alteration(layer: nn.Module, t: int) -> nn.Module:
    """The plain layer that computes what ``layer`` (a :class:`WeightAlteration`) computes at
    ``t`` frames: its 1x1 alteration multiplied into the weights. Exact up to float rounding.

    Example::

        layer = WeightAlteration(nn.Conv3d(64, 64, 3), keys=(4, 8, 16))
        conv8 = fold_alteration(layer, 8)   # a plain Conv3d with W * (1 + s_8)
    """
    if isinstance(layer, ResidualAlteration):
        raise NotFoldableError(
            f"'{layer.site}' has a {layer.kernel_size}-wide alteration kernel, which cannot be folded "
            "into the layer's weights; keep it (specialize keeps a one-key module) or adapt with kernel_size=1"
        )
    if not isinstance(layer, WeightAlteration):
        raise TypeError(f"expected a WeightAlteration, got {type(layer).__name__}")
    return layer.specialize(t)
