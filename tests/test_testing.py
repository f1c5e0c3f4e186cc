"""The shared helpers of fan_convert.testing do what tests and benchmarks rely on."""

import av
import numpy as np
import pytest
import torch
from torch import nn

import fan_convert
from fan_convert.testing import as_if_fine_tuned, count_parameters, per_key_state, random_clip, randomize_norms, write_video


def tiny():
    return nn.Sequential(nn.Conv3d(3, 4, 1), nn.BatchNorm3d(4), nn.ReLU(), nn.AdaptiveAvgPool3d(1), nn.Flatten(), nn.Linear(4, 2))


def test_randomize_norms_moves_every_statistic_and_affine_parameter():
    model = randomize_norms(tiny())
    bn = model[1]
    for value, fresh in ((bn.running_var, 1.0), (bn.running_mean, 0.0), (bn.weight, 1.0), (bn.bias, 0.0)):
        assert (value != fresh).all()
    assert ((bn.running_var >= 0.5) & (bn.running_var < 1.5)).all()
    assert torch.equal(randomize_norms(tiny(), seed=3)[1].running_var, randomize_norms(tiny(), seed=3)[1].running_var)


def test_random_clip_layouts():
    assert random_clip(8, 32, batch=2).shape == (2, 3, 8, 32, 32)
    assert random_clip(8, 32, frame_axis=1).shape == (1, 8, 3, 32, 32)
    slow, fast = random_clip(8, 16, alpha=4)
    assert slow.shape == (1, 3, 2, 16, 16) and torch.equal(slow, fast[:, :, ::4])
    assert torch.equal(random_clip(4, seed=1), random_clip(4, seed=1)) and not torch.equal(random_clip(4), random_clip(4, seed=1))


def test_per_key_state_and_fine_tuning_noise_touch_only_per_key_entries():
    fan = fan_convert.adapt(tiny(), frames=(4, 8))
    owners = per_key_state(fan)
    assert set(owners.values()) == {4, 8} and "1.norms.4.running_var" in owners and "0.scales.8" in owners
    before = {n: v.clone() for n, v in fan.state_dict().items()}
    as_if_fine_tuned(fan)
    changed = {n for n, v in fan.state_dict().items() if not torch.equal(before[n], v)}
    assert changed and changed <= set(owners)
    assert count_parameters(fan) == fan.fan_plan.params_after and not per_key_state(fan_convert.specialize(fan, 4))


def test_write_video_encodes_the_given_frames(tmp_path):
    frames = [np.full((32, 48, 3), 20 * i, np.uint8) for i in range(6)]
    path = write_video(tmp_path / "clip.mp4", frames, fps=5)
    with av.open(str(path)) as container:
        decoded = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
    assert len(decoded) == 6 and decoded[0].shape == (32, 48, 3)
    assert [round(float(f.mean()) / 20) for f in decoded] == list(range(6))
    with pytest.raises(ValueError, match="no frames"):
        write_video(tmp_path / "empty.mp4", [])
    assert not (tmp_path / "empty.mp4").exists()
