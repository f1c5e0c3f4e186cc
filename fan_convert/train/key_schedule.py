"""Which frame counts each training step trains: every one (``joint``, the paper's form), or one
per step (``rotate``: in turn; ``random``: drawn, optionally weighted), and the loader plumbing
that reads only the views a step needs.

What a batch trains depends only on (seed, batch number), so every DDP rank trains the same key
in a step without communicating, and a resumed run continues the same sequence.
"""

from __future__ import annotations

import bisect
import itertools
import math
from dataclasses import dataclass
from typing import Callable, Iterator, Sequence

import numpy as np
from torch.utils.data import Dataset, Sampler

from ..data import Skipped

KEY_SCHEDULES = ("joint", "rotate", "random")


@dataclass(frozen=True)
class StepPlan:
    """One step: the frame counts it trains and the frame count of its no-grad teacher (or None)."""

    frames: tuple[int, ...]
    teacher: int | None = None

    @property
    def views(self) -> tuple[int, ...]:
        """The views the step reads: the trained ones and the teacher's."""
        return tuple(sorted(set(self.frames) | ({self.teacher} if self.teacher is not None else set())))


class KeySchedule:
    """``schedule(batch)`` -> the :class:`StepPlan` of that batch (numbered from 0 over the whole run).

    ``teacher_every=k`` (one key per step only): on the batches of every k-th round, a round being
    ``len(frames)`` consecutive batches, a step that trains a key below the highest also runs the
    highest key on the same clips without gradients, as the teacher. Under ``rotate`` every key
    then meets the teacher on every k-th of its steps.

    Example::

        schedule = KeySchedule((4, 8, 16), "rotate", teacher_every=1)
        [schedule(b).frames for b in range(4)]   # [(4,), (8,), (16,), (4,)]
        schedule(0).teacher, schedule(2).teacher  # 16, None: the highest key's own step is CE only
    """

    def __init__(self, frames: Sequence[int], kind: str = "joint", *, seed: int = 0, weights: Sequence[float] = (),
                 teacher_every: int = 0):
        if kind not in KEY_SCHEDULES:
            raise ValueError(f"key_schedule must be one of {', '.join(KEY_SCHEDULES)}, got {kind!r}")
        self.frames, self.kind, self.seed, self.teacher_every = tuple(sorted(frames)), kind, seed, teacher_every
        weights = tuple(weights) or (1.0,) * len(self.frames)
        if len(weights) != len(self.frames):
            raise ValueError(f"key_weights has {len(weights)} entries for the frame counts {self.frames}: give one per frame count")
        total = math.fsum(weights)
        self._cumulative = [w / total for w in itertools.accumulate(weights)]

    def __call__(self, batch: int) -> StepPlan:
        if self.kind == "joint":
            return StepPlan(self.frames)
        rounds = len(self.frames)
        if self.kind == "rotate":
            key = self.frames[batch % rounds]
        else:  # a stream of its own per (seed, batch): the same on every rank and after a resume
            draw = np.random.default_rng([self.seed % 2**64, batch]).random()
            key = self.frames[min(bisect.bisect_right(self._cumulative, draw), rounds - 1)]
        high = self.frames[-1]
        teaching = self.teacher_every > 0 and key != high and (batch // rounds) % self.teacher_every == 0
        return StepPlan((key,), high if teaching else None)


class PlannedBatches(Sampler[list]):
    """Batches of ``(index, frames)`` pairs: the indices of ``sampler`` in batches, each paired with
    the views its step reads (``views_at(batch number)``), numbered from ``first``."""

    def __init__(self, sampler: Sampler[int], batch_size: int, views_at: Callable[[int], tuple[int, ...]], first: int = 0):
        self.sampler, self.batch_size, self.views_at, self.first = sampler, batch_size, views_at, first

    def __iter__(self) -> Iterator[list[tuple[int, tuple[int, ...]]]]:
        indices = iter(self.sampler)
        for number in itertools.count(self.first):
            batch = list(itertools.islice(indices, self.batch_size))
            if not batch:
                return
            views = self.views_at(number)
            yield [(index, views) for index in batch]

    def __len__(self) -> int:
        return math.ceil(len(self.sampler) / self.batch_size)


class SomeViews(Dataset):
    """``data[(index, frames)]``: sample ``index`` with only the views of ``frames``. A dataset
    with ``views_for(index, frames)`` (:class:`~fan_convert.data.MultiViewClips`,
    :class:`~fan_convert.data.TemporalBenchmark`) reads only those; any other is read whole and
    the other views dropped."""

    def __init__(self, dataset):
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, item: tuple[int, tuple[int, ...]]):
        index, frames = item
        if hasattr(self.dataset, "views_for"):
            return self.dataset.views_for(index, frames)
        sample = self.dataset[index]
        if sample is None or isinstance(sample, Skipped):
            return sample
        views, label = sample
        return {t: views[t] for t in frames}, label
