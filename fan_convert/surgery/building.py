"""Building one site's layer and swapping it into a model: the single place where a module is
replaced (:func:`replace_module`) and where a site's rule makes its layer (:func:`rewrite_sites`).
The rewriter carries out whole plans with it; the planner uses it only on a private copy."""

from __future__ import annotations

from typing import Sequence

from torch import nn

from . import rules
from .conversion import ALTERATION, CONVERTED, FIXED_T, NORM, Site

__all__ = ["replace_module", "check_not_adapted", "rule_for_site", "build_site", "rewrite_sites"]


def replace_module(model: nn.Module, path: str, new: nn.Module) -> nn.Module:
    """Put ``new`` at ``path`` in ``model`` (``setattr`` on the parent, so the model keeps its
    class, forward and hooks); returns the module that was there.

    Example::

        old = replace_module(model, "layer1.0.bn1", nn.Identity())
    """
    if not path:
        raise ValueError("the model's root cannot be replaced in place; only its submodules can")
    parent_path, _, child = path.rpartition(".")
    parent = model.get_submodule(parent_path) if parent_path else model
    old = parent.get_submodule(child)
    setattr(parent, child, new)
    return old


def check_not_adapted(model: nn.Module, action: str) -> None:
    for path, module in model.named_modules():
        if isinstance(module, rules.fan_layer_types(NORM, ALTERATION)):
            raise ValueError(f"model is already adapted ({type(module).__name__} at '{path}'); {action} the original model")


def rule_for_site(site: Site, module: nn.Module, kernel_size: int = 1) -> rules.Rule:
    """The rule that builds ``site``'s layer: the one it names, else (plans written before rules
    had names) the one the table picks for ``module``."""
    if site.rule:
        rule = rules.rule_named(site.rule)
        if rule is None:
            raise ValueError(
                f"'{site.path}' was converted by the rule {site.rule!r}, which is not registered here; "
                "import the code that calls fan_convert.register_rule for it before loading or applying the plan")
        return rule
    if site.kind == ALTERATION:
        return rules.rule_named("alteration.weight" if kernel_size == 1 else "alteration.residual")
    rule = rules.match(module, site.kind)
    if rule is None and site.kind == NORM:
        rule = rules.rule_named("norm.functional")  # any module can be banked by copy
    if rule is None or rule.layer is None:
        raise ValueError(f"no rule converts {type(module).__name__} at '{site.path}'; find the sites again on this model")
    return rule


def build_site(model: nn.Module, site: Site, ctx: rules.BuildContext, kernel_size: int = 1) -> tuple[rules.Rule, nn.Module]:
    try:
        original = model.get_submodule(site.path)
    except AttributeError:
        raise ValueError(
            f"the plan converts '{site.path}', which this model does not have; build the architecture the plan was made for"
        ) from None
    if type(original).__name__ != site.original:
        raise ValueError(
            f"the plan expects {site.original} at '{site.path}' but the model has {type(original).__name__}; "
            "build the architecture the plan was made for (or find the sites again on this model)")
    rule = rule_for_site(site, original, kernel_size)
    return rule, rule.make(original, ctx)


def rewrite_sites(model: nn.Module, sites: Sequence[Site], *, keys: Sequence[int] = (), trained_at: int | None = None,
                  kernel_size: int = 1) -> None:
    """Swap every converted site of ``sites`` for the layer its rule builds, in place. Fixed-T
    sites that already hold their layer are left as they are."""
    fixed_layers = rules.fan_layer_types(FIXED_T)
    for site in sites:
        if site.status != CONVERTED:
            continue
        if site.kind == FIXED_T and isinstance(model.get_submodule(site.path), fixed_layers):
            continue
        ctx = rules.BuildContext(path=site.path, keys=tuple(keys), trained_at=trained_at, kernel_size=kernel_size, root=model)
        replace_module(model, site.path, build_site(model, site, ctx, kernel_size)[1])
