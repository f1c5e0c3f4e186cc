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
from .building import build_site, check_not_adapted, replace_module, rewrite_sites
from .conversion import CONVERTED, FIXED_T, ConversionPlan, Site

__all__ = ["apply_plan", "get_plan", "specialize", "restore_specialized", "rewrite_fixed_t", "kept_alterations"]


def rewrite_fixed_t(model: nn.Module, sites: Sequence[Site], *, trained_at: int | None = None) -> None:
    """Swap each converted fixed-T site of ``sites`` for its adapter, in place (``setattr`` on
    the parent module: the model keeps its class and forward). Sites of other kinds, unsupported
    sites and sites already holding an adapter are left as they are.

    ``trained_at`` (the training clip length, in the units of ``find_fixed_t_sites``) lets each
    adapter's ``specialize(frames)`` turn a clip length into its own temporal length; without it,
    call ``specialize(length=...)``.
    """
    if trained_at is not None:
        check_frame_count(trained_at, "trained_at")
    for site in sites:
        if site.kind == FIXED_T and site.status == CONVERTED and not site.path:
            raise ValueError("a fixed-T site at the model's root cannot be swapped on a parent")
    rewrite_sites(model, [s for s in sites if s.kind == FIXED_T], trained_at=trained_at)


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
        rule, layer = build_site(model, site, rules.BuildContext(path=site.path, trained_at=trained_at, root=model))
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
