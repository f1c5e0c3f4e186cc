import pytest
import torch
from torch import nn

import fan_convert
from fan_convert.nn import NotFoldableError, ResidualAlteration, WeightAlteration, alter_weight, fold_alteration

KEYS = (4, 8, 16)

LAYERS = {
    "conv2d": (lambda: nn.Conv2d(6, 8, 3, padding=1), (2, 6, 7, 7)),
    "conv3d": (lambda: nn.Conv3d(6, 8, (3, 3, 3), padding=1, stride=(1, 2, 2)), (2, 6, 4, 7, 7)),
    "conv1d": (lambda: nn.Conv1d(6, 8, 3), (2, 6, 9)),
    "grouped": (lambda: nn.Conv2d(6, 9, 3, groups=3), (2, 6, 7, 7)),
    "depthwise": (lambda: nn.Conv2d(6, 6, 3, groups=6), (2, 6, 7, 7)),
    "linear": (lambda: nn.Linear(6, 5), (2, 3, 6)),
    "conv-reflect": (lambda: nn.Conv2d(6, 4, 3, padding=1, padding_mode="reflect"), (2, 6, 7, 7)),
}


def _randomize_scales(layer):
    with torch.no_grad():
        for s in layer.scales.values():
            s.normal_(0, 0.3)


def _input_side(layer, key, x):
    """The paper's activation-side form: base(x + dw1x1(x)) with the same per-channel weights."""
    s = layer.scales[str(key)]
    shape = (1, -1) + (1,) * (x.dim() - 2) if not isinstance(layer.base_layer, nn.Linear) else (-1,)
    return layer.base_layer(x + x * s.view(shape))


@pytest.mark.parametrize("name", LAYERS)
def test_weight_side_alteration_equals_the_residual_depthwise_form(name):
    make, shape = LAYERS[name]
    layer = WeightAlteration(make(), KEYS)
    x = torch.randn(shape)
    for k in KEYS:  # zero-initialised: exactly the original
        with fan_convert.frames(k):
            assert torch.equal(layer(x), layer.base_layer(x))
    _randomize_scales(layer)
    for k in KEYS:
        with fan_convert.frames(k):
            torch.testing.assert_close(layer(x), _input_side(layer, k, x), atol=1e-5, rtol=1e-5)


def test_activation_side_is_a_real_depthwise_1x1_convolution():
    layer = WeightAlteration(nn.Conv2d(4, 3, 3), KEYS)
    _randomize_scales(layer)
    x = torch.randn(2, 4, 6, 6)
    dw = nn.Conv2d(4, 4, 1, groups=4, bias=False)
    with torch.no_grad():
        dw.weight.copy_(layer.scales["8"].view(4, 1, 1, 1))
    with fan_convert.frames(8):
        torch.testing.assert_close(layer(x), layer.base_layer(x + dw(x)), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("name", LAYERS)
def test_fold_is_exact(name):
    make, shape = LAYERS[name]
    layer = WeightAlteration(make(), KEYS)
    _randomize_scales(layer)
    x = torch.randn(shape)
    for t, key in ((4, 4), (6, 8), (16, 16)):
        folded = fold_alteration(layer, t)
        assert type(folded) is type(layer.base_layer)
        with fan_convert.frames(key):
            torch.testing.assert_close(folded(x), layer(x), atol=1e-5, rtol=1e-5)
    base_before = layer.base_layer.weight.clone()
    fold_alteration(layer, 8)
    assert torch.equal(layer.base_layer.weight, base_before)


def test_multihead_attention_alteration_and_fold():
    mha = nn.MultiheadAttention(8, 2, batch_first=True).eval()
    layer = WeightAlteration(mha, KEYS).eval()
    x = torch.randn(2, 5, 8)
    with fan_convert.frames(8):
        assert torch.equal(layer(x, x, x)[0], mha(x, x, x)[0])
    _randomize_scales(layer)
    s = layer.scales["8"]
    with fan_convert.frames(8):
        expected = mha(x * (1 + s), x * (1 + s), x * (1 + s))[0]
        torch.testing.assert_close(layer(x, x, x)[0], expected, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(fold_alteration(layer, 8)(x, x, x)[0], expected, atol=1e-5, rtol=1e-5)


def test_timm_conv_subclass_is_altered_through_its_own_forward():
    from timm.layers import StdConv2d

    conv = StdConv2d(4, 6, 3)
    layer = WeightAlteration(conv, KEYS)
    _randomize_scales(layer)
    x = torch.randn(1, 4, 6, 6)
    with fan_convert.frames(4):
        torch.testing.assert_close(fold_alteration(layer, 4)(x), layer(x), atol=1e-5, rtol=1e-5)


def test_alter_weight_matches_grouped_convolution_semantics():
    w = torch.randn(6, 2, 3, 3)  # 6 outputs, 4 inputs, 2 groups
    s = torch.randn(4)
    altered = alter_weight(w, s, groups=2)
    assert torch.equal(altered[:3], w[:3] * (1 + s[:2]).view(1, 2, 1, 1))
    assert torch.equal(altered[3:], w[3:] * (1 + s[2:]).view(1, 2, 1, 1))


def test_residual_alteration_starts_exact_and_refuses_to_fold():
    conv = nn.Conv3d(4, 6, 3, padding=1)
    layer = ResidualAlteration(conv, KEYS, kernel_size=3)
    x = torch.randn(1, 4, 4, 6, 6)
    with fan_convert.frames(8):
        assert torch.equal(layer(x), conv(x))
    with pytest.raises(NotFoldableError, match="cannot be folded"):
        fold_alteration(layer, 8)
    kept = layer.specialize(6)
    assert kept.keys == (8,)
    assert torch.equal(kept(x), conv(x))  # one key: no selection needed
    with pytest.raises(TypeError, match="convolutions only"):
        ResidualAlteration(nn.Linear(4, 4), KEYS, kernel_size=3)


def test_unsupported_layers_are_refused():
    with pytest.raises(TypeError, match="transposed"):
        WeightAlteration(nn.ConvTranspose2d(4, 4, 3), KEYS)
    with pytest.raises(TypeError, match="not a convolution"):
        WeightAlteration(nn.ReLU(), KEYS)


def test_scale_gradients_reach_only_the_active_key():
    layer = WeightAlteration(nn.Conv2d(3, 4, 3), KEYS)
    with fan_convert.frames(16):
        layer(torch.randn(2, 3, 5, 5)).sum().backward()
    assert layer.scales["16"].grad.abs().sum() > 0
    assert layer.scales["4"].grad is None and layer.scales["8"].grad is None


def test_host_code_can_still_read_the_wrapped_layer():
    layer = WeightAlteration(nn.Conv2d(3, 4, 3, groups=1), KEYS)
    assert layer.in_channels == 3 and layer.out_channels == 4 and layer.kernel_size == (3, 3)
    assert layer.weight is layer.base_layer.weight
    assert ResidualAlteration(nn.Conv2d(3, 4, 3), KEYS, kernel_size=3).out_channels == 4


def test_inference_reuses_the_altered_weight_until_an_input_changes():
    import copy
    import pickle

    layer = WeightAlteration(nn.Conv2d(6, 8, 3), KEYS)
    _randomize_scales(layer)
    x = torch.randn(2, 6, 7, 7)

    def reference(key):
        return nn.functional.conv2d(x, alter_weight(layer.base_layer.weight, layer.scales[str(key)]), layer.base_layer.bias)

    with torch.no_grad():
        first = layer.altered_weight(8)
        assert layer.altered_weight(8) is first  # cached
        assert torch.equal(layer.altered_weight(4), alter_weight(layer.base_layer.weight, layer.scales["4"]))
        layer.scales["8"].add_(0.5)  # an in-place update (an optimizer step, load_state_dict)
        with fan_convert.frames(8):
            assert torch.allclose(layer(x), reference(8))
        layer.base_layer.weight.mul_(2)
        with fan_convert.frames(8):
            assert torch.allclose(layer(x), reference(8))
    with torch.inference_mode(), fan_convert.frames(16):
        assert torch.allclose(layer(x), reference(16))
    assert "_inference_cache" not in copy.deepcopy(layer).__dict__
    assert "_inference_cache" not in pickle.loads(pickle.dumps(layer)).__dict__
    with fan_convert.frames(8):  # with autograd on, nothing is cached and gradients flow
        layer(x).sum().backward()
    assert layer.scales["8"].grad is not None and layer.base_layer.weight.grad is not None


def test_a_forward_that_reads_the_weight_directly_gets_the_active_keys_altered_weight():
    # torchvision's Swin3D attention calls F.linear(x, self.qkv.weight): the alteration must reach it.
    class ReadsWeight(nn.Module):
        def __init__(self):
            super().__init__()
            self.qkv = nn.Linear(4, 4)

        def forward(self, x):
            return torch.nn.functional.linear(x, self.qkv.weight, self.qkv.bias)

    fan = fan_convert.adapt(ReadsWeight(), frames=(4, 8), targets=["qkv"]).eval()
    with torch.no_grad():
        fan.qkv.scales["4"].fill_(0.5)
    x = torch.randn(2, 4)
    with torch.no_grad(), fan_convert.frames(4):
        assert torch.allclose(fan(x), fan.qkv(x))
    with torch.no_grad(), fan_convert.frames(8):
        assert torch.allclose(fan(x), fan.qkv.base_layer(x))
    assert fan.qkv.weight is fan.qkv.base_layer.weight  # outside a forward: the layer's own parameter
    with torch.no_grad(), fan_convert.frames(4):
        assert torch.allclose(fan_convert.specialize(fan, 4)(x), fan(x))
