"""TSN-style segment sampling: which source frames make a T-frame view of a video.

The video is cut into T equal segments and one frame is taken from each: a random one while
training, the centre one for evaluation. Every view of a sample (L, M, H frames) is drawn from the
same decoded video, so one decode serves all frame counts. Videos shorter than T repeat frames.
"""

from __future__ import annotations

from typing import Sequence

import torch


def segment_indices(num_frames: int, t: int, *, train: bool, generator: torch.Generator | None = None) -> list[int]:
    """``t`` frame indices into a video of ``num_frames`` frames, in temporal order.

    Example::

        segment_indices(32, 4, train=False)   # [4, 12, 20, 28]: segment centres
    """
    if num_frames <= 0:
        raise ValueError(f"video has {num_frames} frames; it cannot be sampled")
    if t <= 0:
        raise ValueError(f"frame count must be positive, got {t}")
    length = num_frames / t
    if train:
        offsets = torch.rand(t, generator=generator).tolist()
    else:
        offsets = [0.5] * t
    return [min(int(length * (i + offset)), num_frames - 1) for i, offset in enumerate(offsets)]


def multi_view_indices(
    num_frames: int, frames: Sequence[int], *, train: bool, generator: torch.Generator | None = None
) -> dict[int, list[int]]:
    """One index list per frame count, for the views of one sample.

    Example::

        multi_view_indices(32, (4, 8), train=False)   # {4: [4, 12, 20, 28], 8: [2, 6, 10, ..., 30]}
    """
    return {t: segment_indices(num_frames, t, train=train, generator=generator) for t in sorted(frames)}


def check_views(frames: Sequence[int] | None) -> tuple[int, ...] | None:
    """A dataset's frame counts, sorted (None: to be given by the Trainer or evaluate that uses it)."""
    if frames is None:
        return None
    frames = tuple(sorted(frames))
    if not frames or any(isinstance(t, bool) or not isinstance(t, int) or t < 1 for t in frames):
        raise ValueError(f"frames must be positive integers, got {frames!r}")
    return frames


def subset_of_views(frames: Sequence[int], views: Sequence[int]) -> tuple[int, ...]:
    """``frames`` sorted, checked to be among a dataset's ``views``."""
    frames = tuple(sorted(frames))
    missing = sorted(set(frames) - set(views))
    if missing:
        raise ValueError(f"frames {missing} are not among the dataset's views {tuple(views)}")
    return frames


def require_frames(dataset) -> None:
    """Stop with a clear error when a dataset built without frame counts is read on its own."""
    if dataset.frames is None:
        raise ValueError(
            f"{type(dataset).__name__} was built without frames=: pass the frame counts, or hand it to "
            "Trainer/evaluate, which give it the model's keys")
