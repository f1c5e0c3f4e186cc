"""Frame counts are said once, when the model is adapted: the Trainer, a dataset handed to it,
and evaluate take them from the model's plan; naming them again is allowed, and a mismatch is a
one-line error naming the counts that disagree."""

from __future__ import annotations

import pytest
import torch

import fan_convert
from fan_convert.data import TemporalBenchmark
from fan_convert.train.evaluate import evaluate
from fan_convert.train.trainer import TrainConfig, Trainer
from fan_convert.zoo.tiny import tiny_resnet
from fan_convert.zoo.wrappers import TSM

KEYS = (4, 8, 16)


def tiny_fan(keys=KEYS):
    torch.manual_seed(0)
    return fan_convert.adapt(TSM(tiny_resnet(num_classes=12, widths=(8, 16), blocks=(1, 1))), frames=keys)


def test_the_trainer_and_its_dataset_take_the_models_keys():
    fan = tiny_fan()
    data = TemporalBenchmark("train", size=12)  # no frames: the trainer gives it the model's (3 steps: one per key)
    trainer = Trainer(fan, data, TrainConfig(epochs=1, batch_size=4, progress=False))
    assert trainer.config.frames == KEYS and data.frames == KEYS
    trainer.fit()
    assert {k for k in trainer.history[-1] if k.startswith("acc@")} == {f"acc@{t}" for t in KEYS}  # every key trained


def test_naming_the_frame_counts_again_is_allowed_and_a_mismatch_is_an_error():
    fan = tiny_fan()
    assert Trainer(fan, TemporalBenchmark("train", size=4, frames=KEYS), TrainConfig(frames=KEYS, progress=False)).config.frames == KEYS
    with pytest.raises(ValueError, match=r"names 12 frames, but the model was adapted for \(4, 8, 16\)"):
        Trainer(fan, TemporalBenchmark("train", size=4), TrainConfig(frames=(8, 12), progress=False))
    with pytest.raises(ValueError, match=r"views at \(8, 16\) frames but the run needs 4"):
        Trainer(fan, TemporalBenchmark("train", size=4, frames=(8, 16)), TrainConfig(progress=False))


def test_a_plain_model_needs_its_frame_counts_named():
    plain = TSM(tiny_resnet(num_classes=12, widths=(8, 16), blocks=(1, 1)))
    with pytest.raises(ValueError, match=r"not adapted .* TrainConfig\(frames=...\)"):
        Trainer(plain, TemporalBenchmark("train", size=4), TrainConfig(progress=False))
    trainer = Trainer(plain, TemporalBenchmark("train", size=4), TrainConfig(frames=(16,), progress=False))
    assert trainer.config.frames == (16,)


def test_evaluate_takes_the_datasets_frame_counts_else_the_models():
    fan = tiny_fan().eval()
    every_key = evaluate(fan, TemporalBenchmark("val", size=4))
    assert sorted(every_key) == list(KEYS)
    chosen = evaluate(fan, TemporalBenchmark("val", size=4, frames=(2, 6)))
    assert sorted(chosen) == [2, 6]
    with pytest.raises(ValueError, match="neither the dataset nor the model"):
        evaluate(TSM(tiny_resnet(num_classes=12, widths=(8, 16), blocks=(1, 1))), TemporalBenchmark("val", size=4))


def test_a_dataset_without_frame_counts_read_on_its_own_says_what_to_do():
    with pytest.raises(ValueError, match="built without frames="):
        TemporalBenchmark("val", size=2)[0]
