"""The one place that decides what each module becomes: norm types that are banked, and which
layers carry a weight alteration by default."""

from __future__ import annotations

import functools
import importlib

from torch import nn

from ..nn.alteration import alterable

# Base classes whose subclasses are normalisation layers; unknown subclasses are banked when safe.
NORM_BASES: tuple[type, ...] = (
    nn.modules.batchnorm._NormBase,
    nn.LayerNorm,
    nn.GroupNorm,
    nn.LocalResponseNorm,
) + ((nn.RMSNorm,) if hasattr(nn, "RMSNorm") else ())

# Normalisation classes from other libraries that do not subclass a torch norm (or do, with
# extra behaviour worth naming). Missing names (older versions) are skipped.
_LIBRARY_NORMS = {
    "timm.layers": (
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
    ),
    "torchvision.ops.misc": ("FrozenBatchNorm2d",),
}

_user_norms: list[type] = []

# Linear layers that take a transformer block's attention or MLP input, by name suffix
# (timm, torchvision, pytorchvideo naming). nn.MultiheadAttention is matched by type.
TRANSFORMER_INPUTS: tuple[str, ...] = (
    "qkv", "q", "k", "v", "q_proj", "k_proj", "v_proj", "query", "key", "value", "fc1", "mlp.0",
)


def register_norm(cls: type) -> type:
    """Declare ``cls`` a normalisation layer to bank by copy (usable as a class decorator).

    Example::

        @fan_convert.register_norm
        class MyNorm(nn.Module): ...
    """
    if not isinstance(cls, type) or not issubclass(cls, nn.Module):
        raise TypeError(f"register_norm expects an nn.Module subclass, got {cls!r}")
    if cls not in _user_norms:
        _user_norms.append(cls)
        known_norm_types.cache_clear()
    return cls


@functools.lru_cache(maxsize=1)
def known_norm_types() -> tuple[type, ...]:
    """Every class banked without further checks: torch's norms, timm/torchvision's, the user's."""
    found: list[type] = []
    for module_name, names in _LIBRARY_NORMS.items():
        try:
            module = importlib.import_module(module_name)
        except ImportError:
            continue
        found += [getattr(module, name) for name in names if isinstance(getattr(module, name, None), type)]
    torch_norms = [
        nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.SyncBatchNorm, nn.LayerNorm, nn.GroupNorm,
        nn.InstanceNorm1d, nn.InstanceNorm2d, nn.InstanceNorm3d,
    ]
    if hasattr(nn, "RMSNorm"):
        torch_norms.append(nn.RMSNorm)
    return tuple(dict.fromkeys(torch_norms + found + _user_norms))


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


def norm_rule(module: nn.Module) -> str | None:
    """How a module counts as a norm: "known", "subclass" (of a torch norm base), or None."""
    if type(module) in known_norm_types():
        return "known"
    if isinstance(module, NORM_BASES):
        return "subclass"
    return None


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


def leaf_types() -> tuple[type, ...]:
    """Modules the tracer keeps whole: norms, and everything that can carry an alteration."""
    return known_norm_types() + NORM_BASES + (nn.modules.conv._ConvNd, nn.Linear, nn.MultiheadAttention)
