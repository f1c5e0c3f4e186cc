"""Planning: decide, without changing the model, what each module becomes (the analyse -> plan
half of a conversion). Sites are found by walking the module tree (and, for the ``"paper"``
preset and functional norms, the torch.fx graph); what each becomes comes from the rule table
(:mod:`.rules`); whether a copy is safe is :class:`_Safety`'s call."""

from __future__ import annotations

import warnings
from collections import defaultdict
from typing import Any, Sequence

from torch import nn

from ..context import check_frame_count, check_frames
from ..nn.alteration import alterable, input_channels
from ..nn.counting import count_parameters
from . import rules
from .analyze import analyze, functional_norm_calls, residual_entry_layers
from .building import check_not_adapted
from .builtin_rules import is_default_alteration_target, is_stateless, looks_like_norm
from .conversion import ALTERATION, CONVERTED, NORM, SKIPPED, UNSUPPORTED, ConversionPlan, Site
from .fixed_t import find_fixed_t_sites
from .patterns import Pattern, check_patterns, matches, select

__all__ = ["plan", "UnsupportedNormWarning", "PRESETS"]

PRESETS = ("default", "paper")


class UnsupportedNormWarning(UserWarning):
    """A normalisation-like module was left unspecialised."""


def plan(
    model: nn.Module,
    frames: Sequence[int] = (4, 8, 16),
    *,
    targets: str | Sequence[Pattern] | None = "default",
    exclude: Sequence[Pattern] | None = None,
    norms: bool = True,
    kernel_size: int = 1,
    trained_at: int | None = None,
    frame_axis: int | None = None,
    example_input: Any = None,
) -> ConversionPlan:
    """What :func:`adapt` would do to ``model``, without changing it (a dry run).

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
        trained_at: the frame count the checkpoint was trained at (default: the clip length a
            transformers config records, else the largest key);
            its key answers attribute reads such as ``norm.weight`` outside a forward.
        frame_axis: where T sits in a 5-D input clip, for automatic frame inference (default: 1
            for transformers video models, which take (B, T, C, H, W), else 2).
        example_input: a clip (or list of clips) at ``trained_at`` frames. Optional: with it,
            fixed-T sites (temporal pooling sized to the training clip, temporal position
            embeddings) are confirmed from the shapes and the rewritten model is run at every
            key; without it they are recognised by type.

    Example::

        conversion = fan_convert.plan(model, frames=(4, 8, 16))
        print(conversion)                              # counts, added parameters, unsupported sites
        print(len(conversion.select("norm")), conversion.params_added)
    """
    keys = check_frames(frames)
    implied = rules.model_defaults(model)  # e.g. a transformers config records its training clip
    assumed = trained_at is None and not implied.get("trained_at")
    if trained_at is None:
        trained_at = implied.get("trained_at") or keys[-1]
    trained_at = check_frame_count(trained_at, "trained_at")
    if frame_axis is None:
        frame_axis = implied.get("frame_axis", 2)
    if isinstance(kernel_size, bool) or not isinstance(kernel_size, int) or kernel_size < 1 or kernel_size % 2 == 0:
        raise ValueError(f"kernel_size must be an odd positive integer, got {kernel_size!r}")
    if isinstance(targets, str) and targets not in PRESETS:
        targets = [targets]
    excluded = check_patterns(exclude, "exclude")
    explicit = None if targets is None or isinstance(targets, str) else check_patterns(targets, "targets")

    check_not_adapted(model, "adapt")
    everything = list(model.named_modules(remove_duplicate=False))
    named = [(p, m) for p, m in everything if p]
    if excluded:
        select(named, excluded, "exclude", [p for p, _ in named])
    analysis = analyze(model)
    safety = _Safety(everything)
    functional = functional_norm_calls(analysis)

    result = ConversionPlan(
        frames=keys, trained_at=trained_at, targets=_describe(targets), kernel_size=kernel_size,
        frame_axis=frame_axis, analysis=analysis.mode,
        params_before=count_parameters(model), trace_failures=dict(analysis.failures),
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
    if assumed and example_input is None:
        _warn_assumed_clip_length(result)
    position = {p: i for i, (p, _) in enumerate(everything)}
    result.sites.sort(key=lambda s: position.get(s.path, -1))
    _warn_unsupported(result)
    return result


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
    rule = rules.match(module, NORM)
    if rule is None and path in functional:
        norm_like = not any(True for _ in module.children()) and all(
            t.dim() <= 1 for t in list(module.parameters()) + list(module.buffers())
        )
        rule = rules.rule_named("norm.functional") if norm_like else None
        if rule is None:
            return Site(path, "norm", name, "", UNSUPPORTED, reason=(
                f"calls {functional[path]} inside its forward with its own tensors mixed with others; "
                "move the norm into a module (or fan_convert.register_norm a leaf class)"))
    if rule is None:
        if looks_like_norm(module):
            return Site(path, "norm", name, "", UNSUPPORTED, reason=(
                f"named like a norm but {name} is not a known normalisation type; "
                f"fan_convert.register_norm({name}) banks it"))
        return None
    if is_stateless(module):
        return Site(path, NORM, name, "", SKIPPED, reason="no parameters or running statistics", rule=rule.name)
    problem = safety.problem(path, module)
    if problem is None and rule.name == "norm.subclass" and any(True for _ in module.children()):
        problem = f"unregistered subclass of a torch norm with submodules; fan_convert.register_norm({name}) banks it"
    if problem:
        return Site(path, NORM, name, "", UNSUPPORTED, reason=problem, rule=rule.name)
    extra = (len(keys) - 1) * count_parameters(module)
    note = f"custom module calling {functional.get(path)}, banked by copy" if rule.name == "norm.functional" else rule.describe(module)
    return Site(path, NORM, name, rule.layer.__name__, CONVERTED, extra, note, rule=rule.name)


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
    return {p for p, m in candidates if is_default_alteration_target(p, m)}


def _alteration_site(path, module, keys, kernel_size, excluded, safety, explicit) -> Site:
    name = type(module).__name__
    rule = rules.rule_named("alteration.weight" if kernel_size == 1 else "alteration.residual")
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
    return Site(path, ALTERATION, name, rule.layer.__name__, CONVERTED, len(keys) * per_key, rule=rule.name)


def _warn_assumed_clip_length(conversion: ConversionPlan) -> None:
    """A head pool sized to the training clip, read against a trained_at nobody gave: say so."""
    pools = [s for s in conversion.select("fixed_t", status=CONVERTED) if s.rule == "fixed_t.time_pool"]
    if pools:
        warnings.warn(
            f"fan_convert: '{pools[0].path}' pools a fixed number of time steps, taken to be the whole clip at "
            f"trained_at={conversion.trained_at}, the largest key, since neither trained_at nor example_input was given; "
            "if the checkpoint was trained at another clip length (e.g. X3D-XS: 4 frames), pass trained_at= (--trained-at) "
            "or every sub-network pools the wrong number of steps", UserWarning, stacklevel=3)


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
