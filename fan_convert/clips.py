"""Random clips in a model's input layout, and fresh containers around them: the one clip maker
that tests, checks, exports and benchmarks share.

    x = random_clip(8, 64, batch=2)                 # (2, 3, 8, 64, 64)
    slow, fast = random_clip(32, 224, alpha=4)      # SlowFast: the slow pathway takes every 4th frame
"""

from __future__ import annotations

from typing import Any, Sequence

import torch

__all__ = ["random_clip", "fresh", "frame_size"]


def frame_size(size: int | Sequence[int]) -> tuple[int, int]:
    """``(H, W)`` from a square size or a pair; ValueError for anything else."""
    pair = (size, size) if isinstance(size, int) else tuple(size)
    if len(pair) != 2 or not all(isinstance(s, int) and not isinstance(s, bool) and s > 0 for s in pair):
        raise ValueError(f"input_size must be a positive int or (H, W), got {size!r}")
    return pair


def random_clip(
    t: int, size: int | Sequence[int] = 64, *, batch: int = 1, alpha: int | None = None, frame_axis: int = 2,
    seed: int = 0, device: str | torch.device = "cpu",
) -> torch.Tensor | list[torch.Tensor]:
    """A reproducible random clip of ``t`` frames: ``(batch, 3, t, H, W)`` (T moved to
    ``frame_axis``), or ``[slow, fast]`` for a SlowFast model whose slow pathway takes every
    ``alpha``-th frame."""
    h, w = frame_size(size)
    shape = [batch, 3, h, w]
    shape.insert(frame_axis, t)
    clip = torch.randn(shape, generator=torch.Generator().manual_seed(seed)).to(device)
    if alpha:
        return [clip[(slice(None),) * frame_axis + (slice(None, None, alpha),)].contiguous(), clip]
    return clip


def fresh(clip: Any) -> Any:
    """A new list around the same tensors (SlowFast's forward rewrites its input list); a tensor
    is returned as it is."""
    return list(clip) if isinstance(clip, (list, tuple)) else clip
