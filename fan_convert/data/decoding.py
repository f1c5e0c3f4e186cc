"""Decoding videos and frame folders into uint8 ``(N, H, W, 3)`` frames.

Two readers share one idea of a frame index (the i-th frame the decoder outputs, in
presentation order) and one resize, so they return identical pixels for the same indices:

- :func:`decode` reads every frame (simple, slow: kept as the reference and for whole-video use);
- :func:`read_sampled` reads only the frames a sampler asks for: it counts the frames from the
  packets (no decoding), converts and resizes only the chosen frames, skips decoding the
  non-reference frames nobody asked for, stops after the last chosen frame, and seeks to a later
  keyframe when the next chosen frame lies beyond it. Frame folders read only the chosen images.
"""

from __future__ import annotations

import bisect
import itertools
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable

import torch
import torch.nn.functional as F

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")
# Containers whose index makes keyframe seeks exact (mov/mp4 family, Matroska/WebM, AVI).
SEEKABLE_FORMATS = ("mov", "mp4", "matroska", "webm", "avi")
SEEK_MIN_SKIP = 16  # frames a seek must skip to be worth a decoder flush


class DecodeError(RuntimeError):
    """One video or frame folder that could not be decoded."""


@dataclass
class SampledFrames:
    """The chosen frames of one video: ``frames[k]`` is source frame ``indices[k]``.

    ``num_frames`` is the video's length, ``decoded`` how many frames went through the decoder
    (less than ``num_frames`` when the reader stopped early, skipped or sought), ``seeks`` how
    many keyframe seeks it made.
    """

    frames: torch.Tensor
    indices: list[int]
    num_frames: int
    decoded: int = 0
    seeks: int = 0


def decode(path: Path, short_side: int | None = None) -> torch.Tensor:
    """All frames of a video file (PyAV) or a frame folder as uint8 ``(N, H, W, 3)``, counted by
    decoding (container durations can lie); resized so the short side is ``short_side``.

    Example::

        video = decode(Path("clips/jump.mp4"), short_side=128)   # uint8 (N, H, W, 3), min(H, W) == 128
    """
    return _guarded(path, lambda: _decode_folder(path, None, short_side) if path.is_dir() else _decode_video(path, short_side))


def read_sampled(
    path: Path, choose: Callable[[int], Iterable[int]], short_side: int | None = None, *, threads: int = 1
) -> SampledFrames:
    """The frames ``choose(num_frames)`` names, read without decoding the rest where possible.

    ``choose`` may be called more than once (if the packet count proves wrong, the reader falls
    back to counting by decoding) and must return the same indices for the same count.
    ``threads``: decoder threads (0: FFmpeg's choice, which costs more CPU per video; see docs/data.md).

    Example::

        got = read_sampled(Path("clips/jump.mp4"), lambda n: [0, n // 2, n - 1], short_side=128)
        got.frames.shape   # (3, 128, 170, 3): frames 0, n/2 and n-1
    """
    if path.is_dir():
        return _guarded(path, lambda: _read_folder(path, choose, short_side))
    return _guarded(path, lambda: _read_video(path, choose, short_side, threads))


def _guarded(path: Path, read):
    if not path.exists():
        raise DecodeError(f"'{path}' does not exist")
    try:
        result = read()
    except DecodeError:
        raise
    except Exception as err:
        reason = getattr(err, "strerror", None) or str(err).strip() or type(err).__name__  # FFmpeg errors: no path
        raise DecodeError(f"cannot decode '{path}': {reason}") from None
    if (result.shape[0] if isinstance(result, torch.Tensor) else result.num_frames) == 0:
        raise DecodeError(f"'{path}' has no frames")
    return result


def _rgb(frame, short_side: int | None) -> torch.Tensor:
    """One decoded frame as uint8 (H, W, 3), scaled (in its own pixel format) to the short side."""
    if short_side:
        scale = short_side / min(frame.width, frame.height)
        frame = frame.reformat(width=round(frame.width * scale / 2) * 2, height=round(frame.height * scale / 2) * 2)
    return torch.from_numpy(frame.to_ndarray(format="rgb24"))


class _ToRGB:
    """:func:`_rgb` for many frames of one video: the scaler contexts are made once and run on
    ``threads`` threads (same pixels; PyAV's per-frame default builds a threaded context per call)."""

    def __init__(self, short_side: int | None, threads: int):
        from av.video.reformatter import VideoReformatter

        self.short_side, self.threads = short_side, threads
        self.scaler, self.converter = VideoReformatter(), VideoReformatter()

    def __call__(self, frame) -> torch.Tensor:
        if self.short_side:
            scale = self.short_side / min(frame.width, frame.height)
            width, height = round(frame.width * scale / 2) * 2, round(frame.height * scale / 2) * 2
            frame = self.scaler.reformat(frame, width=width, height=height, threads=self.threads)
        return torch.from_numpy(self.converter.reformat(frame, format="rgb24", threads=self.threads).to_ndarray())


def _fit(frames: torch.Tensor, short_side: int | None) -> torch.Tensor:
    """Exact short side for (N, H, W, 3) frames (after even-size rounding or for image files)."""
    if short_side and frames.shape[0] and min(frames.shape[1:3]) != short_side:
        frames = _resize(frames.permute(0, 3, 1, 2), short_side).permute(0, 2, 3, 1).to(torch.uint8)
    return frames


def _resize(x: torch.Tensor, short_side: int) -> torch.Tensor:
    h, w = x.shape[-2:]
    scale = short_side / min(h, w)
    size = (max(short_side, round(h * scale)), max(short_side, round(w * scale)))
    return F.interpolate(x.float(), size=size, mode="bilinear", align_corners=False, antialias=True).round().clamp(0, 255)


def _open(path: Path, threads: int):
    import av

    # FFmpeg's stream probing would decode a frame we never use: the probe decoder skips it.
    container = av.open(str(path), options={"skip_frame": "all"})
    if not container.streams.video:
        container.close()
        raise DecodeError(f"'{path}' has no video stream")
    stream = container.streams.video[0]
    stream.thread_type = "AUTO"
    stream.thread_count = threads
    return container, stream


def _decode_video(path: Path, short_side: int | None) -> torch.Tensor:
    import av

    with av.open(str(path)) as container:
        if not container.streams.video:
            raise DecodeError(f"'{path}' has no video stream")
        frames = [_rgb(frame, short_side) for frame in container.decode(video=0)]
    return _fit(torch.stack(frames), short_side) if frames else torch.zeros(0, 1, 1, 3, dtype=torch.uint8)


def _read_video(path: Path, choose, short_side: int | None, threads: int) -> SampledFrames:
    container, stream = _open(path, threads)
    with container:
        packets = [(p.pts, p.is_keyframe) for p in container.demux(stream) if p.size]
        seekable = container.format.name.split(",")[0] in SEEKABLE_FORMATS
    if not packets:
        raise DecodeError(f"'{path}' has no frames")
    pts = [p for p, _ in packets]
    wanted = sorted(set(choose(len(packets))))
    if wanted and wanted[-1] >= len(packets):
        raise ValueError(f"frame {wanted[-1]} asked of a {len(packets)}-frame video")
    got = None
    if None not in pts and len(set(pts)) == len(pts):
        keyframes = {p for p, key in packets if key}
        got = _by_timestamp(path, wanted, sorted(pts), keyframes if seekable else [], short_side, threads)
    if got is None:  # no usable timestamps, or the packets did not match the decoded frames
        got = _in_order(path, choose, short_side, threads, len(packets))
    return got


def _by_timestamp(path, wanted, frame_pts, keyframes, short_side, threads) -> SampledFrames | None:
    """Frames identified by timestamp: frame i is the i-th smallest packet timestamp. Packets of
    unwanted frames are decoded with non-reference frames skipped; None if a wanted frame never
    came out or a seek went wrong (the caller then reads in order)."""
    index = {t: i for i, t in enumerate(frame_pts)}
    key_index = sorted(index[k] for k in keyframes)
    todo = {frame_pts[i] for i in wanted}
    found: dict[int, torch.Tensor] = {}
    decoded = seeks = 0
    position = -1  # presentation index of the last frame the decoder gave
    to_rgb = _ToRGB(short_side, max(threads, 1))
    container, stream = _open(path, threads)
    with container:
        codec = stream.codec_context
        packets = container.demux(stream)
        while todo:
            jump = _seek_target(key_index, _next(wanted, found), position)
            if jump is not None:
                container.seek(frame_pts[jump], stream=stream, backward=True, any_frame=False)
                packets, seeks, position = container.demux(stream), seeks + 1, jump - 1
                first = next(packets, None)
                if first is None or first.pts not in keyframes or first.pts > frame_pts[jump]:
                    return None
                packets = itertools.chain([first], packets)
            for packet in packets:
                if packet.size and packet.pts is not None:
                    codec.skip_frame = "DEFAULT" if packet.pts in todo else "NONREF"
                for frame in packet.decode():
                    decoded += 1
                    at = index.get(frame.pts)
                    if at is None:
                        return None
                    position = max(position, at)
                    if frame.pts in todo:
                        todo.discard(frame.pts)
                        found[at] = to_rgb(frame)
                if not todo or (key_index and _seek_target(key_index, _next(wanted, found), position) is not None):
                    break
            else:
                break
    if todo:
        return None
    frames = _fit(torch.stack([found[i] for i in wanted]), short_side)
    return SampledFrames(frames, wanted, len(frame_pts), decoded, seeks)


def _next(wanted: list[int], found: dict) -> int:
    return next(i for i in wanted if i not in found)


def _seek_target(key_index: list[int], next_wanted: int, position: int) -> int | None:
    """The last keyframe at or before the next wanted frame, if seeking there skips enough frames."""
    at = bisect.bisect_right(key_index, next_wanted) - 1
    if at >= 0 and key_index[at] - (position + 1) >= SEEK_MIN_SKIP:
        return key_index[at]
    return None


def _in_order(path, choose, short_side, threads, estimate) -> SampledFrames:
    """Frames identified by their order of output (as :func:`decode` counts them), stopping after
    the last wanted one; if the video proves shorter than ``estimate``, count it and read again."""
    got = _first_frames(path, sorted(set(choose(estimate))), estimate, short_side, threads)
    if got is None:
        container, stream = _open(path, threads)
        with container:
            count = sum(1 for _ in container.decode(stream))
        if count == 0:
            raise DecodeError(f"'{path}' has no frames")
        got = _first_frames(path, sorted(set(choose(count))), count, short_side, threads)
    return got


def _first_frames(path, wanted, count, short_side, threads) -> SampledFrames | None:
    found, decoded, todo = {}, 0, set(wanted)
    to_rgb = _ToRGB(short_side, max(threads, 1))
    container, stream = _open(path, threads)
    with container:
        for frame in container.decode(stream):
            if decoded in todo:
                found[decoded] = to_rgb(frame)
            decoded += 1
            if len(found) == len(wanted):
                return SampledFrames(_fit(torch.stack([found[i] for i in wanted]), short_side), wanted, count, decoded)
    return None


def _image_files(path: Path) -> list[Path]:
    files = sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise DecodeError(f"frame folder '{path}' has no {'/'.join(IMAGE_SUFFIXES)} images")
    return files


def _decode_folder(path: Path, wanted: list[int] | None, short_side: int | None) -> torch.Tensor:
    from torchvision.io import ImageReadMode, decode_image, read_file

    files = _image_files(path)
    chosen = files if wanted is None else [files[i] for i in wanted]
    frames = torch.stack([decode_image(read_file(str(f)), mode=ImageReadMode.RGB).permute(1, 2, 0) for f in chosen])
    return _fit(frames, short_side)


def _read_folder(path: Path, choose, short_side: int | None) -> SampledFrames:
    count = len(_image_files(path))
    wanted = sorted(set(choose(count)))
    return SampledFrames(_decode_folder(path, wanted, short_side), wanted, count, len(wanted))
