"""Clip frames versus a layer's own temporal length, shared by the fixed-T layers.

A layer deep in a network sees fewer time steps than the clip has frames (a head pool after
two temporal strides sees T/4; a positional embedding sees T/tubelet temporal patches).
:class:`FrameUnits` converts a clip length into the layer's own length, so every fixed-T layer's
``specialize(frames)`` takes clip frames like :meth:`NormBank.specialize`.
"""

from __future__ import annotations

__all__ = ["FrameUnits"]


class FrameUnits:
    """Shared conversion between clip frames and a module's own temporal length.

    ``trained_len`` is the number of time steps the module saw at the training clip length
    ``trained_frames`` (e.g. 8 temporal patches for a 16-frame MViT clip). ``specialize(t)``
    takes ``t`` in clip frames, like :meth:`NormBank.specialize`; ``length=`` gives the module's
    own temporal length directly (needed when ``trained_frames`` is unknown)."""

    trained_len: int
    trained_frames: int | None

    def length_for(self, frames: int | None = None, *, length: int | None = None) -> int:
        if (frames is None) == (length is None):
            raise ValueError("give exactly one of frames (clip length) or length (this module's time steps)")
        if length is not None:
            if isinstance(length, bool) or not isinstance(length, int) or length <= 0:
                raise ValueError(f"length must be a positive integer, got {length!r}")
            return length
        if isinstance(frames, bool) or not isinstance(frames, int) or frames <= 0:
            raise ValueError(f"frames must be a positive integer, got {frames!r}")
        if self.trained_frames is None:
            raise ValueError(
                f"{type(self).__name__} does not know the clip length it was trained at; pass length= "
                f"(its own number of time steps, {self.trained_len} at training) or build it with trained_frames=")
        steps = frames * self.trained_len
        if steps % self.trained_frames:
            raise ValueError(
                f"{frames} frames do not map to a whole number of time steps here "
                f"({self.trained_len} steps at {self.trained_frames} frames)")
        return steps // self.trained_frames
