"""A built-in temporal benchmark that needs no files: procedurally rendered 32x32 clips whose
class depends on temporal order, speed or brief events, so that a single frame cannot tell it.

In the spirit of Something-Something: every clip shows a coloured target on a textured
background, with a grey distractor square moving at random, a slight global flicker and fresh
pixel noise. What the target *does* is the class (:data:`CLASSES`, :data:`DESCRIPTIONS`):

- six pairs of classes that are each other's time reversal: moving left/right (slowly, and
  fast), approaching/receding, rotating clockwise/counter-clockwise, a conveyor of dots moving
  left/right, red-then-blue/blue-then-red. A clip of one class played backwards is exactly a
  clip of its partner (the same seed renders the partner as the reversed clip), so the set of
  frames says nothing; only their order does;
- speed matters: "slowly" and "fast" differ by the distance covered between sampled frames,
  which also changes with the number of frames sampled (between 4 sampled frames a slow move
  covers as much ground as a fast one between 16: a source of Temporal Deviation);
- the rotations and conveyors are fast and periodic (a bar looks the same after 180 degrees, a
  row of dots after one spacing): 16 sampled frames see the true direction, 8 mostly do, 4 are
  often fooled by the wagon-wheel effect;
- four classes on an otherwise idle object: nothing happens, or a flash, a hop or a blink that
  lasts one or two source frames of 32: 16 evenly spaced frames catch 3/4 of them, 8 about 3/8,
  4 about 3/16.

So more frames carry more information, as in real video, and a model trained at 16 frames loses
much of its accuracy at 4 (``docs/benchmark.md`` has the measured numbers).

Example::

    from fan_convert.data import TemporalBenchmark
    train = TemporalBenchmark("train", size=3000, frames=(4, 8, 16))
    val = TemporalBenchmark("val", size=600, frames=(2, 4, 6, 8, 12, 16))
    views, label = train[0]          # {4: (3, 4, 32, 32), 8: ..., 16: ...}, int

Rendering is deterministic: a clip depends only on (seed, split, index). Clips are rendered
once (about a millisecond each) and cached as uint8; pixel noise is drawn when a sample is read
(per epoch while training, fixed for evaluation), as is the TSN segment sampling.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

from .sampling import check_views, multi_view_indices, require_frames, subset_of_views

__all__ = ["CLASSES", "DESCRIPTIONS", "REVERSE_OF", "TemporalBenchmark", "render_clip", "NUM_FRAMES", "FRAME_SIZE"]

NUM_FRAMES = 32
FRAME_SIZE = 32
MEAN, STD = 0.45, 0.25

CLASSES = (
    "moving left slowly",
    "moving right slowly",
    "moving left fast",
    "moving right fast",
    "approaching",
    "receding",
    "rotating clockwise",
    "rotating counter-clockwise",
    "conveyor moving left",
    "conveyor moving right",
    "red then blue",
    "blue then red",
    "nothing happens",
    "flashing",
    "hopping",
    "blinking",
)

DESCRIPTIONS = {
    "moving left slowly": "the object travels left at 0.12-0.22 px per source frame (4-7 px in all)",
    "moving right slowly": "the object travels right at 0.12-0.22 px per source frame (moving left slowly, reversed)",
    "moving left fast": "the object travels left at 0.38-0.6 px per source frame (12-19 px in all)",
    "moving right fast": "the object travels right at 0.38-0.6 px per source frame (moving left fast, reversed)",
    "approaching": "the object grows 1.7-2.5x (it comes closer)",
    "receding": "the object shrinks 1.7-2.5x (approaching, reversed)",
    "rotating clockwise": "a bar turns clockwise on screen at 6-26 degrees per source frame: clear at 16 frames, "
    "mostly at 8, often looks reversed at 4 (a bar looks the same after 180 degrees: the wagon-wheel effect)",
    "rotating counter-clockwise": "a bar turns counter-clockwise (rotating clockwise, reversed)",
    "conveyor moving left": "a row of dots slides left (conveyor moving right, reversed)",
    "conveyor moving right": "a row of dots 7.5-9 px apart slides right at 0.4-1.1 px per source frame: clear at 16 "
    "frames, mostly at 8, often looks reversed at 4 (the wagon-wheel effect)",
    "red then blue": "a red object turns blue at a random moment between source frames 8 and 23",
    "blue then red": "a blue object turns red (red then blue, reversed)",
    "nothing happens": "the object only drifts (under 0.08 px per source frame, as in every class but the moving ones)",
    "flashing": "the object turns white for one or two source frames",
    "hopping": "the object is 4-6 px away for one or two source frames, then back",
    "blinking": "the object vanishes for one or two source frames",
}

# The renderer draws one member of each time-reversal pair (its motion below); the partner is the
# same clip played backwards. REVERSE_OF: class -> its partner.
_FORWARD = {1: "right_slow", 3: "right_fast", 4: "approach", 6: "cw", 9: "conveyor", 10: "red_blue"}
REVERSE_OF = {a: b for pair in ((0, 1), (2, 3), (4, 5), (6, 7), (8, 9), (10, 11)) for a, b in (pair, pair[::-1])}
_IDLE, _FLASH, _HOP, _BLINK = 12, 13, 14, 15
_SPLITS = {"train": 0, "val": 1, "test": 2}

_RED = np.array([225.0, 45.0, 40.0])
_BLUE = np.array([40.0, 90.0, 235.0])


def _rng(*key: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence([int(k) & 0xFFFFFFFF for k in key]))


def _interp_matrix(out: int, n: int) -> np.ndarray:
    """(out, n) bilinear upsampling weights (align_corners=True)."""
    pos = np.linspace(0, n - 1, out)
    lo = np.clip(np.floor(pos).astype(int), 0, n - 2)
    frac = pos - lo
    m = np.zeros((out, n))
    m[np.arange(out), lo] = 1 - frac
    m[np.arange(out), lo + 1] = frac
    return m


def _hue_colour(rng: np.random.Generator) -> np.ndarray:
    """A saturated colour of random hue, not too dark."""
    h, s, v = rng.uniform(0, 1), rng.uniform(0.6, 1.0), rng.uniform(0.75, 1.0)
    k = (np.array([5.0, 3.0, 1.0]) + h * 6) % 6
    return 255 * v * (1 - s * np.clip(np.minimum(k, 4 - k), 0, 1))


class _Canvas:
    """Pixel grids and helpers for one frame size (cached per size)."""

    _cache: dict[int, "_Canvas"] = {}

    def __init__(self, size: int):
        self.size = size
        ys, xs = np.mgrid[0:size, 0:size].astype(np.float32)
        self.x, self.y = xs[None], ys[None]  # (1, H, W)
        self.up4 = _interp_matrix(size, 4)
        self.up8 = _interp_matrix(size, 8)

    @classmethod
    def get(cls, size: int) -> "_Canvas":
        if size not in cls._cache:
            cls._cache[size] = cls(size)
        return cls._cache[size]

    def coverage(self, shape: str, cx, cy, a, b, angle) -> np.ndarray:
        """Anti-aliased coverage (N, H, W) of a shape per frame; every argument is (N,)."""
        dx = self.x - cx[:, None, None]
        dy = self.y - cy[:, None, None]
        if shape == "disc":
            return np.clip(a[:, None, None] - np.sqrt(dx * dx + dy * dy) + 0.5, 0, 1)
        if shape == "dots":  # a row of discs of radius a, b apart, across the whole width
            period = b[:, None, None]
            dx = (dx + period / 2) % period - period / 2
            return np.clip(a[:, None, None] - np.sqrt(dx * dx + dy * dy) + 0.5, 0, 1)
        c, s = np.cos(angle)[:, None, None], np.sin(angle)[:, None, None]
        u = dx * c + dy * s
        v = dy * c - dx * s
        return np.clip(a[:, None, None] - np.abs(u) + 0.5, 0, 1) * np.clip(b[:, None, None] - np.abs(v) + 0.5, 0, 1)


def _background(rng: np.random.Generator, canvas: _Canvas) -> np.ndarray:
    """A static textured background (3, H, W): dull blotches of grey and a faint tint, finer
    texture and grain (the targets' colours are saturated, the background's are not)."""
    coarse = rng.uniform(70, 150, (1, 4, 4)) + rng.normal(0, 10, (3, 4, 4))
    fine = rng.normal(0, 12, (1, 8, 8))
    bg = canvas.up4 @ coarse @ canvas.up4.T + canvas.up8 @ fine @ canvas.up8.T
    bg = bg + rng.normal(0, 5, (3, canvas.size, canvas.size))
    return bg.astype(np.float32)


def _bounce(start: float, velocity: float, n: int, lo: float, hi: float) -> np.ndarray:
    """Positions of a point moving at ``velocity`` between walls ``lo``/``hi`` (reflecting)."""
    span = hi - lo
    p = (start - lo + velocity * np.arange(n)) % (2 * span)
    return lo + np.where(p > span, 2 * span - p, p)


def render_clip(label: int, seed: int, *, num_frames: int = NUM_FRAMES, size: int = FRAME_SIZE) -> torch.Tensor:
    """The noise-free clip of class ``label`` for ``seed``: uint8 ``(3, num_frames, size, size)``.

    Deterministic; for the time-reversal pairs (:data:`REVERSE_OF`) ``render_clip(partner, s)``
    is ``render_clip(label, s)`` played backwards, frame for frame.

    Example::

        clip = render_clip(CLASSES.index("approaching"), seed=0)   # uint8 (3, 32, 32, 32)
        backwards = render_clip(REVERSE_OF[CLASSES.index("approaching")], seed=0)   # equals clip.flip(1)
    """
    if not 0 <= label < len(CLASSES):
        raise ValueError(f"label must be in [0, {len(CLASSES)}), got {label}")
    forward = label in _FORWARD
    kind = _FORWARD.get(label, _FORWARD.get(REVERSE_OF.get(label, -1)))
    # one random stream per family: a reversal pair shares it (the partner is the reversed clip),
    # and so do the idle and event classes (an event clip is the idle clip plus its event)
    rng = _rng(seed, 2000 if kind is None else 1000 + min(label, REVERSE_OF[label]))
    canvas = _Canvas.get(size)
    n = num_frames
    t = np.arange(n, dtype=np.float64)
    scale = size / 32.0

    frame = np.broadcast_to(_background(rng, canvas)[:, None], (3, n, size, size)).copy()

    # the distractor: a small grey square bouncing around at random
    dr = rng.uniform(1.3, 2.0) * scale
    dspeed, dangle = rng.uniform(0.2, 0.6) * scale, rng.uniform(0, 2 * np.pi)
    dx = _bounce(rng.uniform(dr, size - 1 - dr), dspeed * np.cos(dangle), n, dr, size - 1 - dr)
    dy = _bounce(rng.uniform(dr, size - 1 - dr), dspeed * np.sin(dangle), n, dr, size - 1 - dr)
    grey = rng.uniform(90, 200)
    d_cov = canvas.coverage("box", dx, dy, np.full(n, dr), np.full(n, dr), np.full(n, rng.uniform(0, np.pi)))
    distractor_on_top = rng.uniform() < 0.5
    flicker = 1 + rng.normal(0, 0.03, n)  # global brightness flicker

    # the target: shape, size, colour, slow drift, then what its class does
    shape = ["disc", "box", "bar"][rng.integers(3)]
    r = rng.uniform(3.2, 4.4) * scale
    angle0 = rng.uniform(0, np.pi)
    colour = np.tile(_hue_colour(rng), (n, 1))
    drift_speed = rng.uniform(0, 0.08) * scale
    heading = rng.uniform(0, 2 * np.pi)
    drift = drift_speed * np.array([np.cos(heading), np.sin(heading)])
    radius = np.full(n, r)
    angle = np.full(n, angle0)
    alpha = np.ones(n)
    shift = np.zeros((n, 2))
    margin = 6.0 * scale

    if kind in ("right_slow", "right_fast"):
        vx = rng.uniform(*((0.12, 0.22) if kind == "right_slow" else (0.38, 0.6))) * scale
        vy = rng.uniform(-0.06, 0.06) * scale
        x0 = rng.uniform(margin, size - 1 - margin - vx * (n - 1))
        y0 = rng.uniform(margin + 2, size - 1 - margin - 2)
        cx, cy = x0 + vx * t, y0 + vy * t
    else:
        travel = drift * (n - 1)
        x0 = rng.uniform(margin + max(0, -travel[0]), size - 1 - margin - max(0, travel[0]))
        y0 = rng.uniform(margin + max(0, -travel[1]), size - 1 - margin - max(0, travel[1]))
        cx, cy = x0 + drift[0] * t, y0 + drift[1] * t
    if kind == "approach":
        r0 = rng.uniform(2.0, 2.6) * scale
        radius = r0 * rng.uniform(1.7, 2.5) ** (t / (n - 1))
    elif kind == "cw":
        shape = "bar"
        omega = np.deg2rad(rng.uniform(6, 26))
        angle = angle0 + omega * t  # y points down: a growing angle turns clockwise on screen
    elif kind == "red_blue":
        tau = rng.uniform(8, n - 9)
        colour = np.where((t > tau)[:, None], _BLUE, _RED) + rng.normal(0, 12, 3)
    elif kind == "conveyor":
        shape = "dots"
        period = rng.uniform(7.5, 9.0) * scale
        cx = rng.uniform(0, period) + rng.uniform(0.4, 1.1) * scale * t
        dot_radius = rng.uniform(1.6, 2.2) * scale
    elif label in (_FLASH, _HOP, _BLINK):
        d = int(rng.integers(1, 3))  # one or two source frames
        start = int(rng.integers(2, n - 1 - d))
        on = (t >= start) & (t < start + d)
        if label == _FLASH:
            colour = np.where(on[:, None], 255.0, colour)
        elif label == _HOP:
            hop = rng.uniform(4, 6) * scale
            direction = rng.uniform(0, 2 * np.pi)
            shift[on] = hop * np.array([np.cos(direction), np.sin(direction)])
        else:
            alpha = np.where(on, 0.0, 1.0)

    if shape == "dots":  # a: dot radius, b: spacing
        a, b = np.full(n, dot_radius), np.full(n, period)
    elif shape == "disc":
        a, b = radius, radius
    elif shape == "box":
        a, b = radius * 0.9, radius * 0.9
    else:
        a, b = radius * 1.5, radius * 0.4
    cov = canvas.coverage(shape, cx + shift[:, 0], cy + shift[:, 1], a, b, angle) * alpha[:, None, None]
    col = colour.T[:, :, None, None].astype(np.float32)  # (3, N, 1, 1)

    if distractor_on_top:
        frame += cov[None] * (col - frame)
        frame += d_cov[None] * (grey - frame)
    else:
        frame += d_cov[None] * (grey - frame)
        frame += cov[None] * (col - frame)
    frame *= flicker[None, :, None, None]
    clip = torch.from_numpy(np.clip(frame, 0, 255).round().astype(np.uint8))
    if kind is not None and not forward:
        clip = clip.flip(1)
    return clip


def _class_ids(classes: Sequence[int | str] | None) -> list[int]:
    if classes is None:
        return list(range(len(CLASSES)))
    ids = []
    for c in classes:
        if isinstance(c, str) and c in CLASSES:
            ids.append(CLASSES.index(c))
        elif isinstance(c, int) and 0 <= c < len(CLASSES):
            ids.append(c)
        else:
            raise ValueError(f"unknown class {c!r}: use an index 0-{len(CLASSES) - 1} or one of the names in CLASSES")
    if not ids or len(set(ids)) != len(ids):
        raise ValueError(f"classes must be a non-empty list without repeats, got {list(classes)!r}")
    return ids


class TemporalBenchmark(Dataset):
    """The built-in benchmark as a dataset of ``({t: clip (3, t, 32, 32)}, label)`` samples.

    Same contract as :class:`~fan_convert.data.MultiViewClips` (one cached render serves
    every view; :func:`~fan_convert.data.collate_views` batches it), so
    :class:`~fan_convert.train.trainer.Trainer` and :func:`~fan_convert.train.evaluate.evaluate`
    use it unchanged.

    Args:
        split: ``"train"``, ``"val"`` or ``"test"``: independent streams of clips.
        size: number of clips (labels balanced: ``index % num_classes``).
        frames: the frame counts each sample has a view for (default: the keys of the model it is
            trained or evaluated with, given by Trainer or evaluate).
        train: random segment offsets and fresh noise per epoch (default: ``split == "train"``);
            otherwise segment centres and fixed noise.
        seed: selects the clips (and the per-epoch randomness).
        noise: standard deviation of the pixel noise, in 0-255 units.
        classes: a subset of :data:`CLASSES` (names or indices), relabelled ``0..k-1`` in the
            order given; default: all 16.

    Example::

        val = TemporalBenchmark("val", size=600, frames=(2, 4, 8, 16), classes=["approaching", "receding"])
        views, label = val[0]   # {2: (3, 2, 32, 32), ...}, 0; val.classes[label] == "approaching"
    """

    CLASSES = CLASSES
    DESCRIPTIONS = DESCRIPTIONS

    def __init__(
        self,
        split: str = "train",
        size: int = 3000,
        frames: Sequence[int] | None = None,
        *,
        train: bool | None = None,
        seed: int = 0,
        noise: float = 20.0,
        num_frames: int = NUM_FRAMES,
        frame_size: int = FRAME_SIZE,
        classes: Sequence[int | str] | None = None,
    ):
        if split not in _SPLITS:
            raise ValueError(f"split must be one of {', '.join(_SPLITS)}, got {split!r}")
        if size < 1:
            raise ValueError(f"size must be positive, got {size}")
        self.split, self.size, self.frames = split, int(size), check_views(frames)
        self.train = split == "train" if train is None else bool(train)
        self.seed, self.noise = int(seed), float(noise)
        self.num_frames, self.frame_size = int(num_frames), int(frame_size)
        self.class_ids = _class_ids(classes)
        self.num_classes = len(self.class_ids)
        self.classes = [CLASSES[c] for c in self.class_ids]
        self.epoch = 0
        self._clips: list[torch.Tensor | None] = [None] * self.size

    def __len__(self) -> int:
        return self.size

    def set_epoch(self, epoch: int) -> None:
        """Training randomness depends on (seed, epoch, index): reproducible, different each epoch."""
        self.epoch = int(epoch)

    def label(self, index: int) -> int:
        return index % self.num_classes

    def clip_seed(self, index: int) -> int:
        return int(_rng(self.seed, _SPLITS[self.split], index).integers(2**31))

    def clip(self, index: int) -> torch.Tensor:
        """The noise-free uint8 clip ``(3, num_frames, H, W)`` of sample ``index`` (cached)."""
        if not 0 <= index < self.size:
            raise IndexError(f"index {index} out of range for {self.size} clips")
        cached = self._clips[index]
        if cached is None:
            cached = render_clip(self.class_ids[self.label(index)], self.clip_seed(index), num_frames=self.num_frames, size=self.frame_size)
            self._clips[index] = cached
        return cached

    def prerender(self) -> "TemporalBenchmark":
        """Render every clip now (otherwise each is rendered on first use)."""
        for i in range(self.size):
            self.clip(i)
        return self

    def __getitem__(self, index: int):
        return self.views_for(index, self.frames)

    def views_for(self, index: int, frames: Sequence[int]):
        """Sample ``index`` with only the views of ``frames`` (a subset of the dataset's); each
        view equals the one ``self[index]`` gives."""
        require_frames(self)
        frames = subset_of_views(frames, self.frames)
        clip = self.clip(index)
        key = (self.seed, _SPLITS[self.split], index, self.epoch if self.train else -1)
        g = torch.Generator().manual_seed(int(_rng(*key).integers(2**62)))
        views = multi_view_indices(self.num_frames, self.frames, train=self.train, generator=g)
        used = sorted({i for idx in views.values() for i in idx})
        kept = sorted({i for t in frames for i in views[t]})
        where = {frame: n for n, frame in enumerate(kept)}
        x = clip[:, kept].float()
        if self.noise > 0:  # drawn for every view's frames, as in self[index], then cut to the kept ones
            noise = torch.randn((3, len(used), *clip.shape[2:]), generator=g)
            x += self.noise * (noise if kept == used else noise[:, [used.index(i) for i in kept]])
        x = (x.clamp_(0, 255) / 255 - MEAN) / STD
        return {t: x[:, [where[i] for i in views[t]]].contiguous() for t in frames}, self.label(index)
