"""Run by tests/test_ddp.py under torchrun: two CPU processes (gloo) fine-tune FANs.

Usage: ``torchrun --nproc_per_node 2 tests/ddp_worker.py OUT_DIR``. Each case trains on both
ranks, checks that the ranks hold identical parameters, and rank 0 writes them to
``OUT_DIR/<case>.safetensors`` so that the test can compare them with one process training on
the two ranks' batches together (:func:`single_process`).
"""

import sys
from dataclasses import replace
from pathlib import Path

import torch
import torch.distributed as dist
from safetensors.torch import save_file
from torch import nn

import fan_convert
from fan_convert.train.trainer import EpochSampler, TrainConfig, Trainer

BATCH = 4  # per rank; one process takes 2 * BATCH
SIZE = 24


class GroupNormToy(nn.Module):
    """Per-sample normalisation, so two ranks' half batches give the gradient of the whole batch."""

    def __init__(self, classes=3):
        super().__init__()
        self.conv = nn.Conv3d(3, 8, 3, padding=1)
        self.norm = nn.GroupNorm(2, 8)
        self.head = nn.Linear(8, classes)

    def forward(self, x):
        return self.head(torch.relu(self.norm(self.conv(x))).mean(dim=(2, 3, 4)))


class JitteredClips(torch.utils.data.Dataset):
    """Class c: colour channel c is bright. ``jitter`` adds noise drawn from the process's RNG
    (so every rank's RNG state matters for an exact resume). ``broken`` indices fail to decode (None)."""

    def __init__(self, frames, broken=(), jitter=False):
        g = torch.Generator().manual_seed(0)
        self.labels = torch.randint(0, 3, (SIZE,), generator=g).tolist()
        self.base = torch.randn(SIZE, 3, 4, 6, 6, generator=g)
        self.frames, self.broken, self.jitter = frames, set(broken), jitter

    def __len__(self):
        return SIZE

    def __getitem__(self, i):
        if i in self.broken:
            return None
        clip = self.base[i] + (0.1 * torch.randn(3, 4, 6, 6) if self.jitter else 0)
        clip[self.labels[i]] += 1.0
        return {t: clip[:, torch.linspace(0, 3, t).round().long()] for t in self.frames}, self.labels[i]


class OneKeyPerStep(Trainer):
    """The proportional-sampling pattern: each step trains the lowest or the highest frame count."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, frame_subsets=True, **kwargs)
        self.coin = torch.Generator().manual_seed(self.config.seed)

    def train_step(self, views, labels, frames=None):
        low, high = min(self.config.frames), max(self.config.frames)
        return super().train_step(views, labels, frames=(low,) if torch.rand((), generator=self.coin) < 0.5 else (high,))


class TwoTOneKey(Trainer):
    """Steps at 2, 3 and 4 frames on keys 2 and 4 (3 is served by key 4). A run's frame counts
    must be keys, so the config names the keys and each step names the three frame counts."""

    def __init__(self, model, data, config):
        super().__init__(model, data, replace(config, frames=(2, 4)))

    def train_step(self, views, labels, frames=None):
        return super().train_step(views, labels, frames=(2, 3, 4))


class KeyScheduleTrainer(Trainer):
    """A Trainer on a one-key-per-step schedule (``TrainConfig.key_schedule``) that records the
    frame counts each step trained, for the check that every rank trained the same ones."""

    def __init__(self, model, data, config, **schedule):
        super().__init__(model, data, replace(config, **schedule))
        self.trained = []

    def train_step(self, views, labels, frames=None, teacher=None):
        self.trained.append(frames)
        return super().train_step(views, labels, frames=frames, teacher=teacher)


def rotate_with_teacher(model, data, config):
    return KeyScheduleTrainer(model, data, config, key_schedule="rotate", teacher_every=1)


def random_weighted(model, data, config):
    return KeyScheduleTrainer(model, data, config, key_schedule="random", key_weights=(1, 2, 1))


# case: (model keys, trained frame counts, trainer class, indices that fail to decode)
BROKEN = tuple(EpochSampler(SIZE, shuffle=True, seed=0, rank=1, world=2).order()[BATCH : 2 * BATCH])  # rank 1's 2nd batch
CASES = {
    "all_keys": ((2, 4), (2, 4), Trainer, ()),
    "one_key_per_step": ((2, 4), (2, 4), OneKeyPerStep, ()),
    "subset_of_keys": ((2, 4, 8), (2, 4), Trainer, ()),
    "two_t_one_key": ((2, 4), (2, 3, 4), TwoTOneKey, ()),
    "empty_batch_on_rank_1": ((2, 4), (2, 4), Trainer, BROKEN),
    "rotate_with_teacher": ((2, 4, 8), (2, 4, 8), rotate_with_teacher, ()),
    "random_empty_batch_on_rank_1": ((2, 4, 8), (2, 4, 8), random_weighted, BROKEN),
}


def build(case, batch_size, jitter=False, **config):
    keys, frames, trainer_cls, broken = CASES[case]
    torch.manual_seed(0)
    fan = fan_convert.adapt(GroupNormToy(), frames=keys)
    # the joint schedule unless the case's trainer names another (KeyScheduleTrainer)
    options = dict(epochs=2, batch_size=batch_size, lr=0.05, progress=False, key_schedule="joint") | config
    return trainer_cls(fan, JitteredClips(frames, broken, jitter), TrainConfig(frames=frames, **options))


def single_process(case):
    """The reference: one process, both ranks' batches in one, the same steps."""
    trainer = build(case, 2 * BATCH)
    trainer.fit()
    return trainer


def identical_across_ranks(model):
    flat = torch.cat([p.detach().flatten() for p in model.parameters()])
    gathered = [torch.zeros_like(flat) for _ in range(dist.get_world_size())]
    dist.all_gather(gathered, flat)
    return all(torch.equal(gathered[0], g) for g in gathered)


def save_parameters(trainer, path):
    if trainer.rank == 0:
        save_file({n: p.detach().contiguous() for n, p in trainer.model.named_parameters()}, str(path))


def resume_case(out):
    """Train, crash mid-epoch 2 on every rank, resume from the checkpoint: the same parameters
    as the uninterrupted run (each rank's own RNG state restored)."""
    whole = build("all_keys", BATCH, jitter=True)
    whole.fit()
    run_dir = out / "resume_run"
    crashed = build("all_keys", BATCH, jitter=True, out_dir=str(run_dir), checkpoint_every=2)
    real_step = crashed.train_step

    def crash_at_step_5(*args):
        if crashed.step == 5:
            raise KeyboardInterrupt
        return real_step(*args)

    crashed.train_step = crash_at_step_5
    try:
        crashed.fit()
    except KeyboardInterrupt:
        pass
    resumed = build("all_keys", BATCH, jitter=True, out_dir=str(run_dir), checkpoint_every=2)
    resumed.resume(run_dir / "last.safetensors")
    assert resumed.step == 4, resumed.step
    resumed.fit()
    exact = all(torch.equal(a, b) for a, b in zip(whole.model.parameters(), resumed.model.parameters(), strict=True))
    print(f"rank {resumed.rank}: resume exact {exact}", flush=True)


def main(out):
    torch.set_num_threads(1)
    for case in CASES:
        trainer = build(case, BATCH)
        assert trainer.world == 2
        trainer.fit()
        assert identical_across_ranks(trainer.model), f"{case}: ranks diverged"
        if hasattr(trainer, "trained"):
            every = [None] * dist.get_world_size()
            dist.all_gather_object(every, trainer.trained)
            print(f"rank {trainer.rank}: {case} keys {trainer.trained} same on every rank {all(k == every[0] for k in every)}", flush=True)
        save_parameters(trainer, out / f"{case}.safetensors")
        print(f"rank {trainer.rank}: {case} steps {trainer.step} loss {trainer.history[-1]['loss']:.4f}", flush=True)
    resume_case(out)
    dist.destroy_process_group()


if __name__ == "__main__":
    main(Path(sys.argv[1]))
