"""Frame-following stand-ins for library modules that read a frame count fixed at construction:
the one family of fixed-T layers that replace a library's module (the head pool,
:mod:`.time_pool`, is rebuilt from its settings instead).

Some library modules (``transformers`` video models) keep the training clip length in a
table, a parameter or their config and read it in a ``forward`` we do not own. The adapters
here *are* instances of the class they replace (a subclass made per class, cached): they hold
the very same parameters, buffers and children under the same names, run the library's own
``forward``, and only change what that forward reads about time (a ``config`` whose
``num_frames`` is the running clip's, an embedding resampled to it). So at the training
length they compute exactly what the original computed, and ``specialize(frames=T)`` gives
back a plain instance of the original class built for T.

The running clip length is the module's own input's for adapters whose wrapped forward takes
the clip (``pixel_values``, ``(B, T, C, H, W)``) or its shape (``input_shape``); otherwise
:func:`fan_convert.context.clip_frames` (inferred from the model's input by the adapted model's
root); without one, the training length.

When given the model's shared config (``config=``), specialising to T also writes T into its
frame-count field, so the specialised model's config describes the clip it now takes (and a
``save_pretrained`` of it rebuilds it).
"""

from __future__ import annotations

import inspect
from typing import Any

import torch
from torch import nn

from ..context import clip, clip_frames
from .frame_units import FrameUnits

__all__ = ["FrameFollowing", "frame_field"]

_subclasses: dict[tuple, type] = {}
_parameters: dict[type, list[str]] = {}
_FRAME_FIELDS = ("num_frames", "frames_per_clip")


def _forward_parameters(cls: type) -> list[str]:
    if cls not in _parameters:
        try:
            _parameters[cls] = list(inspect.signature(cls.forward).parameters)[1:]
        except (TypeError, ValueError):
            _parameters[cls] = []
    return _parameters[cls]


def frame_field(config: Any) -> str | None:
    """The name of the config field holding the training clip length (``num_frames``, or
    V-JEPA 2's ``frames_per_clip``), or None."""
    for name in _FRAME_FIELDS:
        value = getattr(config, name, None)
        if isinstance(value, int) and not isinstance(value, bool):
            return name
    return None


def _subclass(mixin: type, base: type, follow: tuple[str, ...]) -> type:
    """``mixin`` over ``base``, with a property per name in ``follow`` (one class per combination)."""
    kind = _subclasses.get((mixin, base, follow))
    if kind is None:
        namespace = {name: property(lambda self, name=name: self.following(name)) for name in follow}
        kind = type(f"{mixin.__name__}[{base.__name__}]", (mixin, base), {"__module__": mixin.__module__, **namespace})
        _subclasses[(mixin, base, follow)] = kind
    return kind


def _remake(mixin: type, base: type, follow: tuple[str, ...]) -> nn.Module:
    return object.__new__(_subclass(mixin, base, follow))


class FrameFollowing(FrameUnits, nn.Module):
    """Base of the adapters that subclass the module they replace (see the module docstring).

    Subclasses set ``frame_unit`` (clip frames per time step of the module, e.g. the tubelet
    size) through :meth:`adopt` and implement :meth:`_specialize_into`.
    """

    _ADAPTER_KEYS = ("original_class", "trained_len", "trained_frames", "frame_unit", "_fan_config", "_fan_field")

    @classmethod
    def adopt(cls, module: nn.Module, trained_frames: int | None, *, frame_unit: int = 1, trained_len: int | None = None,
              config: Any = None, follow: tuple[str, ...] = (), **settings):
        """The adapter standing in for ``module``: an instance of ``module``'s class (made into a
        subclass of ``cls``) sharing its parameters, buffers and children. ``module`` itself is
        left unchanged. Reads of each attribute named in ``follow`` return
        ``self.following(name)`` (the value for the running clip).

        ``trained_len``: the module's own time steps at training, when they are not
        ``trained_frames / frame_unit`` (a positional embedding behind a temporal patch stride);
        ``trained_frames`` may then be None (unknown: ``specialize`` needs ``length=``)."""
        base = type(module)
        if isinstance(module, FrameFollowing):
            raise TypeError(f"{base.__name__} is already a frame-following adapter")
        if trained_len is None:
            trained_len = int(trained_frames) // int(frame_unit)
        elif trained_frames is not None:
            frame_unit = max(1, int(trained_frames) // int(trained_len))
        adapter = object.__new__(_subclass(cls, base, follow))
        adapter.__dict__.update({k: (v.copy() if isinstance(v, dict) else v) for k, v in module.__dict__.items()})
        extra = {
            "original_class": base, "trained_frames": None if trained_frames is None else int(trained_frames),
            "frame_unit": int(frame_unit), "trained_len": int(trained_len), "_fan_config": config,
            "_fan_field": frame_field(config) if config is not None else None,
        }
        for key, value in {**extra, **settings}.items():
            adapter.__dict__[key] = value
        adapter.__dict__["_adapter_keys"] = tuple(extra) + tuple(settings) + ("_adapter_keys", "_follow")
        adapter.__dict__["_follow"] = follow
        return adapter

    def __reduce_ex__(self, protocol):
        # The class is made at run time: pickle (torch.save of a whole model) names how to remake it.
        mixin = next(c for c in type(self).__mro__[1:] if issubclass(c, FrameFollowing))
        return _remake, (mixin, self.original_class, self._follow), self.__dict__

    reads_input_frames = False  # True: the wrapped forward takes the clip as (B, T, C, H, W) or its shape

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        t = self._input_frames(args, kwargs) if self.reads_input_frames else None
        if t is None:
            return super().forward(*args, **kwargs)
        with clip(t):  # the module's own input says how long the clip is
            return super().forward(*args, **kwargs)

    def _input_frames(self, args: tuple, kwargs: dict) -> int | torch.SymInt | None:
        """T from this module's input when its forward takes the clip (``pixel_values*``, as
        ``(B, T, C, H, W)``) or the clip's shape (``input_shape``); else None."""
        names = _forward_parameters(self.original_class)
        for name, index in (("pixel_values", 1), ("pixel_values_videos", 1), ("input_shape", 1)):
            if name in names:
                value = kwargs.get(name, args[names.index(name)] if names.index(name) < len(args) else None)
                shape = value.shape if isinstance(value, torch.Tensor) else value
                if isinstance(shape, (tuple, list)) and len(shape) == 5:
                    t = shape[index]  # a SymInt while torch.export traces a dynamic frame axis: kept symbolic
                    return t if isinstance(t, torch.SymInt) else int(t)
        return None

    @property
    def frames_now(self) -> int:
        """The running clip's frame count (the training one when none is known)."""
        t = clip_frames()
        return self.trained_frames if t is None else t

    def time_steps(self, frames: int) -> int:
        """How many time steps (tubelets) a clip of ``frames`` frames makes; ValueError unless whole."""
        if frames % self.frame_unit:
            raise ValueError(
                f"{self.original_class.__name__} embeds tubelets of {self.frame_unit} frames: a clip of {frames} frames "
                f"is not a whole number of tubelets; use a multiple of {self.frame_unit}")
        return frames // self.frame_unit

    def specialize(self, frames: int | None = None, *, length: int | None = None) -> nn.Module:
        """A plain instance of the original class for clips of ``frames`` frames (or ``length``
        time steps of this module)."""
        t = self.length_for(frames, length=length) * self.frame_unit
        plain = object.__new__(self.original_class)
        plain.__dict__.update({
            k: (v.copy() if isinstance(v, dict) else v) for k, v in self.__dict__.items() if k not in self._adapter_keys
        })
        self._specialize_into(plain, t)
        if self._fan_config is not None and self._fan_field is not None:
            setattr(self._fan_config, self._fan_field, t)
        return plain

    def following(self, name: str) -> Any:
        """The value attribute ``name`` has for the running clip (for names given to ``adopt(follow=)``)."""
        raise NotImplementedError

    def _specialize_into(self, plain: nn.Module, frames: int) -> None:
        """Make ``plain`` (a shallow copy of this module as its original class) the module built
        for clips of ``frames`` frames."""

    def extra_repr(self) -> str:
        return f"follows the clip length (trained at {self.trained_frames} frames)"
