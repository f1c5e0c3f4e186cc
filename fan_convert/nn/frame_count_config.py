"""A layer that reads the clip length from its config (TimeSformer's divided space-time
attention: ``self.config.num_frames``), made to read the running clip's instead.

The adapter's ``config`` is a read-only view of the model's config whose frame-count field is
the running clip's frame count (:func:`fan_convert.context.clip_frames`); every other field is
the model's. The layer's own forward runs unchanged, so at the training length nothing changes.
``specialize(frames=T)`` gives the plain layer, reading the model's config, whose frame-count
field is set to T (so the specialised model is the plain architecture for T frames).
"""

from __future__ import annotations

from typing import Any

from torch import nn

from .frame_following import FrameFollowing, frame_field

__all__ = ["FrameCountConfig", "ConfigWithFrames"]


class ConfigWithFrames:
    """A read-only view of a config with its frame-count field replaced by ``frames``."""

    __slots__ = ("_config", "_field", "_frames")

    def __init__(self, config: Any, field: str, frames: int):
        object.__setattr__(self, "_config", config)
        object.__setattr__(self, "_field", field)
        object.__setattr__(self, "_frames", frames)

    def __getattr__(self, name: str) -> Any:
        return self._frames if name == self._field else getattr(self._config, name)

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError("a frame-following config view is read-only; change the model's config instead")



class FrameCountConfig(FrameFollowing):
    """Stands in for a module whose forward reads the clip length from ``self.config``."""

    @classmethod
    def for_module(cls, module: nn.Module) -> "FrameCountConfig":
        config = module.__dict__.get("config")
        field = frame_field(config)
        if field is None:
            raise TypeError(f"{type(module).__name__} keeps no config with a frame count")
        return cls.adopt(module, getattr(config, field), config=config, follow=("config",))

    def following(self, name: str) -> Any:
        return ConfigWithFrames(self.__dict__["config"], self._fan_field, self.frames_now)

    def extra_repr(self) -> str:
        return f"config.{self._fan_field} follows the clip length (trained at {self.trained_frames} frames)"
