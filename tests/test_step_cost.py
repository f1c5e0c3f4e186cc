"""Issue 23, the step cost: a training forward may scale a layer's input instead of its weight
(when the input is the smaller tensor). That must not change what training computes: losses,
gradients and the trained parameters equal the weight-side path within float tolerance."""

import copy

import pytest
import torch
from conftest import load_bench
from torch import nn

import fan_convert
from fan_convert.nn import WeightAlteration, alter_weight, alteration
from fan_convert.nn.alteration import scale_input
from fan_convert.train.trainer import TrainConfig, Trainer
from fan_convert.zoo import build

KEYS = (4, 8, 16)

class Conv3DSimple(nn.Conv3d):  # like torchvision's R3D convolutions: a subclass that keeps Conv3d's forward
    pass


LAYERS = {  # layer, an input with fewer elements than the weight
    "conv3d-subclass": (lambda: Conv3DSimple(16, 32, 3, padding=1), (1, 16, 2, 3, 3)),
    "conv3d": (lambda: nn.Conv3d(16, 32, 3, padding=1, stride=(1, 2, 2)), (1, 16, 2, 3, 3)),
    "conv3d-unbatched": (lambda: nn.Conv3d(16, 32, 3, padding=1), (16, 2, 3, 3)),
    "conv2d-grouped": (lambda: nn.Conv2d(16, 32, 3, groups=4, padding=1), (1, 16, 3, 3)),
    "conv2d-reflect": (lambda: nn.Conv2d(16, 32, 3, padding=1, padding_mode="reflect"), (1, 16, 3, 3)),
    "conv1d": (lambda: nn.Conv1d(16, 32, 3), (2, 16, 5)),
    "linear": (lambda: nn.Linear(64, 32), (2, 3, 64)),
}


def _weight_side(layer: WeightAlteration, key: int, x: torch.Tensor) -> torch.Tensor:
    base = layer.base_layer
    weight = alter_weight(base.weight, layer.scales[str(key)], layer.groups)
    if isinstance(base, nn.Linear):
        return nn.functional.linear(x, weight, base.bias)
    return base._conv_forward(x, weight, base.bias)


@pytest.mark.parametrize("name", LAYERS)
def test_a_training_forward_on_a_small_input_scales_the_input_with_equal_gradients(name, monkeypatch):
    make, shape = LAYERS[name]
    torch.manual_seed(0)
    layer = WeightAlteration(make(), KEYS)
    with torch.no_grad():
        for s in layer.scales.values():
            s.normal_(0, 0.3)
    reference = copy.deepcopy(layer)
    x = torch.randn(shape)
    assert x.numel() < layer.base_layer.weight.numel()
    scaled = []
    monkeypatch.setattr(alteration, "scale_input", lambda *a, **k: scaled.append(1) or scale_input(*a, **k))
    for key in KEYS:
        xa, xb = x.clone().requires_grad_(), x.clone().requires_grad_()
        with fan_convert.frames(key):
            out = layer(xa)
        expected = _weight_side(reference, key, xb)
        torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-5)
        grad = torch.randn_like(out)
        out.backward(grad)
        expected.backward(grad)
        torch.testing.assert_close(xa.grad, xb.grad, rtol=1e-5, atol=1e-5)
    assert len(scaled) == len(KEYS)
    for (name_a, a), (name_b, b) in zip(layer.named_parameters(), reference.named_parameters(), strict=True):
        assert name_a == name_b
        torch.testing.assert_close(a.grad, b.grad, rtol=1e-4, atol=1e-5, msg=name_a)


def test_a_subclass_with_its_own_forward_or_hooks_keeps_the_weight_side(monkeypatch):
    class Doubled(nn.Conv2d):
        def forward(self, x):
            return 2 * super().forward(x)

    monkeypatch.setattr(alteration, "scale_input", lambda *a, **k: pytest.fail("scaled the input"))
    x = torch.randn(1, 8, 2, 2)
    layer = WeightAlteration(Doubled(8, 8, 3, padding=1), KEYS)
    with fan_convert.frames(8):
        torch.testing.assert_close(layer(x), 2 * nn.Conv2d.forward(layer.base_layer, x))  # zero scales: the layer itself
    hooked = WeightAlteration(Conv3DSimple(8, 8, 3, padding=1), KEYS)
    seen = []
    hooked.base_layer.register_forward_hook(lambda *a: seen.append(1))
    with fan_convert.frames(8):
        hooked(torch.randn(1, 8, 2, 2, 2))
    assert seen == [1]


def test_large_inputs_inference_and_tracing_keep_the_weight_side(monkeypatch):
    layer = WeightAlteration(nn.Conv2d(4, 4, 3, padding=1), KEYS)
    monkeypatch.setattr(alteration, "scale_input", lambda *a, **k: pytest.fail("scaled the input"))
    big = torch.randn(2, 4, 8, 8)  # more elements than the 144-element weight
    small = torch.randn(1, 4, 2, 2)
    with fan_convert.frames(8):
        layer(big).sum().backward()
        with torch.no_grad():
            layer(small)  # inference: the cached altered weight
        torch.jit.trace(layer, small, check_trace=False)


def _r3d_fan() -> nn.Module:
    torch.manual_seed(0)
    fan = fan_convert.adapt(build("torchvision:r3d_18", num_classes=10), frames=KEYS, trained_at=16)
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for module in fan.modules():
            if isinstance(module, WeightAlteration):
                for s in module.scales.values():
                    s.copy_(0.1 * torch.randn(s.shape, generator=generator))
    return fan


def _train(fan: nn.Module, views: dict, labels: torch.Tensor, steps: int, monkeypatch, cheaper_side: bool) -> list[dict]:
    """``steps`` Trainer steps of ``fan``; after each, its loss parts and gradients (and whether
    the forwards scaled some layers' inputs and kept others' weights)."""
    trainer = Trainer(fan, [None] * len(labels), TrainConfig(epochs=1, batch_size=len(labels), progress=False, device="cpu", lr=0.05))
    real = alteration._scale_activations
    sides = []
    monkeypatch.setattr(alteration, "_scale_activations", lambda *a: sides.append(cheaper_side and real(*a)) or sides[-1])
    records = []
    for _ in range(steps):
        sides.clear()
        parts = trainer.train_step(views, labels)
        grads = {n: p.grad.clone() for n, p in fan.named_parameters() if p.grad is not None}
        records.append({"parts": parts, "grads": grads, "scaled_inputs": any(sides), "altered_weights": not all(sides)})
    monkeypatch.setattr(alteration, "_scale_activations", real)
    return records


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_fan_training_step_equals_the_weight_side_step(dtype, monkeypatch):
    """What Trainer.train_step computes for a FAN (forward at 4/8/16, mutual distillation,
    backward, clipping, SGD) is the same with the cheaper side as with the weight side alone:
    in float64 to rounding over three steps; in float32 within float tolerance on the first
    (later float32 steps drift apart chaotically, through batch norm over a few elements)."""
    fan = _r3d_fan().to(dtype)
    reference = copy.deepcopy(fan)
    generator = torch.Generator().manual_seed(2)
    views = {t: torch.randn(2, 3, t, 32, 32, generator=generator).to(dtype) for t in KEYS}
    labels = torch.tensor([3, 7])
    steps = 3 if dtype == torch.float64 else 1
    got = _train(fan, views, labels, steps, monkeypatch, cheaper_side=True)
    want = _train(reference, views, labels, steps, monkeypatch, cheaper_side=False)
    tight = dtype == torch.float64
    for step, (g, w) in enumerate(zip(got, want, strict=True)):
        assert g["scaled_inputs"] and g["altered_weights"]  # both forms ran: the deep layers scale their input
        assert not w["scaled_inputs"]
        assert g["parts"].keys() == w["parts"].keys() and g["grads"].keys() == w["grads"].keys()
        for part in w["parts"]:
            torch.testing.assert_close(g["parts"][part], w["parts"][part], rtol=1e-7 if tight else 1e-5, atol=1e-7 if tight else 1e-5,
                                       msg=f"step {step}: {part}")
        for name, expected in w["grads"].items():
            scale = expected.abs().max().item()
            torch.testing.assert_close(g["grads"][name], expected, rtol=0, atol=(1e-9 if tight else 5e-4) * scale,
                                       msg=f"step {step}: {name}")
    if tight:
        for (name, a), b in zip(fan.state_dict().items(), reference.state_dict().values(), strict=True):
            torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-12, msg=name)


def test_the_bench_prints_and_writes_the_ratio(tmp_path, monkeypatch, capsys):
    step_cost = load_bench("step_cost")
    monkeypatch.setitem(step_cost.FAMILIES, "tiny", step_cost.Family("fan_convert:tiny_resnet", {"temporal": "tsm", "num_classes": 10},
                                                                     (4, 8, 16), 8, 32))
    out = tmp_path / "step_cost.md"
    assert step_cost.main(["--families", "tiny", "--batch", "2", "--rounds", "2", "--warmup", "0", "--reference", "--profile",
                           "--label", "after", "--out", str(out)]) == 0
    run = __import__("json").loads((tmp_path / "step_cost_after.json").read_text())
    (row,) = run["rows"]
    assert row["family"] == "tiny" and row["batch"] == 2 and row["fan_ms"] > 0 and row["reference_ms"] > 0
    assert row["st_ms"] == pytest.approx(__import__("statistics").median(row["times"]["wall_ms"]["st"]), abs=0.1)
    assert row["ratio"] == pytest.approx(row["fan_ms"] / row["st_ms"], rel=0.01)
    text = out.read_text()
    assert "## after" in text and "| tiny | 4/8/16 | 32 px | 2 |" in text and "Profile, tiny, batch 2" in text
    assert "tiny" in capsys.readouterr().out


def test_the_gpu_check_times_every_family_at_batch_8_and_32(tmp_path, monkeypatch):
    gpu_check = load_bench("gpu_check")
    calls = []

    def fake(name, spec, options, size, *, batch, keys, trained_at, compile=False):
        calls.append((name, batch))
        return {"model": name, "status": "pass", "size": size, "batch": batch, "amp": "bf16", "fan_step_s": 1.0,
                **{f"st{t}_step_s": 0.3 for t in keys}, "fan_over_three_st": 1.11, "fan_clips_per_s": 8.0, "st8_clips_per_s": 26.7}

    monkeypatch.setattr(gpu_check, "throughput", fake)
    monkeypatch.setattr(gpu_check.torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(gpu_check.torch.cuda, "get_device_name", lambda index=0: "a test GPU")
    assert gpu_check.main(["--out", str(tmp_path / "gpu.json"), "--skip", "tests", "torchrun", "compile"]) == 0
    assert calls == [(name, batch) for name in ("TSM-ResNet-50", "R3D-18", "X3D-S", "X3D-M") for batch in (8, 32)]
    report = __import__("json").loads((tmp_path / "gpu.json").read_text())
    assert [row["batch"] for row in report["throughput"]] == [8, 32] * 4


def test_the_bench_reference_is_the_weight_side_path(monkeypatch):
    step_cost = load_bench("step_cost")
    fan = step_cost.use_reference_alteration(_r3d_fan())
    monkeypatch.setattr(alteration, "scale_input", lambda *a, **k: pytest.fail("scaled the input"))
    fan(torch.randn(1, 3, 4, 32, 32)).sum().backward()
