"""The multi-view dataset: one read per sample serves every frame count's view, cut from the
same frames under the same spatial augmentation; and the batching that drops and names the
videos that could not be read.

Only the frames the views use are decoded (:mod:`.decoding`); the layouts (class folders,
annotation lists, frame folders) are read by :mod:`.readers`; the frames of each view are chosen
by :mod:`.sampling`.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass
from typing import Iterable, Sequence

import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from .decoding import DecodeError, decode, read_sampled
from .readers import Item
from .sampling import check_views, multi_view_indices, require_frames, subset_of_views

__all__ = ["KINETICS_MEAN", "KINETICS_STD", "MultiViewClips", "SkipCount", "Skipped", "collate_views", "skip_report"]
KINETICS_MEAN, KINETICS_STD = (0.45, 0.45, 0.45), (0.225, 0.225, 0.225)


class SkipCount(int):
    """How many samples of a batch were skipped: an ``int`` that also carries ``reasons``, one
    line per skipped video (``"cannot decode 'a/x.mp4': Invalid data found ..."``)."""

    reasons: tuple[str, ...]

    def __new__(cls, reasons: Iterable[str] = ()):
        reasons = tuple(reasons)
        count = super().__new__(cls, len(reasons))
        count.reasons = reasons
        return count

    def __reduce__(self):
        return SkipCount, (self.reasons,)


@dataclass(frozen=True)
class Skipped:
    """What a dataset returns for a video it could not read (instead of a sample)."""

    reason: str


def skip_report(reasons: Iterable[str]) -> str:
    """One line per skipped video, each named once (with how often it was skipped, e.g. once per
    epoch); empty when nothing was skipped.

    Example::

        skip_report(["cannot decode 'a/x.mp4': Invalid data"] * 2)
        # "skipped 1 video:\n  cannot decode 'a/x.mp4': Invalid data (2 times)"
    """
    counts = Counter(reasons)
    if not counts:
        return ""
    lines = [f"  {reason}" + (f" ({n} times)" if n > 1 else "") for reason, n in counts.items()]
    return f"skipped {len(counts)} video{'s' * (len(counts) > 1)}:\n" + "\n".join(lines)


class MultiViewClips(Dataset):
    """Each sample: ``({t: clip (3, t, S, S) for t in frames}, label)`` from one decode.

    Training: random segment offsets, one random-resized crop (and a horizontal flip if
    ``flip``) shared by every view. Evaluation: segment centres, short side resized to
    ``resize``, centre crop. Only the frames the views use are decoded (``reader="sampled"``;
    ``"full"`` decodes every frame first, as before: same output, slower). A video that fails
    to decode gives a :class:`Skipped` with the reason; :func:`collate_views` drops and names it.
    ``decode_threads``: decoder threads per video (default 1: parallelism comes from DataLoader
    workers; 0 lets FFmpeg choose, which on 2 cores cost 15-35% more CPU per clip for at best
    12% less wall time).

    ``layout="BTCHW"`` gives each view as ``(t, 3, S, S)`` instead, for ``transformers`` video
    models (see :func:`fan_convert.integrations.transformers.reader_settings`).

    ``frames`` may be left out when the dataset is handed to :class:`~fan_convert.train.trainer.Trainer`
    or :func:`~fan_convert.train.evaluate.evaluate`: they give it the model's keys.

    Example::

        items, classes = video_folder("kinetics/train")
        train = MultiViewClips(items, (4, 8, 16), train=True, crop_size=112, flip=True)
        views, label = train[0]   # {4: (3, 4, 112, 112), 8: ..., 16: ...}, int
    """

    def __init__(
        self,
        items: Sequence[Item],
        frames: Sequence[int] | None = None,
        *,
        train: bool,
        crop_size: int = 112,
        resize: int = 128,
        scale: tuple[float, float] = (0.35, 1.0),
        flip: bool = False,
        mean: Sequence[float] = KINETICS_MEAN,
        std: Sequence[float] = KINETICS_STD,
        seed: int = 0,
        reader: str = "sampled",
        decode_threads: int = 1,
        layout: str = "BCTHW",
    ):
        if reader not in ("sampled", "full"):
            raise ValueError(f"reader must be 'sampled' or 'full', got {reader!r}")
        self.items, self.frames, self.train = list(items), check_views(frames), train
        self.reader, self.decode_threads = reader, decode_threads
        self.crop_size, self.resize, self.scale, self.flip = crop_size, resize, scale, flip
        self.mean = torch.tensor(mean).view(3, 1, 1, 1)
        self.std = torch.tensor(std).view(3, 1, 1, 1)
        self.seed = seed
        self.epoch = 0
        if layout not in ("BCTHW", "BTCHW"):
            raise ValueError(f"layout must be 'BCTHW' or 'BTCHW' (transformers video models), got {layout!r}")
        self.layout = layout

    def __len__(self) -> int:
        return len(self.items)

    def set_epoch(self, epoch: int) -> None:
        """Training randomness depends on (seed, epoch, index): reproducible, different each epoch."""
        self.epoch = epoch

    def __getitem__(self, index: int):
        return self.views_for(index, self.frames)

    def views_for(self, index: int, frames: Sequence[int]):
        """Sample ``index`` with only the views of ``frames`` (a subset of the dataset's), decoding
        only their frames; each view equals the one ``self[index]`` gives."""
        require_frames(self)
        frames = subset_of_views(frames, self.frames)
        item = self.items[index]
        seed = hash((self.seed, self.epoch, index)) % (2**63) if self.train else self.seed
        g = torch.Generator()
        views: dict[int, list[int]] = {}

        def choose(num_frames: int) -> list[int]:  # may run twice: same count, same draw
            g.manual_seed(seed)
            drawn = multi_view_indices(num_frames, self.frames, train=self.train, generator=g)  # every view's draw, as in self[index]
            views.update({t: drawn[t] for t in frames})
            return [i for idx in views.values() for i in idx]

        try:
            if self.reader == "full":
                video = decode(item.path, self.resize)
                choose(video.shape[0])
                return self.transform(video, views, g), item.label
            got = read_sampled(item.path, choose, self.resize, threads=self.decode_threads)
        except DecodeError as err:
            return Skipped(str(err))
        where = {frame: n for n, frame in enumerate(got.indices)}
        return self.transform(got.frames, {t: [where[i] for i in idx] for t, idx in views.items()}, g), item.label

    def transform(self, video: torch.Tensor, views: dict[int, list[int]], g: torch.Generator) -> dict[int, torch.Tensor]:
        """Crop/flip/normalise the frames the views use, once, then gather each view."""
        used = sorted({i for idx in views.values() for i in idx})
        where = {frame: n for n, frame in enumerate(used)}
        x = self._crop(video[used], g)  # (3, n, S, S) float, a new tensor
        x = x.div_(255).sub_(self.mean).div_(self.std)
        clips = {t: x[:, [where[i] for i in idx]] for t, idx in views.items()}
        if self.layout == "BTCHW":  # transformers video models take (B, T, C, H, W)
            return {t: c.transpose(0, 1).contiguous() for t, c in clips.items()}
        return {t: c.contiguous() for t, c in clips.items()}

    def _crop(self, frames: torch.Tensor, g: torch.Generator) -> torch.Tensor:
        """uint8 (n, H, W, 3) frames to a float (3, n, S, S) crop; the box is cut before the
        conversion to float, so only the cropped pixels are converted."""
        h, w = frames.shape[1:3]
        size = self.crop_size
        if not self.train:
            if min(h, w) < size:
                return _square(_planar(frames), size)
            top, left = (h - size) // 2, (w - size) // 2
            return _planar(frames[:, top : top + size, left : left + size])
        area = h * w * float(torch.empty(1).uniform_(*self.scale, generator=g))
        ratio = math.exp(float(torch.empty(1).uniform_(math.log(3 / 4), math.log(4 / 3), generator=g)))
        ch = min(h, max(1, round(math.sqrt(area / ratio))))
        cw = min(w, max(1, round(math.sqrt(area * ratio))))
        top = int(torch.randint(0, h - ch + 1, (1,), generator=g))
        left = int(torch.randint(0, w - cw + 1, (1,), generator=g))
        x = _square(_planar(frames[:, top : top + ch, left : left + cw]), size)
        if self.flip and bool(torch.rand(1, generator=g) < 0.5):
            x = x.flip(-1)
        return x


def _planar(frames: torch.Tensor) -> torch.Tensor:
    """uint8 (n, h, w, 3) to float (3, n, h, w)."""
    return frames.permute(3, 0, 1, 2).float()


def _square(x: torch.Tensor, size: int) -> torch.Tensor:
    """Resize (3, n, h, w) frames to (3, n, size, size)."""
    return F.interpolate(x.transpose(0, 1), size=(size, size), mode="bilinear", align_corners=False).transpose(0, 1)


def collate_views(batch):
    """Stack views of the samples that decoded; returns ``(views, labels, skipped)`` where
    ``skipped`` is a :class:`SkipCount` (an int naming the skipped videos in ``.reasons``).

    Example::

        loader = DataLoader(MultiViewClips(items, (4, 8), train=True), batch_size=16, collate_fn=collate_views)
        views, labels, skipped = next(iter(loader))   # views[8]: (B, 3, 8, 112, 112)
    """
    good = [sample for sample in batch if sample is not None and not isinstance(sample, Skipped)]
    skipped = SkipCount(s.reason if isinstance(s, Skipped) else "a sample was None" for s in batch
                        if s is None or isinstance(s, Skipped))
    if not good:
        return {}, torch.zeros(0, dtype=torch.long), skipped
    views = {t: torch.stack([s[0][t] for s in good]) for t in good[0][0]}
    labels = torch.tensor([s[1] for s in good], dtype=torch.long)
    return views, labels, skipped
