"""fan-convert: turn any pretrained PyTorch video model into a Frame Adaptive Network (FAN).

    import fan_convert
    fan = fan_convert.adapt(model, frames=(4, 8, 16))
    with fan_convert.frames(8):
        logits = fan(clip)
"""

from . import zoo
from .context import NoActiveFrames, active_frames, frames, nearest_key
from .io import load, read_checkpoint, read_manifest, save, save_specialized
from .nn import NormBank, NotFoldableError, ResidualAlteration, WeightAlteration, fold_alteration
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

__version__ = "0.1.0"

__all__ = [
    "adapt", "build", "zoo", "apply_plan", "plan", "save", "save_specialized", "load", "read_manifest",
    "read_checkpoint", "specialize", "get_plan", "frames", "active_frames", "nearest_key", "register_norm",
    "register_rule", "Rule",
    "ConversionPlan", "Site", "NormBank", "WeightAlteration", "ResidualAlteration", "fold_alteration",
    "NotFoldableError", "NoActiveFrames", "UnsupportedNormWarning", "__version__",
]
