"""Model surgery, in the order it runs: analyse (:mod:`.analyze`) -> plan (:mod:`.planner`,
recorded as a :class:`~.conversion.ConversionPlan`) -> rewrite (:mod:`.rewriter`). What each
module becomes is decided by one rule table (:mod:`.rules`, built-in entries in
:mod:`.builtin_rules`); :func:`adapt` (:mod:`.workflow`) runs plan and rewrite in one call."""

from ..context import check_frames
from .building import replace_module
from .conversion import CONVERTED, SKIPPED, UNSUPPORTED, ConversionPlan, Site
from .planner import UnsupportedNormWarning, plan
from .rewriter import apply_plan, get_plan, kept_alterations, restore_specialized, specialize
from .rules import BuildContext, Rule, missing_rules, register_norm, register_rule, unregister_rule, user_rule_names
from .workflow import adapt

__all__ = [
    "adapt", "apply_plan", "plan", "specialize", "get_plan", "check_frames", "ConversionPlan", "Site", "register_norm",
    "register_rule", "Rule", "BuildContext", "replace_module", "restore_specialized", "kept_alterations", "missing_rules",
    "user_rule_names",
    "unregister_rule",
    "UnsupportedNormWarning",
    "CONVERTED", "SKIPPED", "UNSUPPORTED",
]
