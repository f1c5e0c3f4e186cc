"""The built-in temporal benchmark, the tiny backbone and the demo's smoke run."""

import json

import pytest
import torch

from fan_convert.data import collate_views
from fan_convert.data.synthetic import CLASSES, DESCRIPTIONS, REVERSE_OF, TemporalBenchmark, render_clip
from fan_convert.testing import count_parameters
from fan_convert.zoo.tiny import tiny_resnet
from fan_convert.zoo.wrappers import TSM


def test_classes_and_descriptions():
    assert len(CLASSES) == len(set(CLASSES)) == 16
    assert set(DESCRIPTIONS) == set(CLASSES)
    assert TemporalBenchmark.CLASSES == CLASSES
    for a, b in REVERSE_OF.items():
        assert REVERSE_OF[b] == a and a != b


def test_rendering_is_deterministic_by_seed():
    for label in range(len(CLASSES)):
        a, b = render_clip(label, 123), render_clip(label, 123)
        assert a.dtype == torch.uint8 and a.shape == (3, 32, 32, 32)
        assert torch.equal(a, b)
        assert not torch.equal(a, render_clip(label, 124))
    one = TemporalBenchmark("train", size=12, frames=(4, 8, 16), seed=3)
    two = TemporalBenchmark("train", size=12, frames=(4, 8, 16), seed=3)
    other = TemporalBenchmark("train", size=12, seed=4)
    val = TemporalBenchmark("val", size=12, seed=3)
    for i in (0, 5, 11):
        assert torch.equal(one.clip(i), two.clip(i))
        assert not torch.equal(one.clip(i), other.clip(i))
        assert not torch.equal(one.clip(i), val.clip(i))
        v1, l1 = one[i]
        v2, l2 = two[i]
        assert l1 == l2 == i % len(CLASSES)
        assert all(torch.equal(v1[t], v2[t]) for t in v1)


def test_views_contract_and_epoch_randomness():
    frames = (4, 8, 16)
    train = TemporalBenchmark("train", size=24, frames=frames, seed=0)
    views, label = train[7]
    assert set(views) == set(frames) and label == 7
    for t, clip in views.items():
        assert clip.shape == (3, t, 32, 32) and clip.dtype == torch.float32
    assert -3 < views[16].mean() < 3 and 0.2 < views[16].std() < 3
    first = train[7][0][16]
    assert torch.equal(first, train[7][0][16])  # same epoch: same sample
    train.set_epoch(1)
    assert not torch.equal(first, train[7][0][16])  # new offsets and noise each epoch
    train.set_epoch(0)
    assert torch.equal(first, train[7][0][16])

    val = TemporalBenchmark("val", size=24, frames=(2, 6, 16), seed=0)
    assert not val.train
    before = val[3][0][6]
    val.set_epoch(5)
    assert torch.equal(before, val[3][0][6])  # evaluation: segment centres, fixed noise
    clean = TemporalBenchmark("val", size=24, frames=(4,), seed=0, noise=0)
    centres = [4, 12, 20, 28]
    expected = (clean.clip(3)[:, centres].float() / 255 - 0.45) / 0.25
    assert torch.allclose(clean[3][0][4], expected)

    batch = collate_views([train[i] for i in range(7, 12)])
    views, labels, skipped = batch
    assert views[8].shape == (5, 3, 8, 32, 32) and labels.tolist() == [7, 8, 9, 10, 11] and skipped == 0
    assert len(TemporalBenchmark("train", size=30)) == 30
    with pytest.raises(ValueError, match="split"):
        TemporalBenchmark("dev", size=4)


def test_every_class_renders_something_happening():
    for label, name in enumerate(CLASSES):
        for seed in range(3):
            clip = render_clip(label, seed).float()
            assert clip.std() > 5, name
            change = (clip[:, 1:] - clip[:, :-1]).abs().mean()
            assert change > 0.5, name  # the distractor always moves
    with pytest.raises(ValueError):
        render_clip(len(CLASSES), 0)


def test_a_single_frame_cannot_tell_time_reversed_classes_apart():
    """For every reversal pair, the same seed renders the partner as the same frames played
    backwards: the set of frames is identical, only their order tells the class."""
    for label, partner in REVERSE_OF.items():
        for seed in (0, 1, 2):
            clip = render_clip(label, seed)
            reversed_partner = render_clip(partner, seed).flip(1)
            assert torch.equal(clip, reversed_partner), (CLASSES[label], CLASSES[partner])
            assert not torch.equal(clip, clip.flip(1))

    # and statistically, over independent seeds: the frames of 'moving left fast' and of
    # 'moving right fast' differ no more than two samples of 'moving left fast' do
    def frame_stats(label, seeds):
        frames = torch.stack([render_clip(label, s).float() for s in seeds]).transpose(1, 2).flatten(0, 1)
        return frames.mean(0), frames.std(0)  # per-pixel mean/std over every frame of every clip

    left, right = CLASSES.index("moving left fast"), CLASSES.index("moving right fast")
    (m1, s1), (m2, s2), (m3, s3) = frame_stats(left, range(40)), frame_stats(left, range(40, 80)), frame_stats(right, range(80, 120))
    assert (m1 - m3).abs().mean() < 1.5 * (m1 - m2).abs().mean()
    assert (s1 - s3).abs().mean() < 1.5 * (s1 - s2).abs().mean()


def test_event_classes_are_brief():
    """flash/hop/blink are the idle clip of the same seed plus an event of one or two source frames (16
    evenly spaced frames catch 3/4 of them, 4 about 3/16)."""
    idle_label = CLASSES.index("nothing happens")
    for name in ("flashing", "hopping", "blinking"):
        label = CLASSES.index(name)
        for seed in range(6):
            clip, idle = render_clip(label, seed), render_clip(idle_label, seed)
            changed = (clip != idle).flatten(2).any(-1).any(0)
            assert 1 <= int(changed.sum()) <= 2, name


def test_tiny_resnet_shape_and_tsm():
    backbone = tiny_resnet(num_classes=14)
    assert 50_000 <= count_parameters(backbone) <= 150_000
    assert backbone(torch.randn(2, 3, 32, 32)).shape == (2, 14)
    model = TSM(backbone)
    assert len(model.shifted) == 3
    views, _ = TemporalBenchmark("val", size=2, frames=(4, 16))[1]
    model.eval()
    for t in (4, 16):
        assert model(views[t][None]).shape == (1, 14)
    assert tiny_resnet(num_classes=5, blocks=2, widths=(8, 16))(torch.randn(1, 3, 32, 32)).shape == (1, 5)
    with pytest.raises(ValueError):
        tiny_resnet(widths=(8, 16), blocks=(1,))


def test_demo_quick_smoke(tmp_path):
    import fan_convert
    from fan_convert.train.demo import run_demo

    results = run_demo(str(tmp_path / "demo"), quick=True, progress=False)
    path = tmp_path / "demo" / "fan.safetensors"
    assert path.is_file() and (tmp_path / "demo" / "results.json").is_file()
    stored = json.loads((tmp_path / "demo" / "results.json").read_text())
    assert set(stored["plain"]) == set(stored["fan"]) == {"4", "6", "8", "12", "16"}
    assert set(results["fan"]) == {4, 6, 8, 12, 16}
    manifest = fan_convert.read_manifest(path)
    assert manifest["arch"] == {"spec": "fan_convert:tiny_resnet", "kwargs": {"temporal": "tsm", "num_classes": len(CLASSES)}}
    assert manifest["frames"] == [4, 8, 16]
    fan = fan_convert.load(path)  # rebuilds fan_convert:tiny_resnet from the manifest: must not raise
    views, _ = TemporalBenchmark("val", size=1, frames=(8,))[0]
    assert fan(views[8][None]).shape == (1, len(CLASSES))


def test_a_subset_of_classes_is_relabelled_in_the_order_given():
    data = TemporalBenchmark("val", size=6, frames=(4,), classes=["receding", 0, "flashing"])
    assert data.num_classes == 3 and data.classes == ["receding", CLASSES[0], "flashing"]
    assert [data[i][1] for i in range(6)] == [0, 1, 2, 0, 1, 2]
    assert torch.equal(data.clip(0), render_clip(CLASSES.index("receding"), data.clip_seed(0)))
    for bad in (["no such class"], [16], [], [1, 1]):
        with pytest.raises(ValueError, match="class"):
            TemporalBenchmark("val", size=6, classes=bad)
