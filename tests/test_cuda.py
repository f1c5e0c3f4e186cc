"""The GPU paths: AMP fp16/bf16 against fp32, channels-last weights, evaluation, resume after a
kill, no host sync inside a training step, calibrate/export/budget on CUDA. Skipped where no GPU
is present (CI); on a GPU machine run ``python bench/gpu_check.py`` (which runs this file too)."""

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from torch import nn

import fan_convert
from fan_convert.data import TemporalBenchmark
from fan_convert.train.evaluate import calibrate, evaluate
from fan_convert.train.trainer import TrainConfig, Trainer
from fan_convert.zoo import build

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
KEYS = (4, 8)
CLASSES = [0, 1, 2, 3]
ROOT = Path(__file__).resolve().parent.parent


def data(size=32):
    return TemporalBenchmark("train", size=size, frames=KEYS, classes=CLASSES)


def model(spec):
    torch.manual_seed(0)
    return build(spec, num_classes=len(CLASSES), **({"temporal": "tsm"} if spec.startswith("fan_convert") else {}))


def losses(spec, amp, steps, **options):
    """The loss of each step of a fixed data order (the same batches for every setting)."""
    fan = fan_convert.adapt(model(spec), frames=KEYS)
    trainer = Trainer(fan, data(), TrainConfig(frames=KEYS, epochs=1, batch_size=8, lr=0.01, amp=amp, progress=False, **options))
    batches = [batch[:2] for batch in trainer._loader()]
    curve = [trainer.train_step(*batches[i % len(batches)])["loss"] for i in range(steps)]
    return torch.stack(curve).tolist(), trainer


@pytest.mark.parametrize("amp", ["fp16", "bf16"])
@pytest.mark.parametrize("spec", ["fan_convert:tiny_resnet", "torchvision:r3d_18"])
def test_amp_loss_curve_follows_fp32(amp, spec):
    steps = 24
    reference, _ = losses(spec, "off", steps)
    curve, trainer = losses(spec, amp, steps)
    assert trainer.scaler.is_enabled() == (amp == "fp16")
    if amp == "fp16":  # steps skipped for overflow halve the scale; most steps must have trained
        assert trainer.scaler.get_scale() >= 65536.0 / 2**8, "nearly every fp16 step overflowed"
    assert all(torch.isfinite(torch.tensor(curve)))
    assert all(p.dtype == torch.float32 for p in trainer.model.parameters())
    tail = slice(steps - 8, steps)
    mean = lambda values: sum(values[tail]) / len(values[tail])  # noqa: E731
    assert abs(mean(curve) - mean(reference)) <= 0.15 * mean(reference) + 0.05, (curve, reference)


@pytest.mark.parametrize("spec,rank,memory_format", [("torchvision:r3d_18", 5, torch.channels_last_3d),
                                                     ("fan_convert:tiny_resnet", 4, torch.channels_last)])
def test_channels_last_weights_stay_channels_last_while_training(spec, rank, memory_format):
    fan = fan_convert.adapt(model(spec), frames=KEYS)
    trainer = Trainer(fan, data(16), TrainConfig(frames=KEYS, epochs=1, batch_size=8, amp="bf16", channels_last=True, progress=False))
    trainer.fit()
    weights = [p for p in fan.parameters() if p.dim() == rank and p.shape[-1] > 1]
    assert weights and all(p.is_contiguous(memory_format=memory_format) for p in weights)
    results = evaluate(fan, TemporalBenchmark("val", size=16, frames=(4, 6, 8), classes=CLASSES), (4, 6, 8), device="cuda")
    assert set(results) == {4, 6, 8}


@pytest.mark.parametrize("amp", ["off", "bf16", "fp16"])
def test_a_training_step_never_waits_for_the_gpu(amp):
    fan = fan_convert.adapt(model("torchvision:r3d_18"), frames=KEYS)
    trainer = Trainer(fan, data(16), TrainConfig(frames=KEYS, epochs=1, batch_size=8, amp=amp, progress=False))
    views, labels, _ = next(iter(trainer._loader()))  # pinned, as the loader gives them on CUDA
    assert labels.is_pinned()
    trainer.train_step(views, labels)  # warm-up: optimizer state, cuDNN algorithm search
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        parts = trainer.train_step(views, labels)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert parts["loss"].is_cuda


class DropoutNet(nn.Module):
    """A 3D net with dropout: an exact resume needs the CUDA random state back."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv3d(3, 16, 3, padding=1)
        self.norm = nn.BatchNorm3d(16)
        self.drop = nn.Dropout(0.5)
        self.head = nn.Linear(16, len(CLASSES))

    def forward(self, x):
        return self.head(self.drop(torch.relu(self.norm(self.conv(x))).mean(dim=(2, 3, 4))))


def resume_trainer(out_dir):
    torch.manual_seed(0)
    fan = fan_convert.adapt(DropoutNet(), frames=KEYS)
    config = TrainConfig(frames=KEYS, epochs=2, batch_size=8, lr=0.05, progress=False, checkpoint_every=2,
                         out_dir=str(out_dir) if out_dir else None, device="cuda")
    return Trainer(fan, data(), config)


def test_save_kill_resume_on_cuda_continues_exactly(tmp_path):
    torch.backends.cudnn.deterministic = True
    try:
        whole = resume_trainer(None)
        whole.fit()
        script = textwrap.dedent(f"""
            import os, signal, sys
            sys.path.insert(0, {str(ROOT / 'tests')!r})
            import torch
            torch.backends.cudnn.deterministic = True
            from test_cuda import resume_trainer
            trainer = resume_trainer({str(tmp_path)!r})
            real_step = trainer.train_step
            def step(*args):
                if trainer.step == 5:
                    os.kill(os.getpid(), signal.SIGKILL)
                return real_step(*args)
            trainer.train_step = step
            trainer.fit()
        """)
        env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))
        killed = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=300)
        assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
        resumed = resume_trainer(tmp_path)
        resumed.resume(tmp_path / "last.safetensors")
        assert resumed.step == 4
        resumed.fit()
    finally:
        torch.backends.cudnn.deterministic = False
    for (name, a), b in zip(whole.model.state_dict().items(), resumed.model.state_dict().values(), strict=True):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5, msg=name)


def test_calibrate_export_and_budget_on_cuda(tmp_path):
    from fan_convert.deploy import export_verified
    from fan_convert.deploy.budget import choose_frames

    fan = fan_convert.adapt(model("torchvision:r3d_18"), frames=KEYS).cuda()
    calibrate(fan, TemporalBenchmark("val", size=16, frames=KEYS, classes=CLASSES), batches=2, batch_size=8, device="cuda")
    assert next(fan.parameters()).is_cuda
    result = export_verified(fan, 8, tmp_path / "r3d_8.pt2", input_size=64)
    assert result.path.exists() and result.max_diff <= 1e-4
    try:
        import onnxruntime  # noqa: F401
    except ImportError:
        pass
    else:  # onnxruntime runs on the CPU in fp32: the CUDA reference must not use TF32
        onnx = export_verified(fan, 4, tmp_path / "r3d_4.onnx", format="onnx", input_size=64)
        assert onnx.max_diff <= 1e-4
    budget = choose_frames(fan, 1000.0, size=64, device="cuda", repeats=3, rounds=1)
    assert budget.chosen in KEYS
