"""Fixed-T sites: modules that bake the training frame count into a model.

A model trained at T frames can hold layers sized to T: a head ``AvgPool3d`` whose temporal
kernel is the number of time steps reaching it (pytorchvideo ResNet/X3D/SlowFast heads,
torchvision S3D), a temporal positional embedding with one entry per temporal patch (MViT), or a
module that stores the frame count and reshapes by it (TSM's ``n_segment``, TSN's
``num_segments``, ``num_frames``). Such a model crashes or mis-computes at any other T, so a
Frame Adaptive Network built from it needs those layers made length-agnostic first.

:func:`find_fixed_t_sites` finds them (by module type and, given an example clip, by the shapes
each pool sees) and :func:`rewrite_fixed_t` swaps the convertible ones for the adapters of
:mod:`fan_convert.nn.time_adapters`, in place, on their parents::

    sites = find_fixed_t_sites(model, trained_at=8, frames=(4, 8, 16), example_input=clip8)
    rewrite_fixed_t(model, sites, trained_at=8)
    model(clip4); model(clip16)        # the head pools over all of time at any T
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Any, Iterator, Sequence

import torch
from torch import nn

from ..context import check_frame_count
from ..nn.time_adapters import (
    AdaptiveTimePool3d,
    TemporalPositionAdapter,
    known_position_encodings,
    time_adapter_for,
)
from .plan import CONVERTED, UNSUPPORTED, Site

__all__ = ["FIXED_T", "FRAME_COUNT_ATTRIBUTES", "find_fixed_t_sites", "rewrite_fixed_t", "scale_clip"]

FIXED_T = "fixed_t"

# Instance attributes that, holding an int, store a frame count fixed at construction.
FRAME_COUNT_ATTRIBUTES = (
    "num_segments", "num_segment", "n_segment", "n_segments", "num_frames", "n_frames", "nframes",
    "clip_len", "clip_length", "temporal_size", "num_temporal_patch",
)

_ADAPTERS = (AdaptiveTimePool3d, TemporalPositionAdapter)
_POOLS = (nn.AvgPool3d, nn.MaxPool3d)


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

    Found by type:

    - ``AvgPool3d``/``MaxPool3d`` with a temporal kernel > 1 that pool the **whole time axis**
      at ``trained_at``: converted to :class:`~fan_convert.nn.time_adapters.AdaptiveTimePool3d`.
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

    With ``example_input`` (a clip, or a list of clips for multi-pathway models, at
    ``trained_at`` frames along ``frame_axis``; for a list, ``trained_at`` is one pathway's
    length and every pathway is scaled by the same factor), the model is also run, with the
    converted sites swapped in, at every other T of ``frames`` (at ``trained_at`` it ran on the
    example, and the adapters are exact there); each module that still fails gets an unsupported
    site naming the frame counts and the error (added to the module's reason when it already has
    an unsupported site). The model is left unchanged (it is
    run in eval mode without gradients, then given back its modules and training flags).
    """
    trained_at = check_frame_count(trained_at, "trained_at")
    frames = tuple(check_frame_count(t, "each of frames") for t in ([frames] if isinstance(frames, int) else frames))
    known = known_position_encodings()
    named = list(model.named_modules(remove_duplicate=False))

    observed: dict[int, list[tuple[int, int]]] | None = None
    if example_input is not None:
        _check_example(example_input, trained_at, frame_axis)
        observed = _observe_pools(model, named, example_input)

    sites: list[Site] = []
    for path, module in named:
        if isinstance(module, _ADAPTERS):
            continue
        site = None
        if isinstance(module, _POOLS):
            site = _pool_site(path, module, trained_at, observed)
        elif type(module) in known:
            site = Site(path, FIXED_T, type(module).__name__, known[type(module)].__name__, CONVERTED, 0, (
                f"temporal positional embedding for {_temporal_len(module)} temporal patches; interpolated linearly "
                "to the patches of each input (identical at the trained length)"))
        elif isinstance(module, tuple(known)):
            site = Site(path, FIXED_T, type(module).__name__, "", UNSUPPORTED, 0, (
                f"subclass of {next(k.__name__ for k in known if isinstance(module, k))} with a temporal positional "
                f"embedding for {_temporal_len(module)} temporal patches; its forward may differ from the class the "
                "adapter reimplements, so it was left alone and needs the trained clip length"))
        if site is None:
            site = _attribute_site(path, module)
        if site is not None:
            sites.append(site)

    if example_input is not None:
        unsupported = {s.path: s for s in sites if s.status == UNSUPPORTED}
        for failure in _verify(model, sites, example_input, trained_at, frames, frame_axis):
            known_site = unsupported.get(failure.path)
            if known_site is not None:  # one site per module: add what the run showed to its reason
                known_site.reason += f"; {failure.reason}"
            else:
                sites.append(failure)
    return sites


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
        if site.kind != FIXED_T or site.status != CONVERTED:
            continue
        module = model.get_submodule(site.path)
        if isinstance(module, _ADAPTERS):
            continue
        if not site.path:
            raise ValueError("a fixed-T site at the model's root cannot be swapped on a parent")
        if type(module).__name__ != site.original:
            raise ValueError(
                f"'{site.path}' holds a {type(module).__name__}, but the site was found on a {site.original}; "
                "find the sites again on this model")
        _replace(model, site.path, time_adapter_for(module, trained_frames=trained_at))


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


def _temporal_len(module: nn.Module) -> int:
    for name in ("num_temporal_patch", "temporal_size"):
        value = getattr(module, name, None)
        if isinstance(value, int):
            return value
    return -1


def _pool_site(path: str, pool: nn.Module, trained_at: int, observed: dict | None) -> Site | None:
    kernel, stride, padding = (_first(getattr(pool, a)) for a in ("kernel_size", "stride", "padding"))
    dilation = _first(getattr(pool, "dilation", 1))
    stride = kernel if stride is None else stride
    if kernel <= 1:
        return None
    name = type(pool).__name__
    if observed is None:  # no shapes: only the unmistakable configuration of a head pool
        strides, paddings = (_triple(getattr(pool, a)) for a in ("stride", "padding"))
        if strides != (1, 1, 1) or paddings != (0, 0, 0) or dilation != 1:
            return None
        how = (f"temporal kernel {kernel}, stride 1, no padding: taken to pool the whole time axis at {trained_at} frames "
               "(pass example_input to confirm from shapes)")
    else:
        calls = observed.get(id(pool), [])
        if not calls:
            return None  # not run on the example: nothing to say about its time axis
        if not all(t_in == (kernel - 1) * dilation + 1 and t_out == 1 for t_in, t_out in calls):
            return None  # slides over time (or keeps several steps): works at any T long enough
        if padding != 0 or dilation != 1:
            return Site(path, FIXED_T, name, "", UNSUPPORTED, 0, (
                f"pools all {calls[0][0]} time steps at {trained_at} frames, but with temporal "
                f"{'padding ' + str(padding) if padding else 'dilation ' + str(dilation)}, which has no adaptive "
                "equivalent; the model needs its trained clip length"))
        how = f"pools all {calls[0][0]} time steps at {trained_at} frames (temporal kernel {kernel})"
    if type(pool) not in _POOLS:
        return Site(path, FIXED_T, name, "", UNSUPPORTED, 0, (
            f"{how}, but {name} subclasses {type(pool).__mro__[1].__name__} and may have its own forward; "
            "replace it with a pool that is adaptive over time (e.g. AdaptiveTimePool3d) yourself"))
    return Site(path, FIXED_T, name, AdaptiveTimePool3d.__name__, CONVERTED, 0,
                f"{how}; becomes adaptive over time, spatial kernel kept")


def _attribute_site(path: str, module: nn.Module) -> Site | None:
    found = [(a, v) for a, v in vars(module).items()
             if a in FRAME_COUNT_ATTRIBUTES and isinstance(v, int) and not isinstance(v, bool)]
    if not found:
        return None
    stored = ", ".join(f"{a}={v}" for a, v in found)
    return Site(path, FIXED_T, type(module).__name__, "", UNSUPPORTED, 0, (
        f"stores {stored}, a frame count fixed at construction: code that reshapes or indexes by it crashes or "
        "silently mis-computes at other frame counts; make the module read T from its input (x.shape, or "
        "fan_convert.context.clip_frames() for frames folded into the batch) before converting"))


def _first(value: Any) -> int:
    return int(value[0]) if isinstance(value, (tuple, list)) else int(value)


def _triple(value: Any) -> tuple[int, ...]:
    return tuple(int(v) for v in value) if isinstance(value, (tuple, list)) else (int(value),) * 3


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


def _fresh(example_input: Any) -> Any:
    return list(example_input) if isinstance(example_input, (list, tuple)) else example_input  # SlowFast edits lists


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


def _observe_pools(model: nn.Module, named: list[tuple[str, nn.Module]], example_input: Any) -> dict[int, list[tuple[int, int]]]:
    """(input T, output T) of every call of each 3D pool with a temporal kernel > 1, on the example."""
    observed: dict[int, list[tuple[int, int]]] = {}

    def record(module: nn.Module, args: tuple, output: Any) -> None:
        x, y = args[0], output[0] if isinstance(output, tuple) else output
        observed.setdefault(id(module), []).append((int(x.shape[-3]), int(y.shape[-3])))

    pools = {id(m): m for _, m in named if isinstance(m, _POOLS) and _first(m.kernel_size) > 1}
    handles = [m.register_forward_hook(record) for m in pools.values()]
    try:
        with _inference(model):
            model(_fresh(example_input))
    except Exception as err:
        raise ValueError(f"the model does not run on example_input: {type(err).__name__}: {_first_line(err)}") from err
    finally:
        for handle in handles:
            handle.remove()
    return observed


def _verify(model, sites, example_input, trained_at, frames, frame_axis) -> list[Site]:
    """Run the model with the converted sites swapped in at every T of ``frames``; one
    unsupported site per module that fails (the innermost module running when it raised)."""
    converted = [s for s in sites if s.status == CONVERTED and s.path]
    originals = {s.path: model.get_submodule(s.path) for s in converted}
    classes = {p: type(m).__name__ for p, m in model.named_modules(remove_duplicate=False)}
    failures: dict[str, list] = {}  # path -> [frame counts, first error]
    try:
        rewrite_fixed_t(model, converted, trained_at=trained_at)
        paths: dict[int, str] = {}
        for path, module in model.named_modules():
            paths.setdefault(id(module), path)
        stack: list[str] = []  # modules running now, outermost first: the last one raised

        def enter(module: nn.Module, args: tuple) -> None:
            stack.append(paths[id(module)])

        def leave(module: nn.Module, args: tuple, output: Any) -> None:
            if stack:
                stack.pop()

        handles = []
        for module in {id(m): m for _, m in model.named_modules()}.values():
            handles.append(module.register_forward_pre_hook(enter))
            handles.append(module.register_forward_hook(leave))
        try:
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
                    with _inference(model):
                        model(_fresh(clip))
                except Exception as err:
                    culprit = stack[-1] if stack else ""
                    failures.setdefault(culprit, [[], f"{type(err).__name__}: {_first_line(err)}"])[0].append(t)
        finally:
            for handle in handles:
                handle.remove()
    finally:
        for path, module in originals.items():
            _replace(model, path, module)
    found = []
    for path, (ts, message) in failures.items():
        which = ", ".join(map(str, ts))
        found.append(Site(path, FIXED_T, classes.get(path, type(model).__name__), "", UNSUPPORTED, 0, (
            f"the model still fails at T={which} after rewriting its fixed-T sites: {message}")))
    return found


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return (text.splitlines()[0] if text else "")[:300]


def _replace(model: nn.Module, path: str, new: nn.Module) -> None:
    parent_path, _, child = path.rpartition(".")
    setattr(model.get_submodule(parent_path) if parent_path else model, child, new)
