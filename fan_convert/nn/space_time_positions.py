"""A learned joint space-time position embedding (ViViT), resampled along time only.

ViViT's ``position_embeddings`` is ``(1, 1 + T' * S, C)``: a class-token position, then one
per tubelet, time-major (``T' = frames / tubelet``, ``S`` spatial patches). For another clip
length the patch part is viewed as ``(T', S, C)`` and interpolated linearly along ``T'``
(:func:`~fan_convert.nn.position_encodings.interpolate_time`); the class position and the spatial
layout are kept. At the training length it is the parameter itself.
"""

from __future__ import annotations

import torch
from torch import nn

from .frame_following import FrameFollowing
from .position_encodings import interpolate_time

__all__ = ["SpaceTimePositions"]


class SpaceTimePositions(FrameFollowing):
    """Stands in for a module whose parameter ``position_embeddings`` is
    ``(1, [1 +] T' * S, C)`` (``class_token``: whether the first entry is the class position)."""

    reads_input_frames = True  # embeddings take the (B, T, C, H, W) clip (or its shape)

    @classmethod
    def for_module(cls, module: nn.Module, trained_frames: int, tubelet: int, *, class_token: bool = True,
                   config=None) -> "SpaceTimePositions":
        patches = module._parameters["position_embeddings"].shape[1] - int(class_token)
        steps = trained_frames // tubelet
        if steps <= 0 or patches % steps:
            raise ValueError(f"{patches} position entries are not {steps} time steps of equal size")
        return cls.adopt(module, trained_frames, frame_unit=tubelet, config=config, follow=("position_embeddings",),
                         spatial=patches // steps, class_token=class_token)

    def embedding_for(self, frames: int) -> torch.Tensor:
        """The position embedding for clips of ``frames`` frames (the parameter itself at training)."""
        embedding = self._parameters["position_embeddings"]
        steps = self.time_steps(frames)
        if not isinstance(steps, torch.SymInt) and steps == self.trained_len:
            return embedding  # (traced for any frame count, the resampling below is exact at this length too)
        head = int(self.class_token)
        grid = embedding[:, head:].reshape(self.trained_len, self.spatial, embedding.shape[-1])
        grid = interpolate_time(grid, steps, dim=0).reshape(1, steps * self.spatial, embedding.shape[-1])
        return torch.cat([embedding[:, :head], grid], dim=1)

    def following(self, name: str) -> torch.Tensor:
        return self.embedding_for(self.frames_now)

    def _specialize_into(self, plain: nn.Module, frames: int) -> None:
        original = self._parameters["position_embeddings"]
        resized = self.embedding_for(frames).detach().clone()
        plain._parameters["position_embeddings"] = nn.Parameter(resized, requires_grad=original.requires_grad)

    def extra_repr(self) -> str:
        return (f"positions for {self.spatial} patches x (frames / {self.frame_unit}), trained at "
                f"{self.trained_frames} frames, interpolated along time to any multiple of {self.frame_unit}")
