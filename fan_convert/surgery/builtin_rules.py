"""The built-in entries of the rule table (:mod:`.rules`): norm classes banked by copy, the
layers that carry a weight alteration, and the fixed-T sites (head pools, temporal position
encodings, stored frame counts). Each entry is one :class:`~.rules.Rule`; see
docs/conversion-rules.md for what each does."""

from __future__ import annotations

import math
from typing import Any

from torch import nn

from ..nn.alteration import ResidualAlteration, WeightAlteration, alterable
from ..nn.norm_bank import NormBank
from ..nn.position_encodings import InterpolatedMViTPositionalEncoding, InterpolatedSpatioTemporalClsPositionalEncoding
from ..nn.time_pool import AdaptiveTimePool3d
from .conversion import CONVERTED, FIXED_T, UNSUPPORTED, Site
from .rules import BuildContext, Rule

# Base classes whose subclasses are normalisation layers; unknown subclasses are banked when safe.
NORM_BASES: tuple[type, ...] = (
    nn.modules.batchnorm._NormBase, nn.LayerNorm, nn.GroupNorm, nn.LocalResponseNorm,
) + ((nn.RMSNorm,) if hasattr(nn, "RMSNorm") else ())

TORCH_NORMS: tuple[type, ...] = (
    nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.SyncBatchNorm, nn.LayerNorm, nn.GroupNorm,
    nn.InstanceNorm1d, nn.InstanceNorm2d, nn.InstanceNorm3d,
) + ((nn.RMSNorm,) if hasattr(nn, "RMSNorm") else ())

# Normalisation classes from other libraries that do not subclass a torch norm (or do, with
# extra behaviour worth naming). Names missing from an installed version are skipped.
_TIMM_NORMS = (
    "BatchNormAct2d", "SyncBatchNormAct", "FrozenBatchNorm2d", "FrozenBatchNormAct2d",
    "GroupNorm", "GroupNorm1", "GroupNormAct", "GroupNorm1Act",
    "LayerNorm", "LayerNorm2d", "LayerNormFp32", "LayerNorm2dFp32",
    "LayerNormAct", "LayerNormAct2d", "LayerNormActFp32", "LayerNormAct2dFp32",
    "RmsNorm", "RmsNorm2d", "RmsNormFp32", "RmsNorm2dFp32",
    "RmsNormAct", "RmsNormAct2d", "RmsNormActFp32", "RmsNormAct2dFp32",
    "SimpleNorm", "SimpleNorm2d", "SimpleNormFp32", "SimpleNorm2dFp32",
    "EvoNorm2dB0", "EvoNorm2dB1", "EvoNorm2dB2", "EvoNorm2dS0", "EvoNorm2dS0a",
    "EvoNorm2dS1", "EvoNorm2dS1a", "EvoNorm2dS2", "EvoNorm2dS2a",
    "FilterResponseNormTlu2d", "FilterResponseNormAct2d",
)
LIBRARY_NORMS = tuple(f"timm.layers:{n}" for n in _TIMM_NORMS) + ("torchvision.ops.misc:FrozenBatchNorm2d",)

# Linear layers that take a transformer block's attention or MLP input, by name suffix
# (timm, torchvision, pytorchvideo naming). nn.MultiheadAttention is matched by type.
TRANSFORMER_INPUTS: tuple[str, ...] = (
    "qkv", "q", "k", "v", "q_proj", "k_proj", "v_proj", "query", "key", "value", "fc1", "mlp.0",
)

# Instance attributes that, holding an int, store a frame count fixed at construction.
FRAME_COUNT_ATTRIBUTES = (
    "num_segments", "num_segment", "n_segment", "n_segments", "num_frames", "n_frames", "nframes",
    "clip_len", "clip_length", "temporal_size", "num_temporal_patch",
)


def is_stateless(module: nn.Module) -> bool:
    """A norm with no parameters and no running statistics: every key would be identical."""
    return not any(True for _ in module.parameters()) and not any(b is not None for b in module.buffers())


def looks_like_norm(module: nn.Module) -> bool:
    """An unregistered leaf module named like a norm that owns tensors: worth a warning."""
    return (
        "Norm" in type(module).__name__
        and not any(True for _ in module.children())
        and any(True for _ in module.parameters(recurse=False))
    )


def is_default_alteration_target(name: str, module: nn.Module) -> bool:
    """Every non-depthwise convolution, and each transformer block's attention/MLP input."""
    if alterable(module):
        return False
    if isinstance(module, nn.modules.conv._ConvNd):
        return not (module.groups == module.in_channels and module.in_channels > 1)
    if isinstance(module, nn.MultiheadAttention):
        return True
    name = name.removesuffix(".net")  # a layer behind a temporal shift (ShiftedInput) keeps its role
    return any(name == s or name.endswith("." + s) for s in TRANSFORMER_INPUTS)


# ------------------------------------------------------------------------------ fixed-T detection

def first(value: Any) -> int:
    return int(value[0]) if isinstance(value, (tuple, list)) else int(value)


def _triple(value: Any) -> tuple[int, ...]:
    return tuple(int(v) for v in value) if isinstance(value, (tuple, list)) else (int(value),) * 3


def _pool_site(path: str, pool: nn.Module, trained_at: int, observed: dict | None) -> Site | None:
    """A 3D pool that covers the whole time axis at ``trained_at`` (a head pool), as a site."""
    kernel, padding = first(pool.kernel_size), first(pool.padding)
    dilation = first(getattr(pool, "dilation", 1))
    if kernel <= 1:
        return None
    name = type(pool).__name__
    if observed is None:  # no shapes: only the unmistakable configuration of a head pool
        strides, paddings = (_triple(getattr(pool, a)) for a in ("stride", "padding"))
        if strides != (1, 1, 1) or paddings != (0, 0, 0) or dilation != 1:
            return None
        how = (f"temporal kernel {kernel}, stride 1, no padding: taken to pool the whole time axis at {trained_at} frames "
               "(pass example_input to confirm from shapes)")
    else:
        calls = observed.get(id(pool), [])
        if not calls:
            return None  # not run on the example: nothing to say about its time axis
        if not all(t_in == (kernel - 1) * dilation + 1 and t_out == 1 for t_in, t_out in calls):
            return None  # slides over time (or keeps several steps): works at any T long enough
        if padding != 0 or dilation != 1:
            return Site(path, FIXED_T, name, "", UNSUPPORTED, 0, (
                f"pools all {calls[0][0]} time steps at {trained_at} frames, but with temporal "
                f"{'padding ' + str(padding) if padding else 'dilation ' + str(dilation)}, which has no adaptive "
                "equivalent; the model needs its trained clip length"), rule="fixed_t.time_pool")
        how = f"pools all {calls[0][0]} time steps at {trained_at} frames (temporal kernel {kernel})"
    if type(pool) not in (nn.AvgPool3d, nn.MaxPool3d):
        return Site(path, FIXED_T, name, "", UNSUPPORTED, 0, (
            f"{how}, but {name} subclasses {type(pool).__mro__[1].__name__} and may have its own forward; "
            "replace it with a pool that is adaptive over time (e.g. AdaptiveTimePool3d) yourself"), rule="fixed_t.time_pool")
    return Site(path, FIXED_T, name, AdaptiveTimePool3d.__name__, CONVERTED, 0,
                f"{how}; becomes adaptive over time, spatial kernel kept", rule="fixed_t.time_pool")


def _temporal_len(module: nn.Module) -> int:
    for name in ("num_temporal_patch", "temporal_size"):
        value = getattr(module, name, None)
        if isinstance(value, int):
            return value
    return -1


def _position_note(module: nn.Module) -> str:
    return (f"temporal positional embedding for {_temporal_len(module)} temporal patches; interpolated linearly "
            "to the patches of each input (identical at the trained length)")


def _stored_frame_counts(module: nn.Module) -> list[tuple[str, int]]:
    return [(a, v) for a, v in vars(module).items()
            if a in FRAME_COUNT_ATTRIBUTES and isinstance(v, int) and not isinstance(v, bool)]


def _frame_count_note(module: nn.Module) -> str:
    stored = ", ".join(f"{a}={v}" for a, v in _stored_frame_counts(module))
    return (f"stores {stored}, a frame count fixed at construction: code that reshapes or indexes by it crashes or "
            "silently mis-computes at other frame counts; make the module read T from its input (x.shape, or "
            "fan_convert.context.clip_frames() for frames folded into the batch) before converting")


def check_whole_steps(what: str, steps: int, ctx: BuildContext) -> None:
    """Refuse keys that do not map to a whole number of ``steps`` (the time steps a fixed-T layer
    sees at ``ctx.trained_at`` frames): its layer could serve them in a forward (it follows the
    input) but not be specialised or exported at them, and a ``trained_at`` that gives no whole
    mapping is usually not the clip length the weights were trained at."""
    trained_at = ctx.trained_at
    if not trained_at or steps <= 0:
        return
    bad = [k for k in ctx.keys if (k * steps) % trained_at]
    if not bad:
        return
    unit = trained_at // math.gcd(trained_at, steps)
    raise ValueError(
        f"'{ctx.path}' ({what}) sees {steps} time steps at trained_at={trained_at} frames, so "
        f"{', '.join(map(str, bad))} frames do not map to a whole number of its time steps: pass "
        f"trained_at= the clip length the weights were trained at (e.g. trained_at={steps} if no layer before it "
        f"strides over time) or choose keys that are multiples of {unit}")


def _check_time_pool(pool: nn.Module, ctx: BuildContext) -> None:
    check_whole_steps(f"{type(pool).__name__} pooling the whole time axis", first(pool.kernel_size), ctx)


def _check_position(module: nn.Module, ctx: BuildContext) -> None:
    check_whole_steps(f"{type(module).__name__}, a temporal positional embedding", _temporal_len(module), ctx)


def _residual(module: nn.Module, ctx: BuildContext) -> nn.Module:
    return ResidualAlteration(module, ctx.keys, ctx.kernel_size, site=ctx.path)


RULES: list[Rule] = [
    # Norms: one private copy per frame count.
    Rule("norm.torch", "norm", TORCH_NORMS, layer=NormBank),
    Rule("norm.library", "norm", LIBRARY_NORMS, layer=NormBank, note=""),
    Rule("norm.subclass", "norm", NORM_BASES, subclasses=True, layer=NormBank,
         note="unregistered subclass of a torch norm, banked by copy"),
    Rule("norm.functional", "norm", (), layer=NormBank),  # chosen from the fx graph, not by class
    # Weight alteration: per-key input-channel scales (1x1), or a depthwise residual (kernel > 1).
    Rule("alteration.weight", "alteration", (nn.modules.conv._ConvNd, nn.Linear, nn.MultiheadAttention),
         subclasses=True, layer=WeightAlteration),
    Rule("alteration.residual", "alteration", (nn.Conv1d, nn.Conv2d, nn.Conv3d), subclasses=True,
         layer=ResidualAlteration, build=_residual),
    # Fixed-T sites: layers sized to the training clip.
    Rule("fixed_t.time_pool", "fixed_t", (nn.AvgPool3d, nn.MaxPool3d), subclasses=True, layer=AdaptiveTimePool3d,
         find=_pool_site, observe=True, check=_check_time_pool),
    Rule("fixed_t.torchvision_mvit_position", "fixed_t", "torchvision.models.video.mvit:PositionalEncoding",
         layer=InterpolatedMViTPositionalEncoding, note=_position_note, check=_check_position,
         build=lambda m, ctx: InterpolatedMViTPositionalEncoding.for_module(m, ctx.trained_at)),
    Rule("fixed_t.pytorchvideo_position", "fixed_t",
         "pytorchvideo.layers.positional_encoding:SpatioTemporalClsPositionalEncoding",
         layer=InterpolatedSpatioTemporalClsPositionalEncoding, note=_position_note, check=_check_position,
         build=lambda m, ctx: InterpolatedSpatioTemporalClsPositionalEncoding.for_module(m, ctx.trained_at)),
]

# Consulted after every integration's rules (fan_convert/integrations/): the catch-all ones.
FALLBACK_RULES: list[Rule] = [
    Rule("fixed_t.frame_count_attribute", "fixed_t", nn.Module, subclasses=True,
         when=lambda m: bool(_stored_frame_counts(m)), note=_frame_count_note),
]
