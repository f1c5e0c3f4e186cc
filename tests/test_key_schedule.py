"""The key schedule (TrainConfig.key_schedule): every frame count per step (joint, the paper's), or
one per step in rotation or at random, with an optional no-grad teacher; the DDP half is in
tests/test_ddp.py (cases rotate_with_teacher and random_empty_batch_on_rank_1)."""

import collections
import json
import re

import pytest
import torch
from conftest import encode, two_class_workspace
from test_trainer import Toy3D, ToyClips, crash_at

import fan_convert
from fan_convert.data import MultiViewClips, TemporalBenchmark
from fan_convert.data.readers import Item
from fan_convert.train.key_schedule import KeySchedule, StepPlan
from fan_convert.train.trainer import TrainConfig, Trainer

KEYS = (2, 4, 8)
# tests/test_trainer.py's make(epochs=2) (frames 2 and 4, seed 0), per-step losses recorded from the code before the key schedule existed
JOINT_LOSSES = [0.9438921809196472, 0.9923015832901001, 0.9537693858146667, 1.0351550579071045, 0.9855128526687622,
                1.1208428144454956, 0.8959984183311462, 0.947330892086029, 1.0107688903808594, 0.7647835612297058,
                0.7830716371536255, 0.9120901226997375]


def make(tmp_path=None, keys=KEYS, **overrides):
    torch.manual_seed(0)
    fan = fan_convert.adapt(Toy3D(), frames=keys)
    options = dict(epochs=2, batch_size=4, lr=0.05, progress=False, out_dir=str(tmp_path) if tmp_path else None)
    return Trainer(fan, ToyClips(frames=keys), TrainConfig(**(options | overrides)))


def record_steps(trainer):
    """Wrap train_step: returns the list of (frames, teacher, loss parts) of every step."""
    steps, real = [], trainer.train_step

    def recorded(views, labels, frames=None, teacher=None):
        assert set(views) == set(StepPlan(frames or trainer.config.frames, teacher).views)  # the loader read only these views
        parts = real(views, labels, frames=frames, teacher=teacher)
        steps.append((frames, teacher, parts))
        return parts

    trainer.train_step = recorded
    return steps


def key_of(name):
    """The frame count a per-key parameter or buffer belongs to (None: shared)."""
    found = re.search(r"(?:norms|scales)\.(\d+)", name)
    return int(found.group(1)) if found else None


def test_the_schedules_sequences():
    rotate = KeySchedule(KEYS, "rotate")
    assert [rotate(b).frames for b in range(7)] == [(2,), (4,), (8,), (2,), (4,), (8,), (2,)]
    assert KeySchedule(KEYS, "joint")(5) == StepPlan(KEYS)
    draws = [KeySchedule(KEYS, "random", seed=3)(b).frames for b in range(300)]
    assert draws == [KeySchedule(KEYS, "random", seed=3)(b).frames for b in range(300)]  # a function of (seed, batch)
    assert draws != [KeySchedule(KEYS, "random", seed=4)(b).frames for b in range(300)]
    assert all(60 < draws.count((t,)) < 140 for t in KEYS)
    weighted = collections.Counter(KeySchedule(KEYS, "random", weights=(1, 0, 3))(b).frames for b in range(2000))
    assert weighted[(4,)] == 0 and 0.7 < weighted[(8,)] / 2000 < 0.8
    taught = KeySchedule(KEYS, "rotate", teacher_every=2)  # rounds of 3 batches; teacher in rounds 0, 2, ...
    assert [taught(b).teacher for b in range(9)] == [8, 8, None, None, None, None, 8, 8, None]
    assert taught(0).views == (2, 8) and taught(2).views == (8,)


def test_rotate_trains_one_key_per_step_each_equally_often():
    trainer = make(key_schedule="rotate")
    steps = record_steps(trainer)
    trainer.fit()  # 2 epochs of 6 batches
    assert [frames for frames, _, _ in steps] == [(2,), (4,), (8,)] * 4
    assert all(set(parts) == {"loss", f"ce@{f[0]}", f"acc@{f[0]}"} for f, _, parts in steps)
    assert {"acc@2", "acc@4", "acc@8", "ce@8"} <= set(trainer.history[-1])


@pytest.mark.parametrize("schedule", ["rotate", "random"])
def test_a_step_moves_only_its_keys_parameters_and_the_shared_ones(schedule):
    trainer = make(key_schedule=schedule, seed=1)
    loader = iter(trainer._loader())
    for batch in range(3):
        before = {n: p.detach().clone() for n, p in trainer.model.named_parameters()}
        buffers = {n: b.clone() for n, b in trainer.model.named_buffers()}
        (key,) = trainer.key_schedule(batch).frames
        views, labels, _ = next(loader)
        assert set(views) == {key}
        trainer.train_step(views, labels, frames=(key,))
        trainer.batch_in_epoch += 1
        moved = {name for name, p in trainer.model.named_parameters() if not torch.equal(p, before[name])}
        mine = {name for name in before if key_of(name) == key}
        shared = {name for name in before if key_of(name) is None}
        assert mine | {"conv.base_layer.weight", "head.weight"} <= moved <= mine | shared, (batch, key)
        for name, b in trainer.model.named_buffers():
            assert torch.equal(b, buffers[name]) or key_of(name) == key, name


def test_random_is_reproducible_from_the_seed():
    runs = []
    for seed in (5, 5, 6):
        trainer = make(key_schedule="random", key_weights=(1, 1, 2), seed=seed)
        steps = record_steps(trainer)
        trainer.fit()
        runs.append(([f for f, _, _ in steps], trainer.model.state_dict()))
    assert runs[0][0] == [KeySchedule(KEYS, "random", seed=5, weights=(1, 1, 2))(b).frames for b in range(12)]
    assert runs[0][0] == runs[1][0] and runs[0][0] != runs[2][0]
    assert all(torch.equal(runs[0][1][k], runs[1][1][k]) for k in runs[0][1])


def test_the_default_trains_one_key_per_step_in_rotation():
    trainer = make()  # TrainConfig's default key_schedule
    steps = record_steps(trainer)
    trainer.fit()
    assert [f for f, _, _ in steps] == [(2,), (4,), (8,)] * 4 and all(t is None for _, t, _ in steps)  # CE only
    assert TrainConfig().epochs == 3 * 10  # the compute of the former 10 joint epochs (3 keys)


def test_resume_refuses_another_key_schedule_than_the_checkpoints(tmp_path):
    first = make(tmp_path, key_schedule="joint", epochs=1)
    first.fit()
    with pytest.raises(ValueError, match=r"trained with key_schedule='joint' and this run has key_schedule='rotate'; "
                                         r"resume with the same schedule \(--key-schedule joint"):
        make(tmp_path, epochs=2).resume(tmp_path / "last.safetensors")
    with pytest.raises(ValueError, match=r"trained with teacher_every=0 .* \(--teacher-every 0"):
        make(None, teacher_every=1)._check_same_key_schedule("last.safetensors", {"key_schedule": "rotate", "teacher_every": 0})
    make(tmp_path, key_schedule="joint", epochs=2).resume(tmp_path / "last.safetensors")  # the same schedule continues
    older = make(tmp_path, epochs=2)  # a checkpoint written before key schedules existed was joint
    with pytest.raises(ValueError, match="key_schedule='joint'"):
        older._check_same_key_schedule("old.safetensors", {"epochs": 2})


def test_joint_is_unchanged():
    trainer = make(keys=(2, 4), key_schedule="joint")
    steps = record_steps(trainer)
    trainer.fit()
    assert [frames for frames, _, _ in steps] == [None] * 12  # joint calls train_step as before: every key
    assert [float(p["loss"]) for _, _, p in steps] == pytest.approx(JOINT_LOSSES, rel=1e-6, abs=1e-7)
    assert {"kl@2", "ce@4"} <= set(steps[0][2])


@pytest.mark.parametrize("options", [dict(key_schedule="rotate", teacher_every=1), dict(key_schedule="random", key_weights=(2, 1, 1))])
def test_resume_continues_the_same_key_sequence_exactly(tmp_path, options):
    reference = make(None, **options)
    reference_steps = record_steps(reference)
    reference.fit()

    interrupted = make(tmp_path, checkpoint_every=2, **options)
    crash_at(interrupted, 7)  # mid-epoch 2 (6 steps per epoch); the last checkpoint holds 6 steps
    with pytest.raises(KeyboardInterrupt):
        interrupted.fit()
    resumed = make(tmp_path, checkpoint_every=2, **options)
    resumed.resume(tmp_path / "last.safetensors")
    assert resumed.step == 6
    resumed_steps = record_steps(resumed)
    resumed.fit()
    assert [(f, t) for f, t, _ in resumed_steps] == [(f, t) for f, t, _ in reference_steps[6:]]
    expected = reference.model.state_dict()
    assert all(torch.equal(resumed.model.state_dict()[k], expected[k]) for k in expected)


def test_the_teacher_adds_a_kl_term_and_is_never_trained_through():
    trainer = make(key_schedule="rotate", teacher_every=1)
    views, labels, _ = next(iter(trainer._loader()))
    assert set(views) == {2, 8}  # the step's view and the teacher's
    state = {n: t.clone() for n, t in trainer.model.state_dict().items()}
    grads = []
    for name, p in trainer.model.named_parameters():
        if key_of(name) == 8:
            p.register_hook(lambda g, name=name: grads.append(name))
    parts = trainer.train_step(views, labels, frames=(2,), teacher=8)
    assert set(parts) == {"loss", "ce@2", "kl@2", "acc@2"}
    assert parts["kl@2"] > 0 and parts["loss"] == pytest.approx(float(parts["ce@2"] + parts["kl@2"]), rel=1e-6)
    assert grads == []  # no gradient reached the teacher's own parameters
    after = trainer.model.state_dict()
    for name, value in state.items():  # the teacher's norms and scales and its running statistics are untouched
        if key_of(name) == 8:
            assert torch.equal(after[name], value), name
    assert not torch.equal(after["bn.norms.2.weight"], state["bn.norms.2.weight"])
    with torch.no_grad():  # the KL is against the teacher's output on the same clips, before the step
        trainer.model.load_state_dict(state)
        trainer.model.train()
        teacher = trainer.model(views[8])
        student = trainer.model(views[2])
    kl = torch.nn.functional.kl_div(student.log_softmax(-1), teacher.softmax(-1), reduction="batchmean")
    assert float(parts["kl@2"]) == pytest.approx(float(kl), rel=1e-5)
    with pytest.raises(ValueError, match="teaches a step that trains one other frame count"):
        trainer.train_step(views, labels, frames=(8,), teacher=8)


def test_the_loader_reads_only_the_steps_views_and_they_equal_the_full_samples(tmp_path):
    bench = TemporalBenchmark("train", size=4, frames=KEYS)
    clips = MultiViewClips([Item(encode(tmp_path / f"v{i}.mp4", 20 + 5 * i), i) for i in range(2)], KEYS, train=True,
                           crop_size=16, resize=20, flip=True)
    for data in (bench, clips):
        data.set_epoch(1)
        full, label = data[1]
        for subset in ((2,), (8,), (4, 8)):
            views, same = data.views_for(1, subset)
            assert same == label and set(views) == set(subset)
            assert all(torch.equal(views[t], full[t]) for t in subset)
    with pytest.raises(ValueError, match=r"frames \[16\] are not among"):
        bench.views_for(0, (16,))
    trainer = Trainer(fan_convert.adapt(Toy3D(16), frames=KEYS), bench,
                      TrainConfig(epochs=1, batch_size=2, key_schedule="rotate", teacher_every=1, progress=False))
    read = [tuple(views) for views, _, _ in trainer._loader()]
    assert read == [(2, 8), (4, 8)]


def test_config_errors():
    with pytest.raises(ValueError, match="key_schedule must be one of joint, rotate, random"):
        TrainConfig(key_schedule="cycle")
    with pytest.raises(ValueError, match="key_weights weigh the draws"):
        TrainConfig(key_schedule="rotate", key_weights=(1, 2))
    with pytest.raises(ValueError, match="give one per frame count"):
        TrainConfig(frames=(4, 8), key_schedule="random", key_weights=(1, 2, 3))
    with pytest.raises(ValueError, match="not all zero"):
        TrainConfig(key_schedule="random", key_weights=(0, 0))
    with pytest.raises(ValueError, match="teacher_every is for one key per step"):
        TrainConfig(key_schedule="joint", teacher_every=1)
    with pytest.raises(ValueError, match="needs loss_mode='distill'"):
        TrainConfig(key_schedule="rotate", teacher_every=1, loss_mode="ce")
    assert TrainConfig(schedule="step", key_schedule="rotate").schedule == "step"  # the lr schedule is another option


def test_fan_convert_train_key_schedule(tmp_path):
    from typer.testing import CliRunner

    from fan_convert.cli import app, cli_args

    def run(*argv):
        return CliRunner().invoke(app, cli_args([str(a) for a in argv]))

    two_class_workspace(tmp_path)
    common = [tmp_path / "fan.safetensors", "--data", tmp_path / "videos", "--crop", 32, "--resize", 32, "--batch-size", 2]
    result = run("train", *common, "--out-dir", tmp_path / "run", "--key-schedule", "rotate", "--teacher-every", 1, "--workers", 1,
                 "--epochs", 1)
    assert result.exit_code == 0, result.output
    log = json.loads((tmp_path / "run" / "log.jsonl").read_text())
    assert {"acc@2", "acc@4", "kl@2", "ce@4"} <= set(log)  # steps 0 and 2 train 2 frames (taught), 1 and 3 train 4
    result = run("train", *common, "--out-dir", tmp_path / "bad", "--key-schedule", "random", "--key-weights", "1,x")
    assert result.exit_code != 0 and "--key-weights takes numbers" in result.output
