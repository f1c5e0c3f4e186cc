"""Which frame counts a run uses: said once, when the model is adapted, and read from its plan by
the trainer, the datasets made for it and evaluation. Naming them again is allowed; a mismatch
is an error that says which counts disagree."""

from __future__ import annotations

from typing import Sequence

from torch import nn

__all__ = ["model_keys", "resolve_frames", "bind_frames"]


def model_keys(model: nn.Module) -> tuple[int, ...] | None:
    """The trained frame counts of an adapted model, None for a plain one."""
    conversion = getattr(model, "fan_plan", None)
    return tuple(conversion.frames) if conversion is not None else None


def resolve_frames(frames: Sequence[int] | None, keys: Sequence[int] | None, what: str) -> tuple[int, ...]:
    """``frames`` when given (each must be one of the model's ``keys``), else the keys.

    Example::

        resolve_frames((), (4, 8, 16), "frames")        # (4, 8, 16)
        resolve_frames((8, 16), (4, 8, 16), "frames")   # (8, 16)
        resolve_frames((12,), (4, 8, 16), "frames")     # ValueError: 12 is not a key
    """
    if not frames:
        if keys is None:
            raise ValueError(f"the model is not adapted (it has no plan to take frame counts from): name them with {what}")
        return tuple(keys)
    frames = tuple(sorted(frames))
    if keys is not None:
        strange = [t for t in frames if t not in keys]
        if strange:
            raise ValueError(
                f"{what} names {', '.join(map(str, strange))} frames, but the model was adapted for {tuple(keys)}; "
                "leave the frame counts out to use the model's, or adapt it for these")
    return frames


def bind_frames(dataset, frames: Sequence[int]) -> None:
    """Give a dataset built without frame counts (``frames=None``) the run's; check that one built
    with them has a view for each of the run's."""
    if not hasattr(dataset, "frames"):
        return  # a user dataset: its views are checked when a step reads them
    if dataset.frames is None:
        dataset.frames = tuple(frames)
        return
    missing = [t for t in frames if t not in dataset.frames]
    if missing:
        raise ValueError(
            f"the dataset has views at {tuple(dataset.frames)} frames but the run needs {', '.join(map(str, missing))} too; "
            "build the dataset without frames= to take the model's")
