"""Video data for FAN training: readers for the usual layouts, decoded once per sample, with
every frame count's view cut from the same frames under the same spatial augmentation.

Layouts:
- a folder of videos per class: ``root/<class>/<video>.mp4|.avi|.mkv|.webm|.mov`` (PyAV);
- an annotation list (``path label`` per line, separated by spaces, tabs or commas; Kinetics /
  SSv2 style; labels are indices or class names, with an optional class-name file);
- frame folders (one folder of JPEG/PNG frames per video, Something-Something V1 layout) with an
  annotation list (``folder label`` or ``folder num_frames label``).
"""

from __future__ import annotations

import math
import re
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from .sampling import multi_view_indices

VIDEO_SUFFIXES = (".mp4", ".avi", ".mkv", ".webm", ".mov")
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")
KINETICS_MEAN, KINETICS_STD = (0.45, 0.45, 0.45), (0.225, 0.225, 0.225)


class DataError(ValueError):
    """Data that cannot be used as given."""


class DecodeError(RuntimeError):
    """One video or frame folder that could not be decoded."""


@dataclass(frozen=True)
class Item:
    path: Path
    label: int


def video_folder(root: str | Path) -> tuple[list[Item], list[str]]:
    """Items and class names from ``root/<class>/<video>`` (classes sorted by name).

    Example::

        items, classes = video_folder("kinetics/train")   # kinetics/train/<class>/<video>.mp4
    """
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"data folder '{root}' does not exist; expected root/<class>/<video>.mp4")
    classes = sorted(d.name for d in root.iterdir() if d.is_dir())
    items = [
        Item(path, label)
        for label, name in enumerate(classes)
        for path in sorted((root / name).iterdir())
        if path.suffix.lower() in VIDEO_SUFFIXES
    ]
    if not items:
        raise DataError(f"no videos found under '{root}'; expected root/<class>/<video>{'|'.join(VIDEO_SUFFIXES)}")
    return items, classes


def annotation_list(
    list_file: str | Path, root: str | Path | None = None, classes_file: str | Path | None = None
) -> tuple[list[Item], list[str]]:
    """Items from a list file of ``path label`` (or ``path num_frames label``) lines; paths are
    relative to ``root`` (default: the list file's folder). Labels are indices or class names;
    names come from ``classes_file`` (one per line) or, without it, from the labels seen.

    Example::

        items, classes = annotation_list("ssv2/train.txt", root="ssv2/frames", classes_file="ssv2/classes.txt")
    """
    list_file = Path(list_file)
    if not list_file.is_file():
        raise DataError(f"annotation list '{list_file}' does not exist; check the path")
    root = Path(root) if root is not None else list_file.parent
    classes = _read_classes(classes_file) if classes_file else None
    rows = []
    for number, line in enumerate(list_file.read_text().splitlines(), start=1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        fields = [f for f in re.split(r"[,\t ]+", line.strip()) if f]
        if len(fields) not in (2, 3):
            raise DataError(f"{list_file}:{number}: expected 'path label' or 'path num_frames label', got {line.strip()!r}")
        rows.append((number, fields[0], fields[-1]))
    if not rows:
        raise DataError(f"annotation list '{list_file}' has no entries")
    numeric = all(label.isdigit() for _, _, label in rows)
    if classes is None:
        classes = [str(i) for i in range(max(int(lb) for _, _, lb in rows) + 1)] if numeric else sorted({lb for _, _, lb in rows})
    index = {name: i for i, name in enumerate(classes)}
    items = []
    for number, path, label in rows:
        if label.isdigit() and (numeric or label not in index):
            value = int(label)
            if value >= len(classes):
                raise DataError(
                    f"{list_file}:{number}: label {value} is out of range for {len(classes)} classes; fix the list or the class file"
                )
        elif label in index:
            value = index[label]
        else:
            raise DataError(f"{list_file}:{number}: label {label!r} is not in the class list; add it to the class file or fix the line")
        items.append(Item(root / path, value))
    return items, classes


def _read_classes(path: str | Path) -> list[str]:
    path = Path(path)
    if not path.is_file():
        raise DataError(f"class file '{path}' does not exist; check the path")
    names = [line.strip() for line in path.read_text().splitlines() if line.strip()]
    if len(set(names)) != len(names):
        raise DataError(f"class file '{path}' lists a class twice")
    return names


def decode(path: Path, short_side: int | None = None) -> torch.Tensor:
    """All frames of a video file (PyAV) or a frame folder as uint8 ``(N, H, W, 3)``, counted by
    decoding (container durations can lie); resized so the short side is ``short_side``.

    Example::

        video = decode(Path("clips/jump.mp4"), short_side=128)   # uint8 (N, H, W, 3), min(H, W) == 128
    """
    try:
        frames = _decode_folder(path) if path.is_dir() else _decode_video(path, short_side)
    except DecodeError:
        raise
    except Exception as err:
        raise DecodeError(f"cannot decode '{path}': {err}") from None
    if frames.shape[0] == 0:
        raise DecodeError(f"'{path}' has no frames")
    if short_side and min(frames.shape[1:3]) != short_side:
        frames = _resize(frames.permute(0, 3, 1, 2), short_side).permute(0, 2, 3, 1).to(torch.uint8)
    return frames


def _decode_video(path: Path, short_side: int | None) -> torch.Tensor:
    import av

    with av.open(str(path)) as container:
        if not container.streams.video:
            raise DecodeError(f"'{path}' has no video stream")
        frames = []
        for frame in container.decode(video=0):
            if short_side:
                scale = short_side / min(frame.width, frame.height)
                frame = frame.reformat(width=round(frame.width * scale / 2) * 2, height=round(frame.height * scale / 2) * 2)
            frames.append(torch.from_numpy(frame.to_ndarray(format="rgb24")))
    return torch.stack(frames) if frames else torch.zeros(0, 1, 1, 3, dtype=torch.uint8)


def _decode_folder(path: Path) -> torch.Tensor:
    from torchvision.io import ImageReadMode, decode_image, read_file

    files = sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise DecodeError(f"frame folder '{path}' has no {'/'.join(IMAGE_SUFFIXES)} images")
    return torch.stack([decode_image(read_file(str(f)), mode=ImageReadMode.RGB).permute(1, 2, 0) for f in files])


def _resize(x: torch.Tensor, short_side: int) -> torch.Tensor:
    h, w = x.shape[-2:]
    scale = short_side / min(h, w)
    size = (max(short_side, round(h * scale)), max(short_side, round(w * scale)))
    return F.interpolate(x.float(), size=size, mode="bilinear", align_corners=False, antialias=True).round().clamp(0, 255)


class MultiViewClips(Dataset):
    """Each sample: ``({t: clip (3, t, S, S) for t in frames}, label)`` from one decode.

    Training: random segment offsets, one random-resized crop (and a horizontal flip if
    ``flip``) shared by every view. Evaluation: segment centres, short side resized to
    ``resize``, centre crop. A video that fails to decode gives ``None`` (with a warning);
    :func:`collate_views` drops and counts it.

    Example::

        items, classes = video_folder("kinetics/train")
        train = MultiViewClips(items, (4, 8, 16), train=True, crop_size=112, flip=True)
        views, label = train[0]   # {4: (3, 4, 112, 112), 8: ..., 16: ...}, int
    """

    def __init__(
        self,
        items: Sequence[Item],
        frames: Sequence[int],
        *,
        train: bool,
        crop_size: int = 112,
        resize: int = 128,
        scale: tuple[float, float] = (0.35, 1.0),
        flip: bool = False,
        mean: Sequence[float] = KINETICS_MEAN,
        std: Sequence[float] = KINETICS_STD,
        seed: int = 0,
    ):
        self.items, self.frames, self.train = list(items), tuple(sorted(frames)), train
        self.crop_size, self.resize, self.scale, self.flip = crop_size, resize, scale, flip
        self.mean = torch.tensor(mean).view(3, 1, 1, 1)
        self.std = torch.tensor(std).view(3, 1, 1, 1)
        self.seed = seed
        self.epoch = 0

    def __len__(self) -> int:
        return len(self.items)

    def set_epoch(self, epoch: int) -> None:
        """Training randomness depends on (seed, epoch, index): reproducible, different each epoch."""
        self.epoch = epoch

    def __getitem__(self, index: int):
        item = self.items[index]
        try:
            video = decode(item.path, self.resize)
        except DecodeError as err:
            warnings.warn(f"skipping sample: {err}", stacklevel=2)
            return None
        g = torch.Generator().manual_seed(hash((self.seed, self.epoch, index)) % (2**63) if self.train else self.seed)
        views = multi_view_indices(video.shape[0], self.frames, train=self.train, generator=g)
        return self.transform(video, views, g), item.label

    def transform(self, video: torch.Tensor, views: dict[int, list[int]], g: torch.Generator) -> dict[int, torch.Tensor]:
        """Crop/flip/normalise the frames the views use, once, then gather each view."""
        used = sorted({i for idx in views.values() for i in idx})
        where = {frame: n for n, frame in enumerate(used)}
        x = video[used].permute(3, 0, 1, 2).float()  # (3, n, H, W)
        x = self._crop(x, g)
        x = (x / 255 - self.mean) / self.std
        return {t: x[:, [where[i] for i in idx]].contiguous() for t, idx in views.items()}

    def _crop(self, x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
        h, w = x.shape[-2:]
        size = self.crop_size
        if not self.train:
            top, left = (h - size) // 2, (w - size) // 2
            return x[..., top : top + size, left : left + size] if min(h, w) >= size else _square(x, size)
        area = h * w * float(torch.empty(1).uniform_(*self.scale, generator=g))
        ratio = math.exp(float(torch.empty(1).uniform_(math.log(3 / 4), math.log(4 / 3), generator=g)))
        ch = min(h, max(1, round(math.sqrt(area / ratio))))
        cw = min(w, max(1, round(math.sqrt(area * ratio))))
        top = int(torch.randint(0, h - ch + 1, (1,), generator=g))
        left = int(torch.randint(0, w - cw + 1, (1,), generator=g))
        x = _square(x[..., top : top + ch, left : left + cw], size)
        if self.flip and bool(torch.rand(1, generator=g) < 0.5):
            x = x.flip(-1)
        return x


def _square(x: torch.Tensor, size: int) -> torch.Tensor:
    """Resize (3, n, h, w) frames to (3, n, size, size)."""
    return F.interpolate(x.transpose(0, 1), size=(size, size), mode="bilinear", align_corners=False).transpose(0, 1)


def collate_views(batch):
    """Stack views of the samples that decoded; returns ``(views, labels, skipped)``.

    Example::

        loader = DataLoader(MultiViewClips(items, (4, 8), train=True), batch_size=16, collate_fn=collate_views)
        views, labels, skipped = next(iter(loader))   # views[8]: (B, 3, 8, 112, 112)
    """
    good = [sample for sample in batch if sample is not None]
    skipped = len(batch) - len(good)
    if not good:
        return {}, torch.zeros(0, dtype=torch.long), skipped
    views = {t: torch.stack([s[0][t] for s in good]) for t in good[0][0]}
    labels = torch.tensor([s[1] for s in good], dtype=torch.long)
    return views, labels, skipped
