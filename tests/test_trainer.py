import pytest
import torch
from torch import nn

import fan_convert
from fan_convert.train.trainer import EpochSampler, TrainConfig, Trainer, lr_factor, param_groups

FRAMES = (2, 4)


class Toy3D(nn.Module):
    def __init__(self, classes=3):
        super().__init__()
        self.conv = nn.Conv3d(3, 8, 3, padding=1)
        self.bn = nn.BatchNorm3d(8)
        self.head = nn.Linear(8, classes)

    def forward(self, x):
        return self.head(torch.relu(self.bn(self.conv(x))).mean(dim=(2, 3, 4)))


class ToyClips(torch.utils.data.Dataset):
    """Class c: colour channel c is bright; every frame count's view of one sample."""

    def __init__(self, n=24, frames=FRAMES):
        g = torch.Generator().manual_seed(0)
        self.labels = torch.randint(0, 3, (n,), generator=g)
        self.noise = torch.randn(n, 3, max(frames), 6, 6, generator=g)
        self.frames = frames

    def __len__(self):
        return len(self.labels)

    def __getitem__(self, i):
        clip = self.noise[i].clone()
        clip[self.labels[i]] += 1.0
        return {t: clip[:, :: max(self.frames) // t][:, :t] for t in self.frames}, int(self.labels[i])


def make(tmp_path=None, **overrides):
    torch.manual_seed(0)
    fan = fan_convert.adapt(Toy3D(), frames=FRAMES)
    config = TrainConfig(frames=FRAMES, epochs=3, batch_size=4, lr=0.05, progress=False,
                         out_dir=str(tmp_path) if tmp_path else None, **overrides)
    return Trainer(fan, ToyClips(), config)


def test_training_lowers_the_loss_and_logs(tmp_path):
    trainer = make(tmp_path)
    history = trainer.fit()
    assert [r["epoch"] for r in history] == [1, 2, 3]
    assert history[-1]["loss"] < history[0]["loss"]
    assert {"acc@2", "acc@4", "kl@2", "ce@4"} <= set(history[0])
    assert (tmp_path / "log.jsonl").read_text().count("\n") == 3
    assert (tmp_path / "last.safetensors").exists()


def test_resume_after_an_interruption_continues_exactly(tmp_path):
    reference = make(None)
    reference.fit()
    expected = reference.model.state_dict()

    interrupted = make(tmp_path, checkpoint_every=2)
    real_step = interrupted.train_step

    def crash_at_step_9(*args):
        if interrupted.step == 9:  # mid-epoch 2 (6 steps per epoch)
            raise KeyboardInterrupt
        return real_step(*args)

    interrupted.train_step = crash_at_step_9
    with pytest.raises(KeyboardInterrupt):
        interrupted.fit()
    resumed = make(tmp_path, checkpoint_every=2)
    resumed.resume(tmp_path / "last.safetensors")
    assert resumed.step == 8  # lost at most the steps since the last checkpoint
    resumed.fit()
    got = resumed.model.state_dict()
    assert all(torch.allclose(got[k].float(), expected[k].float(), atol=1e-6) for k in expected)


def test_no_weight_decay_on_norms_biases_or_alterations():
    fan = fan_convert.adapt(Toy3D(), frames=FRAMES)
    decay, no_decay = param_groups(fan, 1e-4)
    names = {id(p): n for n, p in fan.named_parameters()}
    assert sorted(names[id(p)] for p in decay["params"]) == ["conv.base_layer.weight", "head.weight"]
    assert all("norms" in names[id(p)] or "scales" in names[id(p)] or "bias" in names[id(p)] for p in no_decay["params"])


def test_schedule_and_sampler():
    config = TrainConfig(frames=(4,), epochs=10, warmup_epochs=1)
    assert lr_factor(0, 10, config) == pytest.approx(0.1)
    assert lr_factor(9, 10, config) == pytest.approx(1.0)
    assert lr_factor(99, 10, config) < 0.01
    step = TrainConfig(frames=(4,), epochs=10, schedule="step", milestones=(5, 8))
    assert [lr_factor(s, 1, step) for s in (4, 5, 8)] == [1.0, pytest.approx(0.1), pytest.approx(0.01)]
    shards = [EpochSampler(10, shuffle=True, seed=0, rank=r, world=2).order() for r in (0, 1)]
    assert len(shards[0]) == len(shards[1]) == 5 and set(shards[0]) | set(shards[1]) == set(range(10))
    with pytest.raises(ValueError, match="optimizer must be one of"):
        TrainConfig(frames=(4,), optimizer="lamb")


def test_evaluate_and_calibrate():
    from fan_convert.train.evaluate import calibrate, deviation_table, evaluate

    trainer = make(None)
    trainer.fit()
    table = evaluate(trainer.model, ToyClips(), FRAMES, batch_size=8)
    assert set(table) == set(FRAMES) and all(0 <= r["top1"] <= 100 and r["clips"] == 24 for r in table.values())
    assert table[4]["top5"] == 100.0  # 3 classes
    plain = evaluate(Toy3D(), ToyClips(), FRAMES)  # any plain video model can be diagnosed
    assert set(plain) == set(FRAMES)
    fan = trainer.model
    bank = fan.bn
    before = bank.norms["4"].running_mean.clone()
    calibrate(fan, ToyClips(), batches=2, batch_size=4)
    assert not torch.equal(bank.norms["4"].running_mean, before)
    assert bank.norms["4"].num_batches_tracked.item() == 2 and bank.norms["4"].momentum == 0.1
    deviation_table({"fan": table}, keys=FRAMES)


def test_results_json_and_plot(tmp_path):
    from fan_convert.train.evaluate import plot_results, save_results

    results = {"plain": {4: {"top1": 30.0, "top5": 80.0, "clips": 10, "skipped": 0},
                         16: {"top1": 90.0, "top5": 99.0, "clips": 10, "skipped": 0}}}
    save_results(results, tmp_path / "r.json")
    assert '"4"' in (tmp_path / "r.json").read_text()
    png = plot_results(results, tmp_path / "r.png", keys=(4, 16))
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_bf16_autocast_step_trains_fp32_weights():
    # the AMP path of train_step; on CPU, autocast runs the convolutions in bfloat16
    trainer = make(None, amp="bf16")
    parts = trainer.train_step(*next(iter(trainer._loader()))[:2])
    assert all(torch.isfinite(v) for v in parts.values())
    assert all(p.dtype == torch.float32 for p in trainer.model.parameters())
    scales = trainer.model.conv.scales
    assert all(s.abs().sum() > 0 for s in scales.values())  # every key's alteration got a gradient step


def test_channels_last_covers_2d_and_3d_weights_and_trains():
    from fan_convert.train.trainer import to_channels_last

    mixed = nn.Sequential(nn.Conv2d(3, 4, 3), nn.Conv3d(4, 4, 3))
    to_channels_last(mixed)  # nn.Module.to(memory_format=...) refuses the 5-D weight
    assert mixed[0].weight.is_contiguous(memory_format=torch.channels_last)
    assert mixed[1].weight.is_contiguous(memory_format=torch.channels_last_3d)
    trainer = make(None, channels_last=True)
    assert trainer.model.conv.base_layer.weight.is_contiguous(memory_format=torch.channels_last_3d)
    history = trainer.fit()
    assert history[0]["loss"] == history[0]["loss"]  # finite, not NaN
