"""The GPU paths of the trainer: fp16 with gradient scaling, bf16, channels-last, evaluation on
CUDA. Skipped where no GPU is present (CI); run them on a GPU machine with
``python -m pytest tests/test_cuda.py``."""

import pytest
import torch

import fan_convert
from fan_convert.train.evaluate import evaluate
from fan_convert.train.synthetic import TemporalBenchmark
from fan_convert.train.trainer import TrainConfig, Trainer
from fan_convert.zoo import build

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
KEYS = (4, 8)


def data():
    return TemporalBenchmark("train", size=32, frames=KEYS, classes=[0, 1, 2, 3])


@pytest.mark.parametrize("amp", ["fp16", "bf16"])
@pytest.mark.parametrize("spec", ["fan_convert:tiny_resnet", "torchvision:r3d_18"])
def test_amp_and_channels_last_training_on_cuda(amp, spec):
    torch.manual_seed(0)
    model = build(spec, num_classes=4, **({"temporal": "tsm"} if spec.startswith("fan_convert") else {}))
    fan = fan_convert.adapt(model, frames=KEYS)
    config = TrainConfig(frames=KEYS, epochs=1, batch_size=8, lr=0.01, amp=amp, channels_last=True, progress=False)
    trainer = Trainer(fan, data(), config)
    assert trainer.device.type == "cuda" and trainer.scaler.is_enabled() == (amp == "fp16")
    before = {n: p.detach().clone() for n, p in fan.named_parameters() if ".scales." in n}
    history = trainer.fit()
    assert torch.isfinite(torch.tensor(history[-1]["loss"]))
    assert all(p.dtype == torch.float32 for p in fan.parameters())
    after = dict(fan.named_parameters())
    assert any(not torch.equal(before[n], after[n]) for n in before)  # the alterations trained
    results = evaluate(fan, TemporalBenchmark("val", size=16, frames=(4, 6, 8), classes=[0, 1, 2, 3]), (4, 6, 8), device="cuda")
    assert set(results) == {4, 6, 8}
