"""A tubelet embedding with a temporal stride: clips must hold whole tubelets.

A patch embedding whose 3D convolution has temporal kernel = stride = ``k`` > 1 (VideoMAE,
ViViT, V-JEPA 2) turns every ``k`` frames into one time step. It runs at any T, but a T that is
not a multiple of ``k`` silently drops the last frames (or breaks a position table sized for
whole tubelets later on). The adapter raises a clear error instead, before the convolution, and
otherwise runs the module's own forward; ``specialize`` returns the plain module (its
``num_patches`` sized for the clip when it keeps one).
"""

from __future__ import annotations

from typing import Any

from torch import nn

from .frame_following import FrameFollowing

__all__ = ["TubeletFrames", "tubelet_conv"]


def tubelet_conv(module: nn.Module) -> nn.Conv3d | None:
    """The direct ``Conv3d`` child of ``module`` that embeds tubelets (temporal kernel = stride > 1,
    no temporal padding or dilation), or None."""
    for child in module.children():
        if type(child) is nn.Conv3d:
            k, s, p, d = child.kernel_size[0], child.stride[0], child.padding, child.dilation[0]
            pad = p[0] if isinstance(p, tuple) else p
            if k == s > 1 and pad == 0 and d == 1:
                return child
    return None


class TubeletFrames(FrameFollowing):
    """Stands in for a tubelet patch embedding: checks that the running clip holds whole tubelets."""

    @classmethod
    def for_module(cls, module: nn.Module, trained_frames: int, config=None) -> "TubeletFrames":
        conv = tubelet_conv(module)
        if conv is None:
            raise TypeError(f"{type(module).__name__} has no tubelet Conv3d (temporal kernel = stride > 1)")
        return cls.adopt(module, trained_frames, frame_unit=conv.stride[0], config=config)

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        self.time_steps(self.frames_now)  # refuse a partial tubelet before the embedding sees it
        return super().forward(*args, **kwargs)

    def _specialize_into(self, plain: nn.Module, frames: int) -> None:
        patches = plain.__dict__.get("num_patches")
        if isinstance(patches, int) and patches % self.trained_len == 0:
            plain.__dict__["num_patches"] = patches // self.trained_len * (frames // self.frame_unit)

    def extra_repr(self) -> str:
        return f"tubelets of {self.frame_unit} frames: clips of any multiple of {self.frame_unit} frames"
