"""fan-convert: turn any pretrained PyTorch video model into a Frame Adaptive Network (FAN).

    import fan_convert
    fan = fan_convert.adapt(model, frames=(4, 8, 16))
    with fan_convert.frames(8):
        logits = fan(clip)

Names are imported on first use, so ``import fan_convert`` (and ``fan-convert --help``) does not
import torch until something needs it.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

# public name -> the module that defines it
_EXPORTS = {
    "zoo": ".zoo", "build": ".zoo",
    "NoActiveFrames": ".context", "active_frames": ".context", "frames": ".context", "nearest_key": ".context",
    "load": ".io", "read_checkpoint": ".io", "read_manifest": ".io", "save": ".io", "save_specialized": ".io",
    "NormBank": ".nn", "NotFoldableError": ".nn", "ResidualAlteration": ".nn", "WeightAlteration": ".nn",
    "fold_alteration": ".nn",
    "ConversionPlan": ".surgery", "Rule": ".surgery", "Site": ".surgery", "UnsupportedNormWarning": ".surgery", "adapt": ".surgery",
    "apply_plan": ".surgery", "get_plan": ".surgery", "plan": ".surgery", "register_norm": ".surgery", "register_rule": ".surgery",
    "specialize": ".surgery",
    "from_checkpoint": ".pipeline",
}

__all__ = [
    "adapt", "build", "zoo", "apply_plan", "plan", "save", "save_specialized", "load", "read_manifest",
    "read_checkpoint", "from_checkpoint", "specialize", "get_plan", "frames", "active_frames", "nearest_key",
    "register_norm", "register_rule", "Rule", "ConversionPlan", "Site", "NormBank", "WeightAlteration", "ResidualAlteration",
    "fold_alteration",
    "NotFoldableError", "NoActiveFrames", "UnsupportedNormWarning", "__version__",
]


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'fan_convert' has no attribute {name!r}")
    module = importlib.import_module(_EXPORTS[name], __name__)
    value = module if name == module.__name__.rsplit(".", 1)[-1] else getattr(module, name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))


if TYPE_CHECKING:  # what editors and type checkers see
    from . import zoo
    from .context import NoActiveFrames, active_frames, frames, nearest_key
    from .io import load, read_checkpoint, read_manifest, save, save_specialized
    from .nn import NormBank, NotFoldableError, ResidualAlteration, WeightAlteration, fold_alteration
    from .pipeline import from_checkpoint
    from .surgery import (
        ConversionPlan,
        Rule,
        Site,
        UnsupportedNormWarning,
        adapt,
        apply_plan,
        get_plan,
        plan,
        register_norm,
        register_rule,
        specialize,
    )
    from .zoo import build
