"""The active frame count T, and how a frame-keyed module picks its sub-network.

There is exactly one source of truth for T at run time, read by every frame-keyed module:

1. an explicit selection, ``with fan_convert.frames(8): model(x)``, wins;
2. otherwise the frame count inferred from the input of the adapted model's root
   (``x.shape[2]`` for a ``(B, C, T, H, W)`` clip; the largest T for a list of clips,
   e.g. SlowFast's fast pathway);
3. otherwise there is none, and a module with more than one key raises an error.

A module trained at keys ``K`` serves any T with the nearest key; on a tie, the higher key
(trained at 4/8/16: T=6 uses 8, T=12 uses 16, T=2 uses 4, T=20 uses 16).

State lives in :mod:`contextvars`, so two models, two threads or two asyncio tasks never
see each other's selection.
"""

from __future__ import annotations

from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any, Iterator, Sequence

import torch

_explicit: ContextVar[int | None] = ContextVar("fan_convert_explicit_frames", default=None)
# One entry per adapted model currently running in this context (models can nest).
_inferred: ContextVar[tuple[int | None, ...]] = ContextVar("fan_convert_inferred_frames", default=())


class NoActiveFrames(RuntimeError):
    """A frame-keyed module ran without an active frame count."""


def check_frame_count(t: Any, what: str = "frame count") -> int:
    """Return ``t`` as an int, or raise a ValueError if it is not a positive integer. A symbolic
    size (``torch.SymInt``, while torch.export traces a dynamic frame axis) is returned as it is:
    ``int()`` on it would fix the traced graph to one frame count."""
    if isinstance(t, torch.SymInt):
        return t  # type: ignore[return-value]
    if isinstance(t, bool) or not isinstance(t, int) or t <= 0:
        raise ValueError(f"{what} must be a positive integer, got {t!r}")
    return t


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


@contextmanager
def frames(t: int) -> Iterator[int]:
    """Select the sub-network for ``t`` frames inside the block.

    Example::

        with fan_convert.frames(8):
            logits = model(clip)   # every norm bank and alteration uses key nearest to 8
    """
    token = _explicit.set(check_frame_count(t))
    try:
        yield t
    finally:
        _explicit.reset(token)


def active_frames() -> int | None:
    """The frame count in force here, or None when nothing selected or inferred one.

    Example::

        with fan_convert.frames(8):
            fan_convert.active_frames()   # 8
    """
    explicit = _explicit.get()
    if explicit is not None:
        return explicit
    for t in reversed(_inferred.get()):
        if t is not None:
            return t
    return None


def clip_frames() -> int | None:
    """The number of frames actually in the running clip, for temporal operations (shifts,
    temporal pooling, reshapes of folded frames): the innermost count inferred from an input or
    declared with :func:`clip`, else the explicit selection. Unlike :func:`active_frames`, an
    explicit ``frames(8)`` around a 16-frame clip does not change it.

    Example::

        with fan_convert.frames(8), clip(16):
            clip_frames(), active_frames()   # (16, 8): 16 frames run, on the key nearest to 8
    """
    for t in reversed(_inferred.get()):
        if t is not None:
            return t
    return _explicit.get()


@contextmanager
def clip(t: int) -> Iterator[int]:
    """Declare that the code inside runs on clips of ``t`` frames (used by video wrappers that
    fold frames into the batch). Also selects the sub-network unless ``frames()`` chose one.

    Example::

        with clip(x.shape[1]):                    # x: (B, T, C, H, W)
            features = backbone(x.flatten(0, 1))  # (B*T, C, H, W): T is no longer in the shape
    """
    check_frame_count(t, "clip length")
    _inferred.set(_inferred.get() + (t,))
    try:
        yield t
    finally:
        _inferred.set(_inferred.get()[:-1])


def nearest_key(t: int, keys: Sequence[int]) -> int:
    """The trained key serving ``t`` frames: the nearest one, the higher one on a tie.

    Example::

        fan_convert.nearest_key(6, (4, 8, 16))    # 8 (a tie goes to the higher key)
        fan_convert.nearest_key(20, (4, 8, 16))   # 16
    """
    if not keys:
        raise ValueError("no trained frame counts to choose from")
    return min(keys, key=lambda k: (abs(k - t), -k))


def select_key(keys: Sequence[int], site: str = "") -> int:
    """The key a module with ``keys`` uses now. A single key needs no active frame count.

    Example::

        with fan_convert.frames(6):
            key = select_key((4, 8, 16), site="layer1.0.bn1")   # 8
    """
    if len(keys) == 1:
        return keys[0]
    t = active_frames()
    if t is None:
        where = f" for '{site}'" if site else ""
        raise NoActiveFrames(
            f"no active frame count{where}: call the model on a (B, C, T, H, W) clip "
            "or select one with `with fan_convert.frames(T): ...`"
        )
    return nearest_key(t, keys)


def infer_frames(args: tuple, kwargs: dict, frame_axis: int = 2) -> int | None:
    """T from a model's inputs: the ``frame_axis`` size of the first 5-D tensor argument,
    or the largest one for a list/tuple of 5-D tensors (multi-pathway models).

    Example::

        infer_frames((torch.randn(2, 3, 8, 112, 112),), {})   # 8
        infer_frames(([slow, fast],), {})                     # fast.shape[2], the larger T
    """
    first = args[0] if args else next(iter(kwargs.values()), None)
    clips = list(first) if isinstance(first, (list, tuple)) else [first]
    sizes = [c.shape[frame_axis] for c in clips if isinstance(c, torch.Tensor) and c.dim() == 5]
    return max(sizes) if sizes else None


# Keyword inputs that are (B, T, C, H, W) clips by convention (transformers video models).
VIDEO_KEYWORDS = ("pixel_values", "pixel_values_videos")


def model_frames(module: torch.nn.Module, args: tuple, kwargs: dict, frame_axis: int = 2) -> int | None:
    """T from the inputs of a call of ``module``: a ``pixel_values``/``pixel_values_videos`` clip
    (by keyword, or positionally for a model whose ``main_input_name`` is one of them) is
    ``(B, T, C, H, W)``; anything else goes to :func:`infer_frames` with ``frame_axis``.

    Example::

        model_frames(videomae, (), {"pixel_values": torch.randn(2, 8, 3, 224, 224)})   # 8
    """
    for name in VIDEO_KEYWORDS:
        clip = kwargs.get(name)
        if isinstance(clip, torch.Tensor) and clip.dim() == 5:
            return clip.shape[1]
    if getattr(module, "main_input_name", None) in VIDEO_KEYWORDS:
        return infer_frames(args, {}, 1)
    return infer_frames(args, kwargs, frame_axis)


class FrameInference:
    """Forward hooks on an adapted model's root: infer T from the input for the call's duration.

    A pair of hooks (not a patched ``forward``) so the model keeps its class, its user hooks
    and its ``torch.compile``/``state_dict`` behaviour. ``always_call`` on the exit hook
    restores the context even when the forward raises.

    Example::

        FrameInference(frame_axis=2).attach(model)   # model(clip) now runs at T = clip.shape[2]
        FrameInference.detach(model)                 # remove the hooks again
    """

    def __init__(self, frame_axis: int = 2):
        self.frame_axis = frame_axis

    def enter(self, module: torch.nn.Module, args: tuple, kwargs: dict) -> None:
        _inferred.set(_inferred.get() + (model_frames(module, args, kwargs, self.frame_axis),))

    def exit(self, module: torch.nn.Module, args: tuple, output: Any) -> None:
        stack = _inferred.get()
        if stack:
            _inferred.set(stack[:-1])

    def attach(self, model: torch.nn.Module) -> None:
        model.register_forward_pre_hook(self.enter, with_kwargs=True)
        model.register_forward_hook(self.exit, always_call=True)

    @staticmethod
    def detach(model: torch.nn.Module) -> None:
        """Remove every FrameInference hook from ``model``."""
        for hooks in (model._forward_pre_hooks, model._forward_hooks):
            for handle_id, hook in list(hooks.items()):
                if isinstance(getattr(hook, "__self__", None), FrameInference):
                    del hooks[handle_id]
                    model._forward_hooks_always_called.pop(handle_id, None)
                    model._forward_pre_hooks_with_kwargs.pop(handle_id, None)
