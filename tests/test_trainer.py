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


def crash_at(trainer, step: int) -> None:
    """Make ``trainer`` stop as if killed (KeyboardInterrupt) when it reaches ``step``."""
    real_step = trainer.train_step

    def crashing(*args, **kwargs):
        if trainer.step == step:
            raise KeyboardInterrupt
        return real_step(*args, **kwargs)

    trainer.train_step = crashing


def make(tmp_path=None, data=None, **overrides):
    """A trainer on the paper's joint schedule (every key each step, mutual distillation); the
    one-key schedules, the default among them, are tested in tests/test_key_schedule.py."""
    torch.manual_seed(0)
    fan = fan_convert.adapt(Toy3D(), frames=FRAMES)
    options = dict(epochs=3, batch_size=4, lr=0.05, progress=False, out_dir=str(tmp_path) if tmp_path else None,
                   key_schedule="joint")
    config = TrainConfig(frames=FRAMES, **(options | overrides))
    return Trainer(fan, data if data is not None else ToyClips(), config)


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
    crash_at(interrupted, 9)  # mid-epoch 2 (6 steps per epoch)
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


READ_BACKS = ("item", "tolist", "cpu", "numpy", "__bool__", "__float__", "__int__")


class ReadBackCounter:
    """Counts calls that copy a tensor's value to the host (on a GPU: a stall until the GPU catches up)."""

    def __init__(self, monkeypatch, floating_only=False):
        self.calls = []
        for name in READ_BACKS:
            real = getattr(torch.Tensor, name)

            def counted(tensor, *args, _real=real, _name=name, **kwargs):
                if not floating_only or tensor.is_floating_point():
                    self.calls.append(_name)
                return _real(tensor, *args, **kwargs)

            monkeypatch.setattr(torch.Tensor, name, counted)


@pytest.mark.parametrize("amp", ["off", "bf16"])
def test_a_training_step_reads_nothing_back(monkeypatch, amp):
    trainer = make(None, amp=amp)
    views, labels, _ = next(iter(trainer._loader()))
    trainer.train_step(views, labels)  # warm-up (lazy state creation)
    counter = ReadBackCounter(monkeypatch)
    parts = trainer.train_step(views, labels)
    assert counter.calls == []
    assert all(isinstance(v, torch.Tensor) for v in parts.values())
    parts["loss"].item()
    assert counter.calls == ["item"]  # the counter sees a read-back


def test_fit_reads_metrics_back_once_per_log_interval(monkeypatch):
    trainer = make(None, epochs=1, log_every=3)  # 6 steps: read-backs after steps 3 and 6, none at the epoch end
    counter = ReadBackCounter(monkeypatch, floating_only=True)
    history = trainer.fit()
    assert counter.calls == ["tolist", "tolist"]
    assert set(history[0]) >= {"loss", "acc@2", "acc@4", "kl@2", "ce@4"}


class BrokenClips(ToyClips):
    """ToyClips whose listed samples fail to decode (the dataset gives None, as MultiViewClips does)."""

    def __init__(self, broken):
        super().__init__()
        self.broken = set(broken)

    def __getitem__(self, i):
        return None if i in self.broken else super().__getitem__(i)


def test_an_empty_batch_is_skipped_and_resume_counts_batches_not_steps(tmp_path):
    second_batch = EpochSampler(24, shuffle=True, seed=0).order()[4:8]
    reference = make(None, data=BrokenClips(second_batch))
    reference.fit()
    assert reference.step == 17 and reference.skipped == 12  # one empty batch in epoch 1; 4 clips lost per epoch

    interrupted = make(tmp_path, data=BrokenClips(second_batch), checkpoint_every=2)
    crash_at(interrupted, 4)  # the 5th batch: the last checkpoint (after 4 batches) holds 3 steps
    with pytest.raises(KeyboardInterrupt):
        interrupted.fit()
    resumed = make(tmp_path, data=BrokenClips(second_batch), checkpoint_every=2)
    resumed.resume(tmp_path / "last.safetensors")
    assert (resumed.step, resumed.batch_in_epoch) == (3, 4)
    resumed.fit()
    expected = reference.model.state_dict()
    assert all(torch.equal(resumed.model.state_dict()[k], expected[k]) for k in expected)


def test_an_empty_or_foreign_scaler_state_gives_a_notice(capsys):
    trainer = make(None)
    trainer.scaler = torch.amp.GradScaler("cpu", enabled=True)
    trainer._load_scaler({})
    trainer._load_scaler({"unrelated": 1})
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 2 and all(line.startswith("note: ") and "initial value" in line for line in lines)
    assert trainer.scaler.get_scale() == 65536.0


def test_cuda_means_this_ranks_gpu_and_is_pinned_before_the_group_forms(monkeypatch):
    from fan_convert.train import distributed

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert distributed.resolve_device("auto") == torch.device("cpu")
    with pytest.raises(ValueError, match="no CUDA GPU"):
        distributed.resolve_device("cuda")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 4)
    monkeypatch.setenv("LOCAL_RANK", "3")
    assert distributed.resolve_device("cuda") == distributed.resolve_device("auto") == torch.device("cuda", 3)
    assert distributed.resolve_device("cuda:1") == torch.device("cuda", 1)
    with pytest.raises(ValueError, match="only 4 GPU"):
        distributed.resolve_device("cuda:4")
    calls = []
    monkeypatch.setenv("WORLD_SIZE", "4")
    monkeypatch.setattr(torch.cuda, "set_device", lambda device: calls.append(("set_device", device)))
    monkeypatch.setattr(distributed.dist, "is_initialized", lambda: bool(calls))
    monkeypatch.setattr(distributed.dist, "init_process_group", lambda backend: calls.append(("init", backend)))
    monkeypatch.setattr(distributed.dist, "get_rank", lambda: 3)
    monkeypatch.setattr(distributed.dist, "get_world_size", lambda: 4)
    monkeypatch.setattr(distributed.atexit, "register", lambda leave: calls.append(("at exit", leave.__name__)))
    assert distributed.distributed_context(torch.device("cuda", 3)) == (3, 4)
    # the group is left before interpreter shutdown (gloo torn down later can abort a finished rank)
    assert calls == [("set_device", torch.device("cuda", 3)), ("init", "nccl"), ("at exit", "_leave_process_group")]


def test_evaluation_alters_each_weight_once_per_key_and_reads_back_once(monkeypatch):
    from fan_convert.nn import alteration
    from fan_convert.train.evaluate import evaluate

    fan = make(None).model
    altered = []
    real_alter = alteration.alter_weight
    monkeypatch.setattr(alteration, "alter_weight", lambda *a, **k: altered.append(1) or real_alter(*a, **k))
    layers = sum(isinstance(m, alteration.WeightAlteration) for m in fan.modules())
    data = ToyClips(frames=(2, 3, 4))
    counter = ReadBackCounter(monkeypatch, floating_only=False)
    results = evaluate(fan, data, (2, 3, 4), batch_size=4)  # 6 batches; 3 -> key 4
    assert len(altered) == layers * len(FRAMES)
    assert [c for c in counter.calls if c in ("tolist", "cpu", "numpy")] == ["tolist"]
    assert counter.calls.count("item") == 1  # the DataLoader drawing its base seed, not one per batch
    assert set(results) == {2, 3, 4}


def test_fused_sgd_takes_keys_whose_first_gradient_comes_late(monkeypatch):
    # CUDA uses the fused SGD, which fails on a mix of parameters with and without momentum
    plain = make(None)
    real_sgd = torch.optim.SGD
    monkeypatch.setattr(torch.optim, "SGD", lambda *args, **kwargs: real_sgd(*args, **(kwargs | {"fused": True})))
    fused = make(None)
    assert fused.optimizer.defaults["fused"] and not plain.optimizer.defaults["fused"]
    views, labels, _ = next(iter(fused._loader()))
    for frames in ((2,), (2, 4), (4,)):
        fused.train_step(views, labels, frames=frames)
        plain.train_step(views, labels, frames=frames)
    for a, b in zip(fused.model.parameters(), plain.model.parameters(), strict=True):
        torch.testing.assert_close(a, b)


def test_compile_makes_one_static_graph_per_frame_count_and_warns_on_old_torch(monkeypatch):
    from torch._dynamo.utils import counters

    from fan_convert.train.trainer import compile_per_frame_count

    torch._dynamo.reset()
    counters.clear()
    fan = fan_convert.adapt(Toy3D(), frames=FRAMES)
    compiled = compile_per_frame_count(fan, backend="eager")
    clips = {t: torch.randn(2, 3, t, 6, 6) for t in FRAMES}
    for t in (2, 4, 2, 4):
        torch.testing.assert_close(compiled(clips[t]), fan(clips[t]))
    assert counters["stats"]["unique_graphs"] == 2  # one per T, no graph break, no dynamic-shape recompile
    torch._dynamo.reset()
    monkeypatch.setattr(torch, "__version__", "2.11.0+cu130")
    with pytest.warns(UserWarning, match="cannot compile the frame context without graph breaks"):
        compile_per_frame_count(fan, backend="eager")
