"""Rewriting: carry out a conversion plan, specialise back to one frame count, rebuild a saved
specialised model. Every module swap in fan-convert goes through :func:`replace_module`; what a
module becomes comes from the rule table (:mod:`.rules`)."""

from __future__ import annotations

import copy
from typing import Sequence

from torch import nn

from ..context import FrameInference, check_frame_count, nearest_key
from ..nn.alteration import NotFoldableError, ResidualAlteration
from . import rules
from .conversion import ALTERATION, CONVERTED, FIXED_T, NORM, ConversionPlan, Site

__all__ = ["replace_module", "apply_plan", "get_plan", "specialize", "restore_specialized", "rule_for_site", "check_not_adapted"]


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


def _build(model: nn.Module, site: Site, ctx: rules.BuildContext, kernel_size: int = 1) -> tuple[rules.Rule, nn.Module]:
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
        replace_module(model, site.path, _build(model, site, ctx, kernel_size)[1])


def apply_plan(model: nn.Module, conversion: ConversionPlan, *, inplace: bool = False) -> nn.Module:
    """Carry out ``conversion`` (from :func:`plan`, possibly edited, or read back from a saved
    manifest) on ``model``: swap every converted site, attach frame inference. The sites must
    exist in ``model`` with the recorded classes.

    Example::

        conversion = fan_convert.plan(model, frames=(4, 8, 16))
        conversion.sites = [s for s in conversion.sites if not s.path.startswith("head")]
        fan = fan_convert.apply_plan(model, conversion)
    """
    check_not_adapted(model, "apply the plan to")
    if not inplace:
        model = copy.deepcopy(model)
    modes = {path: m.training for path, m in model.named_modules()}
    originals = {id(m): m for m in model.modules()}  # holds them: a freed module's id could be reused
    converted = conversion.select()
    ordered = [s for s in converted if s.kind == FIXED_T] + [s for s in converted if s.kind != FIXED_T]
    rewrite_sites(model, ordered, keys=conversion.frames, trained_at=conversion.trained_at,
                  kernel_size=conversion.kernel_size)
    _keep_modes(model, modes, originals)
    FrameInference(conversion.frame_axis).attach(model)
    model.fan_plan = conversion
    return model


def _keep_modes(model: nn.Module, modes: dict[str, bool], originals: dict[int, nn.Module]) -> None:
    """Each new module takes the train/eval mode of the module it replaced (or of its closest
    original parent), as ``copy.deepcopy`` keeps modes: an ``eval()`` model adapts to an eval one."""
    for path, module in model.named_modules():
        if id(module) in originals:
            continue
        owner = path
        while owner and owner not in modes:
            owner = owner.rpartition(".")[0]
        module.training = modes.get(owner, model.training)


def get_plan(model: nn.Module) -> ConversionPlan:
    """The :class:`ConversionPlan` of an adapted model.

    Example::

        conversion = fan_convert.get_plan(fan)
        print(conversion.frames, conversion.trained_at)   # (4, 8, 16) 16
    """
    conversion = getattr(model, "fan_plan", None)
    if not isinstance(conversion, ConversionPlan):
        raise ValueError(f"{type(model).__name__} is not an adapted model: convert it with fan_convert.adapt(model, frames=...)")
    return conversion


def specialize(model: nn.Module, frames: int, *, unfoldable: str = "error", inplace: bool = False) -> nn.Module:
    """The plain network for ``frames``: each norm bank replaced by the copy serving that frame
    count, each 1x1 alteration folded into its layer's weights and each fixed-T layer turned back
    into its original class for that frame count. The result has the original architecture
    (same module names, same ``state_dict`` keys) and computes what the adapted model computes
    at ``frames``.

    ``unfoldable``: what to do with kernel > 1 alterations, which cannot be folded:
    ``"error"`` (default) or ``"keep"`` (a one-key module stays in the network).

    Example::

        plain8 = fan_convert.specialize(fan, frames=8)
        plain8(clip_8_frames)
    """
    get_plan(model)
    t = check_frame_count(frames, "frames")
    if unfoldable not in ("error", "keep"):
        raise ValueError(f"unfoldable must be 'error' or 'keep', got {unfoldable!r}")
    fan_sites = [(p, m) for p, m in model.named_modules() if isinstance(m, rules.fan_layer_types())]
    blocked = [p for p, m in fan_sites if isinstance(m, ResidualAlteration)]
    if blocked and unfoldable == "error":
        raise NotFoldableError(
            f"{len(blocked)} alteration(s) with kernel_size > 1 (e.g. '{blocked[0]}') cannot be folded into "
            "weights; pass unfoldable='keep' to keep them as one-key modules"
        )
    if not inplace:
        model = copy.deepcopy(model)
    for path, _ in fan_sites:
        layer = model.get_submodule(path)
        replace_module(model, path, rules.rule_for_layer(layer).plain(layer, t))
    FrameInference.detach(model)
    del model.fan_plan
    return model


def restore_specialized(model: nn.Module, frames: int, trained_at: int, fixed_t: Sequence[Site | dict] = (),
                        kept_alterations: dict | None = None) -> nn.Module:
    """Give a freshly built architecture the module layout of a model specialised to ``frames``
    (by :func:`specialize`): each converted fixed-T site rebuilt and specialised, each kept
    (unfoldable) alteration re-created for its one key. In place; the weights are loaded after.

    Example::

        restore_specialized(build("pytorchvideo:x3d_s"), frames=8, trained_at=16, fixed_t=sites)
    """
    sites = [s if isinstance(s, Site) else Site(**s) for s in fixed_t]
    for site in sites:
        if site.kind != FIXED_T or site.status != CONVERTED:
            continue
        rule, layer = _build(model, site, rules.BuildContext(path=site.path, trained_at=trained_at, root=model))
        replace_module(model, site.path, rule.plain(layer, frames))
    kept = kept_alterations or {}
    residual = rules.rule_named("alteration.residual")
    for path in kept.get("paths", []):
        ctx = rules.BuildContext(path=path, keys=(kept["key"],), kernel_size=kept["kernel_size"])
        replace_module(model, path, residual.make(model.get_submodule(path), ctx))
    return model


def kept_alterations(plain: nn.Module, conversion: ConversionPlan, frames: int) -> dict:
    """What :func:`restore_specialized` needs to re-create the alterations ``specialize`` kept."""
    paths = [p for p, m in plain.named_modules() if isinstance(m, ResidualAlteration)]
    return {"paths": paths, "kernel_size": conversion.kernel_size, "key": nearest_key(frames, conversion.frames)}
