import copy

import pytest
import timm.layers as tl
import torch
from conftest import randomize_norms
from torch import nn
from torchvision.ops.misc import FrozenBatchNorm2d

import fan_convert
from fan_convert.nn import NormBank

KEYS = (4, 8, 16)

NORMS = {
    "BatchNorm1d": (lambda: nn.BatchNorm1d(6), (5, 6, 7)),
    "BatchNorm2d": (lambda: nn.BatchNorm2d(6), (2, 6, 5, 5)),
    "BatchNorm3d": (lambda: nn.BatchNorm3d(6), (2, 6, 3, 5, 5)),
    "SyncBatchNorm": (lambda: nn.SyncBatchNorm(6), (2, 6, 3, 5, 5)),
    "LayerNorm": (lambda: nn.LayerNorm(6), (2, 7, 6)),
    "GroupNorm": (lambda: nn.GroupNorm(3, 6), (2, 6, 5, 5)),
    "InstanceNorm2d-affine-tracked": (lambda: nn.InstanceNorm2d(6, affine=True, track_running_stats=True), (2, 6, 5, 5)),
    "timm.BatchNormAct2d": (lambda: tl.BatchNormAct2d(6, act_layer=nn.ReLU), (2, 6, 5, 5)),
    "timm.LayerNorm2d": (lambda: tl.LayerNorm2d(6), (2, 6, 5, 5)),
    "timm.GroupNormAct": (lambda: tl.GroupNormAct(6, num_groups=3, act_layer=nn.GELU), (2, 6, 5, 5)),
    "torchvision.FrozenBatchNorm2d": (lambda: FrozenBatchNorm2d(6), (2, 6, 5, 5)),
    "timm.FrozenBatchNormAct2d": (lambda: tl.FrozenBatchNormAct2d(6), (2, 6, 5, 5)),
    "timm.RmsNorm": (lambda: tl.RmsNorm(6), (2, 7, 6)),
    "timm.LayerNormFp32": (lambda: tl.LayerNormFp32(6), (2, 7, 6)),
}


@pytest.mark.parametrize("name", NORMS)
def test_every_copy_is_exact_and_keeps_subclass_behaviour(name):
    make, shape = NORMS[name]
    norm = randomize_norms(make()).eval()
    bank = NormBank(norm, KEYS).eval()
    x = torch.randn(shape)
    expected = norm(x)
    for k in KEYS:
        copy_k = bank.norms[str(k)]
        assert type(copy_k) is type(norm)
        for (n1, t1), (n2, t2) in zip(norm.state_dict().items(), copy_k.state_dict().items(), strict=True):
            assert n1 == n2 and torch.equal(t1, t2)
            assert t1.data_ptr() != t2.data_ptr() or t1.numel() == 0  # private storage
        for attr in ("eps", "momentum", "affine", "track_running_stats", "normalized_shape", "num_groups"):
            if hasattr(norm, attr):
                assert getattr(copy_k, attr) == getattr(norm, attr)
        with fan_convert.frames(k):
            assert torch.equal(bank(x), expected)


def test_training_one_key_leaves_the_others_untouched():
    bank = NormBank(randomize_norms(nn.BatchNorm2d(4)), KEYS).train()
    before = copy.deepcopy(bank.state_dict())
    optimizer = torch.optim.SGD(bank.parameters(), lr=0.5)
    with fan_convert.frames(8):
        for _ in range(3):
            optimizer.zero_grad()
            (bank(torch.randn(3, 4, 5, 5) * 3 + 1) ** 2).mean().backward()
            optimizer.step()
    after = bank.state_dict()
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert changed == {f"norms.8.{n}" for n in ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")}
    assert all(p.grad is None for k, p in bank.named_parameters() if not k.startswith("norms.8."))


def test_attribute_reads_follow_the_active_key():
    bank = NormBank(nn.BatchNorm1d(5), KEYS)
    with torch.no_grad():
        bank.norms["4"].weight.fill_(4.0)
    assert bank.num_features == 5 and bank.eps == 1e-5
    assert bank.weight is bank.norms["16"].weight  # default key outside a forward: the largest
    with fan_convert.frames(5):
        assert bank.weight is bank.norms["4"].weight
    assert NormBank(nn.BatchNorm1d(5), KEYS, default_key=8).weight is not None
    with pytest.raises(AttributeError):
        _ = bank.no_such_attribute


def test_specialize_returns_a_plain_private_copy():
    bank = NormBank(nn.LayerNorm(4), KEYS)
    plain = bank.specialize(12)
    assert type(plain) is nn.LayerNorm
    assert torch.equal(plain.weight, bank.norms["16"].weight)
    assert plain.weight.data_ptr() != bank.norms["16"].weight.data_ptr()


def test_sync_batchnorm_conversion_recurses_into_the_bank():
    model = nn.Sequential(nn.Conv2d(3, 4, 1), nn.BatchNorm2d(4))
    fan = fan_convert.adapt(model, frames=KEYS)
    synced = nn.SyncBatchNorm.convert_sync_batchnorm(fan)
    assert isinstance(synced[1], NormBank)
    assert all(type(n) is nn.SyncBatchNorm for n in synced[1].norms.values())


def test_bank_state_dict_loads_without_version_metadata():
    bank = randomize_norms(NormBank(nn.BatchNorm2d(4), KEYS))
    for k, norm in enumerate(bank.norms.values()):
        norm.num_batches_tracked.fill_(7 + k)  # a version-less BatchNorm load must not reset the count
    plain_dict = {k: v.clone() for k, v in bank.state_dict().items()}  # no _metadata, like safetensors
    assert not hasattr(plain_dict, "_metadata")
    fresh = NormBank(nn.BatchNorm2d(4), KEYS)
    result = fresh.load_state_dict(plain_dict, strict=True)
    assert not result.missing_keys and not result.unexpected_keys
    loaded = fresh.state_dict()
    assert loaded.keys() == plain_dict.keys()
    assert all(torch.equal(loaded[k], v) for k, v in plain_dict.items()), "a value was not loaded"
    x = torch.randn(2, 4, 3, 3)
    with torch.no_grad():
        for key in KEYS:
            with fan_convert.frames(key):
                assert torch.equal(fresh.eval()(x), bank.eval()(x))
