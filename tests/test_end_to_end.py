"""Train a plain model at 16 frames, convert it, fine-tune it with mutual distillation, and check
that it now works at 4 frames: the whole point of the toolkit, end to end, in about 20 s.

Four classes of the built-in benchmark (left/right, slowly/fast) make the run well conditioned:
a plain model learns them at 16 frames within a few epochs, and at 4 frames it mistakes slow
moves for fast ones (4 frames cover as much ground per step as a fast move does at 16).
"""

import torch

import fan_convert
from fan_convert.data import TemporalBenchmark
from fan_convert.train.evaluate import evaluate
from fan_convert.train.trainer import TrainConfig, Trainer
from fan_convert.zoo.tiny import tiny_resnet
from fan_convert.zoo.wrappers import TSM

CLASSES = ["moving left slowly", "moving right slowly", "moving left fast", "moving right fast"]
KEYS = (4, 16)


def top1(results):
    return {t: r["top1"] for t, r in results.items()}


def test_fine_tuning_a_converted_model_fixes_four_frame_accuracy():
    train = TemporalBenchmark("train", size=480, frames=KEYS, classes=CLASSES).prerender()
    val = TemporalBenchmark("val", size=200, frames=KEYS, classes=CLASSES).prerender()
    torch.manual_seed(0)
    model = TSM(tiny_resnet(num_classes=len(CLASSES)))
    Trainer(model, train, TrainConfig(frames=(16,), epochs=6, lr=0.1, warmup_epochs=0.3, progress=False)).fit()
    plain = top1(evaluate(model, val, KEYS, batch_size=100))
    assert plain[16] >= 90 and plain[4] <= 75, plain  # learnt at 16 frames, Temporal Deviation at 4

    fan = fan_convert.adapt(model, frames=KEYS)
    Trainer(fan, train, TrainConfig(frames=KEYS, epochs=1, lr=0.02, seed=1, progress=False)).fit()
    adapted = top1(evaluate(fan, val, KEYS, batch_size=100))
    assert adapted[4] >= plain[4] + 20, (plain, adapted)
    assert adapted[16] >= plain[16] - 3, (plain, adapted)
