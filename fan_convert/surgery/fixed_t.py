"""Fixed-T sites: modules that bake the training frame count into a model.

A model trained at T frames can hold layers sized to T: a head ``AvgPool3d`` whose temporal
kernel is the number of time steps reaching it (pytorchvideo ResNet/X3D/SlowFast heads,
torchvision S3D), a temporal positional embedding with one entry per temporal patch (MViT), or a
module that stores the frame count and reshapes by it (TSM's ``n_segment``, TSN's
``num_segments``, ``num_frames``). Such a model crashes or mis-computes at any other T, so a
Frame Adaptive Network built from it needs those layers made length-agnostic first.

:func:`find_fixed_t_sites` finds them with the fixed-T rules of the rule table (:mod:`.rules`;
by module type and, given an example clip, by the shapes each pool sees), without changing the
model; :func:`~.rewriter.rewrite_fixed_t` swaps the convertible ones for the layers those rules
build, in place, on their parents::

    sites = find_fixed_t_sites(model, trained_at=8, frames=(4, 8, 16), example_input=clip8)
    rewrite_fixed_t(model, sites, trained_at=8)
    model(clip4); model(clip16)        # the head pools over all of time at any T
"""

from __future__ import annotations

import copy
from contextlib import contextmanager
from typing import Any, Iterator, Sequence

import torch
from torch import nn

from ..clips import fresh
from ..context import check_frame_count
from ..context import clip as declare_clip
from ..errors import describe
from . import rules
from .building import rewrite_sites
from .builtin_rules import FRAME_COUNT_ATTRIBUTES
from .conversion import CONVERTED, FIXED_T, UNSUPPORTED, Site

__all__ = ["FIXED_T", "FRAME_COUNT_ATTRIBUTES", "find_fixed_t_sites", "scale_clip"]


def find_fixed_t_sites(
    model: nn.Module,
    trained_at: int,
    frames: Sequence[int],
    example_input: Any = None,
    *,
    frame_axis: int = 2,
) -> list[Site]:
    """The modules of ``model`` that tie it to ``trained_at`` frames, as plan sites
    (``kind="fixed_t"``, ``params_added=0``), in module order.

    Found by the fixed-T rules of the rule table (user rules first, then the built-in ones):

    - ``AvgPool3d``/``MaxPool3d`` with a temporal kernel > 1 that pool the **whole time axis**
      at ``trained_at``: converted to :class:`~fan_convert.nn.time_pool.AdaptiveTimePool3d`.
      With ``example_input`` this is read from the shapes (forward hooks on the example: the
      pool's input has exactly kernel-size time steps and its output one). Without it, only a
      pool with stride 1 and no padding in every dimension is taken to be one (the heads of the
      pytorchvideo and torchvision zoos); a head pool with another stride, e.g.
      ``AvgPool3d((8, 7, 7))`` with its default stride, is then missed, and a valid stride-1
      pool in the middle of a network would be mistaken for a head, so give an example when you
      can. Pools that slide over time (a stem or downsampling pool) are not sites and are never
      rewritten.
    - the known temporal positional encodings (torchvision MViT ``PositionalEncoding``,
      pytorchvideo ``SpatioTemporalClsPositionalEncoding``): converted to interpolating adapters.
    - any module storing an int frame count in an attribute named like ``num_segments``,
      ``n_segment`` or ``num_frames`` (see :data:`FRAME_COUNT_ATTRIBUTES`): unsupported, since
      its forward reshapes by a number no adapter can change.
    - whatever a user rule (:func:`fan_convert.register_rule`) of kind ``"fixed_t"`` matches.

    With ``example_input`` (a clip, or a list of clips for multi-pathway models, at
    ``trained_at`` frames along ``frame_axis``; for a list, ``trained_at`` is one pathway's
    length and every pathway is scaled by the same factor), the model is also run, with the
    converted sites swapped in, at every other T of ``frames`` (at ``trained_at`` it ran on the
    example, and the adapters are exact there); each module that still fails gets an unsupported
    site naming the frame counts and the error (added to the module's reason when it already has
    an unsupported site). These runs use a private copy of the model (in eval mode, without
    gradients): ``model`` itself is never run, changed or hooked.
    """
    trained_at = check_frame_count(trained_at, "trained_at")
    frames = tuple(check_frame_count(t, "each of frames") for t in ([frames] if isinstance(frames, int) else frames))
    if example_input is not None:
        _check_example(example_input, trained_at, frame_axis)
        model = copy.deepcopy(model)  # observed, rewritten and run below: the caller's model stays as it is
    named = list(model.named_modules(remove_duplicate=False))
    table = rules.rules(FIXED_T)

    observed: dict[int, list[tuple[int, int]]] | None = None
    if example_input is not None:
        observed = _observe(model, named, example_input, [r for r in table if r.observe])

    layers = rules.fan_layer_types(FIXED_T)
    sites = [site for path, module in named if not isinstance(module, layers)
             for site in [_site(path, module, table, trained_at, observed)] if site is not None]
    modules = dict(named)
    for site in sites:  # refuse frame counts a converted site cannot serve, before anything is built
        rule = rules.rule_named(site.rule) if site.status == CONVERTED else None
        if rule is not None and rule.check is not None:
            rule.check(modules[site.path], rules.BuildContext(site.path, frames, trained_at, root=model))

    if example_input is not None:
        unsupported = {s.path: s for s in sites if s.status == UNSUPPORTED}
        for failure in _verify(model, sites, example_input, trained_at, frames, frame_axis):
            known_site = unsupported.get(failure.path)
            if known_site is not None:  # one site per module: add what the run showed to its reason
                known_site.reason += f"; {failure.reason}"
            else:
                sites.append(failure)
    return sites


def scale_clip(example_input: Any, trained_at: int, t: int, frame_axis: int = 2) -> Any:
    """``example_input`` resampled from ``trained_at`` to ``t`` frames: the same shape with T
    replaced (frames picked evenly, repeated when growing). A list of clips (SlowFast) is
    returned as a new list, every pathway scaled by ``t / trained_at``; a pathway that does not
    scale to a whole number of frames raises ValueError."""
    clips = list(example_input) if isinstance(example_input, (list, tuple)) else [example_input]
    scaled = []
    for x in clips:
        old = x.shape[frame_axis]
        if (old * t) % trained_at:
            raise ValueError(f"a pathway of {old} frames does not scale by {t}/{trained_at} to a whole number of frames")
        new = old * t // trained_at
        index = torch.div(torch.arange(new, device=x.device) * old, new, rounding_mode="floor")
        scaled.append(x.index_select(frame_axis, index))
    return scaled if isinstance(example_input, (list, tuple)) else scaled[0]


def _site(path: str, module: nn.Module, table: list[rules.Rule], trained_at: int, observed: dict | None) -> Site | None:
    """The first fixed-T rule's verdict on ``module``: a converted site, an unsupported one, or
    None (no rule applies). A subclass of a class an exact rule converts is reported, not converted."""
    for rule in table:
        if rule.applies_to(module):
            if rule.find is not None:
                site = rule.find(path, module, trained_at, observed)
                if site is None:
                    continue
                return site
            status, becomes = (CONVERTED, rule.layer.__name__) if rule.layer is not None else (UNSUPPORTED, "")
            return Site(path, FIXED_T, type(module).__name__, becomes, status, 0, rule.describe(module), rule=rule.name)
        if rule.layer is not None and not rule.subclasses and isinstance(module, rule.types()):
            base = next(t for t in rule.types() if isinstance(module, t)).__name__
            note = rule.describe(module)
            return Site(path, FIXED_T, type(module).__name__, "", UNSUPPORTED, 0, (
                f"subclass of {base}{' (' + note + ')' if note else ''}; its forward may differ from the class "
                f"{rule.layer.__name__} reimplements, so it was left alone and needs the trained clip length"),
                rule=rule.name)
    return None


def _check_example(example_input: Any, trained_at: int, frame_axis: int) -> None:
    clips = list(example_input) if isinstance(example_input, (list, tuple)) else [example_input]
    if not clips or not all(isinstance(c, torch.Tensor) and c.dim() > frame_axis for c in clips):
        raise TypeError(
            f"example_input must be a clip tensor or a list of clip tensors with a frame axis {frame_axis}, "
            f"got {type(example_input).__name__}")
    lengths = [int(c.shape[frame_axis]) for c in clips]
    if trained_at not in lengths:
        raise ValueError(
            f"example_input has {lengths} frames along axis {frame_axis}, none of them trained_at={trained_at}: "
            "give a clip at the trained frame count (for several pathways, trained_at is one pathway's length)")


@contextmanager
def _inference(model: nn.Module) -> Iterator[None]:
    """Eval mode and no gradients for the body; every module's training flag restored after."""
    flags = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        with torch.no_grad():
            yield
    finally:
        for module, flag in flags:
            module.training = flag


def _observe(model: nn.Module, named: list[tuple[str, nn.Module]], example_input: Any,
             observing: list[rules.Rule]) -> dict[int, list[tuple[int, int]]]:
    """(input T, output T) of every call, on the example, of each module an observing rule applies to."""
    observed: dict[int, list[tuple[int, int]]] = {}

    def record(module: nn.Module, args: tuple, output: Any) -> None:
        x, y = args[0], output[0] if isinstance(output, tuple) else output
        observed.setdefault(id(module), []).append((int(x.shape[-3]), int(y.shape[-3])))

    watched = {id(m): m for _, m in named if any(r.applies_to(m) for r in observing)}
    handles = [m.register_forward_hook(record) for m in watched.values()]
    try:
        with _inference(model):
            model(fresh(example_input))
    except Exception as err:
        raise ValueError(f"the model does not run on example_input: {describe(err, limit=300)}") from err
    finally:
        for handle in handles:
            handle.remove()
    return observed


def _verify(model, sites, example_input, trained_at, frames, frame_axis) -> list[Site]:
    """Rewrite the converted sites of ``model`` (a private copy) and run it at every T of
    ``frames``; one unsupported site per module that fails (the innermost module running when
    it raised)."""
    converted = [s for s in sites if s.status == CONVERTED and s.path]
    classes = {p: type(m).__name__ for p, m in model.named_modules(remove_duplicate=False)}
    failures: dict[str, list] = {}  # path -> [frame counts, first error]
    rewrite_sites(model, converted, trained_at=trained_at)
    paths: dict[int, str] = {}
    for path, module in model.named_modules():
        paths.setdefault(id(module), path)
    stack: list[str] = []  # modules running now, outermost first: the last one raised

    def enter(module: nn.Module, args: tuple) -> None:
        stack.append(paths[id(module)])

    def leave(module: nn.Module, args: tuple, output: Any) -> None:
        if stack:
            stack.pop()

    for module in {id(m): m for _, m in model.named_modules()}.values():
        module.register_forward_pre_hook(enter)
        module.register_forward_hook(leave)
    for t in frames:
        if t == trained_at:
            continue  # it ran on the example, and every adapter is exact at the trained length
        stack.clear()
        try:
            clip = scale_clip(example_input, trained_at, t, frame_axis)
        except ValueError as err:
            failures.setdefault("", [[], str(err)])[0].append(t)
            continue
        try:
            with _inference(model), declare_clip(_clip_length(clip, frame_axis)):  # as an adapted root would
                model(fresh(clip))
        except Exception as err:
            culprit = stack[-1] if stack else ""
            failures.setdefault(culprit, [[], describe(err, limit=300)])[0].append(t)
    found = []
    for path, (ts, message) in failures.items():
        which = ", ".join(map(str, ts))
        found.append(Site(path, FIXED_T, classes.get(path, type(model).__name__), "", UNSUPPORTED, 0, (
            f"the model still fails at T={which} after rewriting its fixed-T sites: {message}")))
    return found


def _clip_length(example_input: Any, frame_axis: int) -> int:
    clips = list(example_input) if isinstance(example_input, (list, tuple)) else [example_input]
    return max(int(c.shape[frame_axis]) for c in clips)
