"""adapt(): analyse a model, plan the conversion, then swap modules in place of their originals."""

from __future__ import annotations

import copy
import warnings
from collections import defaultdict
from typing import Any, Sequence

from torch import nn

from ..context import FrameInference, check_frame_count
from ..nn.alteration import NotFoldableError, ResidualAlteration, WeightAlteration, alterable, input_channels
from ..nn.norm_bank import NormBank
from ..nn.time_adapters import AdaptiveTimePool3d, TemporalPositionAdapter
from . import rules
from .analyze import analyze, functional_norm_calls, residual_entry_layers
from .fixed_t import find_fixed_t_sites, rewrite_fixed_t
from .patterns import Pattern, check_patterns, matches, select
from .plan import CONVERTED, SKIPPED, UNSUPPORTED, ConversionPlan, Site

FAN_MODULES = (NormBank, WeightAlteration, ResidualAlteration)
TIME_ADAPTERS = (AdaptiveTimePool3d, TemporalPositionAdapter)
PRESETS = ("default", "paper")


class UnsupportedNormWarning(UserWarning):
    """A normalisation-like module was left unspecialised."""


def check_frames(frames: Sequence[int]) -> tuple[int, ...]:
    """Validate trained frame counts: a non-empty list of distinct positive integers.

    Example::

        check_frames([16, 4, 8])   # (4, 8, 16): sorted, as a tuple
        check_frames(8)            # (8,)
    """
    if isinstance(frames, int):
        frames = (frames,)
    frames = list(frames)
    if not frames:
        raise ValueError("frames is empty: give the frame counts to train, e.g. frames=(4, 8, 16)")
    for t in frames:
        check_frame_count(t, "each of frames")
    duplicates = sorted({t for t in frames if frames.count(t) > 1})
    if duplicates:
        raise ValueError(f"frames lists {duplicates} more than once: give each frame count once")
    return tuple(sorted(frames))


def plan(
    model: nn.Module,
    frames: Sequence[int] = (4, 8, 16),
    *,
    targets: str | Sequence[Pattern] | None = "default",
    exclude: Sequence[Pattern] | None = None,
    norms: bool = True,
    kernel_size: int = 1,
    trained_at: int | None = None,
    frame_axis: int = 2,
    example_input: Any = None,
) -> ConversionPlan:
    """What :func:`adapt` would do to ``model``, without changing it (a dry run).

    Example::

        conversion = fan_convert.plan(model, frames=(4, 8, 16))
        print(conversion)                              # counts, added parameters, unsupported sites
        print(len(conversion.select("norm")), conversion.params_added)
    """
    keys = check_frames(frames)
    trained_at = keys[-1] if trained_at is None else check_frame_count(trained_at, "trained_at")
    if isinstance(kernel_size, bool) or not isinstance(kernel_size, int) or kernel_size < 1 or kernel_size % 2 == 0:
        raise ValueError(f"kernel_size must be an odd positive integer, got {kernel_size!r}")
    if isinstance(targets, str) and targets not in PRESETS:
        targets = [targets]
    excluded = check_patterns(exclude, "exclude")
    explicit = None if targets is None or isinstance(targets, str) else check_patterns(targets, "targets")

    everything = list(model.named_modules(remove_duplicate=False))
    for path, module in everything:
        if isinstance(module, FAN_MODULES):
            raise ValueError(f"model is already adapted ({type(module).__name__} at '{path}'); adapt the original model")
    named = [(p, m) for p, m in everything if p]
    if excluded:
        select(named, excluded, "exclude", [p for p, _ in named])
    analysis = analyze(model)
    safety = _Safety(everything)
    functional = functional_norm_calls(analysis)

    result = ConversionPlan(
        frames=keys, trained_at=trained_at, targets=_describe(targets), kernel_size=kernel_size,
        frame_axis=frame_axis, analysis=analysis.mode,
        params_before=sum(p.numel() for p in model.parameters()), trace_failures=dict(analysis.failures),
        exclude=_describe(exclude), norms=norms,
    )
    taken: list[str] = []  # sites already decided; their descendants belong to them

    def inside_taken(path: str) -> bool:
        return any(path.startswith(t + ".") for t in taken)

    for path, module in named:
        if inside_taken(path):
            continue
        site = _norm_site(path, module, keys, functional, safety)
        if site is None:
            continue
        if any(matches(path, module, p) for p in excluded):
            site.status, site.becomes, site.params_added, site.reason = SKIPPED, "", 0, "excluded"
        elif not norms and site.status == CONVERTED:
            site.status, site.becomes, site.params_added, site.reason = SKIPPED, "", 0, "norms=False"
        result.sites.append(site)
        taken.append(path)

    for owner, function in functional.items():
        if owner == "":  # the model's own forward calls a norm function: nothing to swap
            result.sites.append(Site("", "norm", type(model).__name__, "", UNSUPPORTED, reason=(
                f"the model's forward calls {function} directly; move the norm into a module")))
    attention = [p for p, m in named if isinstance(m, nn.MultiheadAttention)]  # reads its out_proj directly
    candidates = [
        (p, m) for p, m in named
        if not inside_taken(p) and not alterable(m) and not any(p.startswith(q + ".") for q in attention)
    ]
    chosen = _alteration_targets(targets, explicit, candidates, named, analysis, model)
    for path, module in candidates:
        if path not in chosen:
            continue
        result.sites.append(_alteration_site(path, module, keys, kernel_size, excluded, safety, explicit is not None))
    result.sites += find_fixed_t_sites(model, trained_at, keys, example_input, frame_axis=frame_axis)
    position = {p: i for i, (p, _) in enumerate(everything)}
    result.sites.sort(key=lambda s: position.get(s.path, -1))
    _warn_unsupported(result)
    return result


def adapt(
    model: nn.Module,
    frames: Sequence[int] = (4, 8, 16),
    *,
    targets: str | Sequence[Pattern] | None = "default",
    exclude: Sequence[Pattern] | None = None,
    norms: bool = True,
    kernel_size: int = 1,
    trained_at: int | None = None,
    frame_axis: int = 2,
    example_input: Any = None,
    inplace: bool = False,
) -> nn.Module:
    """Turn a pretrained video model into a Frame Adaptive Network.

    Every normalisation layer becomes a :class:`~fan_convert.nn.NormBank` (one private copy per
    frame count) and every target layer a zero-initialised
    :class:`~fan_convert.nn.WeightAlteration`, so before fine-tuning the result computes
    exactly what ``model`` computes, at every key.

    Args:
        frames: the frame counts to specialise for (the keys).
        targets: where weight alterations go: ``"default"`` (every non-depthwise convolution
            and each transformer block's attention/MLP input), ``"paper"`` (the first weight
            layer of every residual block, as in the FAN paper; needs torch.fx), a list of
            module-name patterns (regex full-match or name suffix) and/or module types, or
            None for no alterations.
        exclude: patterns/types of modules to leave untouched (norms and alterations).
        norms: False keeps the shared norms (the paper's "no Specialized Normalization" ablation).
        kernel_size: 1 (foldable, weight-side) or an odd size > 1 (activation-side depthwise
            convolution on conv inputs; more context, not foldable).
        trained_at: the frame count the checkpoint was trained at (default: the largest key);
            its key answers attribute reads such as ``norm.weight`` outside a forward.
        frame_axis: where T sits in a 5-D input clip, for automatic frame inference.
        example_input: a clip (or list of clips) at ``trained_at`` frames. Optional: with it,
            fixed-T sites (temporal pooling sized to the training clip, temporal position
            embeddings) are confirmed from the shapes and the rewritten model is run at every
            key; without it they are recognised by type.
        inplace: modify ``model`` itself instead of a deep copy (the default, like torch.ao).

    Returns:
        The adapted model; ``model.fan_plan`` holds the :class:`ConversionPlan`.

    Example::

        fan = fan_convert.adapt(model, frames=(4, 8, 16))
        print(fan.fan_plan)
        logits = fan(clip)                   # T read from clip.shape[2]
        with fan_convert.frames(8):          # or chosen explicitly
            logits = fan(frames_in_batch)
    """
    conversion = plan(
        model, frames, targets=targets, exclude=exclude, norms=norms, kernel_size=kernel_size,
        trained_at=trained_at, frame_axis=frame_axis, example_input=example_input,
    )
    return apply_plan(model, conversion, inplace=inplace)


def apply_plan(model: nn.Module, conversion: ConversionPlan, *, inplace: bool = False) -> nn.Module:
    """Carry out ``conversion`` (from :func:`plan`, possibly edited, or read back from a saved
    manifest) on ``model``: swap every converted site, attach frame inference. The sites must
    exist in ``model`` with the recorded classes.

    Example::

        conversion = fan_convert.plan(model, frames=(4, 8, 16))
        conversion.sites = [s for s in conversion.sites if not s.path.startswith("head")]
        fan = fan_convert.apply_plan(model, conversion)
    """
    for path, module in model.named_modules():
        if isinstance(module, FAN_MODULES):
            raise ValueError(f"model is already adapted ({type(module).__name__} at '{path}'); apply the plan to the original model")
    if not inplace:
        model = copy.deepcopy(model)
    keys = conversion.frames
    rewrite_fixed_t(model, conversion.select("fixed_t"), trained_at=conversion.trained_at)
    for site in conversion.select():
        if site.kind == "fixed_t":
            continue
        try:
            original = model.get_submodule(site.path)
        except AttributeError:
            raise ValueError(
                f"the plan converts '{site.path}', which this model does not have; build the architecture the plan was made for"
            ) from None
        if type(original).__name__ != site.original:
            raise ValueError(
                f"the plan expects {site.original} at '{site.path}' but the model has {type(original).__name__}; "
                "build the architecture the plan was made for")
        if site.kind == "norm":
            new = NormBank(original, keys, default_key=conversion.trained_at, site=site.path)
        elif conversion.kernel_size == 1:
            new = WeightAlteration(original, keys, site=site.path)
        else:
            new = ResidualAlteration(original, keys, conversion.kernel_size, site=site.path)
        _replace(model, site.path, new)
    FrameInference(conversion.frame_axis).attach(model)
    model.fan_plan = conversion
    return model


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
    count and each 1x1 alteration folded into its layer's weights. The result has the original
    architecture (same module names, same ``state_dict`` keys) and computes what the adapted
    model computes at ``frames``.

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
    fan_sites = [(p, m) for p, m in model.named_modules() if isinstance(m, FAN_MODULES + TIME_ADAPTERS)]
    blocked = [p for p, m in fan_sites if isinstance(m, ResidualAlteration)]
    if blocked and unfoldable == "error":
        raise NotFoldableError(
            f"{len(blocked)} alteration(s) with kernel_size > 1 (e.g. '{blocked[0]}') cannot be folded into "
            "weights; pass unfoldable='keep' to keep them as one-key modules"
        )
    if not inplace:
        model = copy.deepcopy(model)
    for path, _ in fan_sites:
        module = model.get_submodule(path)
        _replace(model, path, module.specialize(t) if not isinstance(module, TIME_ADAPTERS) else module.specialize(frames=t))
    FrameInference.detach(model)
    del model.fan_plan
    return model


class _Safety:
    """Whether copying a module into a bank keeps the model's meaning: its tensors must not be
    shared with modules outside it, and it must be registered at one path only."""

    def __init__(self, everything: list[tuple[str, nn.Module]]):
        self.tensor_owners: dict[int, set[str]] = defaultdict(set)
        self.paths: dict[int, list[str]] = defaultdict(list)
        for path, module in everything:
            self.paths[id(module)].append(path)
            for tensor in list(module.parameters(recurse=False)) + list(module.buffers(recurse=False)):
                self.tensor_owners[id(tensor)].add(path)

    def problem(self, path: str, module: nn.Module) -> str | None:
        paths = self.paths[id(module)]
        if len(paths) > 1:
            return f"the same module is registered at {len(paths)} paths ({', '.join(repr(p) for p in paths[:3])})"
        for tensor in list(module.parameters()) + list(module.buffers()):
            outside = [p for p in self.tensor_owners[id(tensor)] if p != path and not p.startswith(path + ".")]
            if outside:
                return f"shares a tensor with '{outside[0]}'"
        return None


def _norm_site(path, module, keys, functional, safety) -> Site | None:
    name = type(module).__name__
    rule = rules.norm_rule(module)
    if rule is None and path in functional:
        norm_like = not any(True for _ in module.children()) and all(
            t.dim() <= 1 for t in list(module.parameters()) + list(module.buffers())
        )
        rule = "functional" if norm_like else None
        if rule is None:
            return Site(path, "norm", name, "", UNSUPPORTED, reason=(
                f"calls {functional[path]} inside its forward with its own tensors mixed with others; "
                "move the norm into a module (or fan_convert.register_norm a leaf class)"))
    if rule is None:
        if rules.looks_like_norm(module):
            return Site(path, "norm", name, "", UNSUPPORTED, reason=(
                f"named like a norm but {name} is not a known normalisation type; "
                f"fan_convert.register_norm({name}) banks it"))
        return None
    if rules.is_stateless(module):
        return Site(path, "norm", name, "", SKIPPED, reason="no parameters or running statistics")
    problem = safety.problem(path, module)
    if problem is None and rule == "subclass" and any(True for _ in module.children()):
        problem = f"unregistered subclass of a torch norm with submodules; fan_convert.register_norm({name}) banks it"
    if problem:
        return Site(path, "norm", name, "", UNSUPPORTED, reason=problem)
    extra = (len(keys) - 1) * sum(p.numel() for p in module.parameters())
    note = {"known": "", "subclass": "unregistered subclass of a torch norm, banked by copy",
            "functional": f"custom module calling {functional.get(path)}, banked by copy"}[rule]
    return Site(path, "norm", name, "NormBank", CONVERTED, extra, note)


def _alteration_targets(targets, explicit, candidates, named, analysis, model) -> set[str]:
    if targets is None:
        return set()
    if explicit is not None:
        for pattern in explicit:
            if not any(matches(p, m, pattern) for p, m in candidates):
                hits = [(p, m) for p, m in named if matches(p, m, pattern)]
                if hits:
                    p, m = hits[0]
                    raise ValueError(
                        f"targets pattern {pattern!r} matches only modules that cannot carry a weight alteration "
                        f"(e.g. '{p}': {alterable(m) or 'inside a converted module'}); target convolutions, "
                        "Linear or MultiheadAttention layers")
        return select(candidates, explicit, "targets", [p for p, _ in candidates])
    if targets == "paper":
        found = set(residual_entry_layers(analysis, model)) & {p for p, _ in candidates}
        if not found:
            raise ValueError(
                f"the 'paper' preset found no residual block (analysis: {analysis.mode}); "
                "pass targets=[...] naming the layers to alter, or use targets='default'")
        return found
    return {p for p, m in candidates if rules.is_default_alteration_target(p, m)}


def _alteration_site(path, module, keys, kernel_size, excluded, safety, explicit) -> Site:
    name = type(module).__name__
    becomes = "WeightAlteration" if kernel_size == 1 else "ResidualAlteration"
    if any(matches(path, module, p) for p in excluded):
        return Site(path, "alteration", name, "", SKIPPED, reason="excluded")
    if kernel_size > 1 and not isinstance(module, nn.modules.conv._ConvNd):
        if explicit:
            raise ValueError(
                f"kernel_size={kernel_size} applies to convolutions only, but targets include '{path}' ({name}); "
                "use kernel_size=1 or target convolutions only")
        return Site(path, "alteration", name, "", SKIPPED, reason="kernel_size > 1 applies to convolutions only")
    problem = safety.problem(path, module)
    if problem:
        return Site(path, "alteration", name, "", UNSUPPORTED, reason=problem)
    per_key = input_channels(module) * (kernel_size ** (module.weight.dim() - 2) if kernel_size > 1 else 1)
    return Site(path, "alteration", name, becomes, CONVERTED, len(keys) * per_key)


def _warn_unsupported(conversion: ConversionPlan) -> None:
    by_class: dict[str, list[Site]] = defaultdict(list)
    for site in conversion.select(status=UNSUPPORTED):
        by_class[site.original].append(site)
    for name, sites in by_class.items():
        warnings.warn(
            f"fan_convert: left {len(sites)} {name} module(s) unspecialised (e.g. '{sites[0].path}'): {sites[0].reason}",
            UnsupportedNormWarning if sites[0].kind == "norm" else UserWarning,
            stacklevel=3,
        )


def _describe(targets) -> object:
    if targets is None or isinstance(targets, str):
        return targets
    return [t if isinstance(t, str) else f"type:{t.__module__}.{t.__qualname__}" for t in targets]


def _replace(model: nn.Module, path: str, new: nn.Module) -> None:
    parent_path, _, child = path.rpartition(".")
    setattr(model.get_submodule(parent_path) if parent_path else model, child, new)
