"""Model surgery: analyse -> plan -> rewrite."""

from .adapt import UnsupportedNormWarning, adapt, apply_plan, check_frames, get_plan, plan, specialize
from .plan import ConversionPlan, Site
from .rules import register_norm

__all__ = [
    "adapt", "apply_plan", "plan", "specialize", "get_plan", "check_frames", "ConversionPlan", "Site", "register_norm",
    "UnsupportedNormWarning",
]
