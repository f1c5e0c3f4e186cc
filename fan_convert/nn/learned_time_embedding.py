"""A learned embedding with one entry per frame (TimeSformer's ``time_embeddings``, VideoPrism's
temporal ``position_embeddings``), resampled to the running clip.

The ``(1, T, C)`` parameter is interpolated linearly along time
(:func:`~fan_convert.nn.position_encodings.interpolate_time`) to the clip's frame count; at the
training length it is the parameter itself. The parameter stays in the module under its name
(the ``state_dict`` is unchanged); ``specialize(frames=T)`` gives the plain module with a
``(1, T, C)`` copy, interpolated once.
"""

from __future__ import annotations

import torch
from torch import nn

from .frame_following import FrameFollowing
from .position_encodings import interpolate_time

__all__ = ["LearnedTimeEmbedding"]


class LearnedTimeEmbedding(FrameFollowing):
    """Stands in for a module whose parameter ``name`` (``(1, T, C)``) has one entry per frame."""

    reads_input_frames = True  # embeddings take the (B, T, C, H, W) clip (or its shape)

    @classmethod
    def for_module(cls, module: nn.Module, name: str, config=None) -> "LearnedTimeEmbedding":
        embedding = module._parameters[name]
        return cls.adopt(module, embedding.shape[1], config=config, follow=(name,), embedding_name=name)

    def embedding_for(self, frames: int) -> torch.Tensor:
        """The embedding for clips of ``frames`` frames (the parameter itself at the training length)."""
        return interpolate_time(self._parameters[self.embedding_name], frames, dim=1)

    def following(self, name: str) -> torch.Tensor:
        return self.embedding_for(self.frames_now)

    def _specialize_into(self, plain: nn.Module, frames: int) -> None:
        original = self._parameters[self.embedding_name]
        resized = nn.Parameter(self.embedding_for(frames).detach().clone(), requires_grad=original.requires_grad)
        plain._parameters[self.embedding_name] = resized

    def extra_repr(self) -> str:
        return f"{self.embedding_name}: {self.trained_frames} frames at training, interpolated linearly to any"
