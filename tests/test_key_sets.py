"""Every zoo model and key set: adapt() either refuses it with a one-line reason, or the FAN it
makes specializes at every key (a key that maps to no whole number of a fixed-T layer's time
steps is refused when the plan is made, never found by specialize or export later).

Models are built on the meta device (no weights are initialised: plan, adapt and specialize
read shapes and attributes only), so the sweep over the catalog stays fast."""

import warnings

import pytest
import torch

import fan_convert
from fan_convert.nn import NormBank
from fan_convert.surgery import rules
from fan_convert.zoo import build
from fan_convert.zoo.catalog import ZOO

DEFAULT_KEYS = (4, 8, 16)


def _specialize_every_layer(fan, k: int) -> None:
    """What :func:`fan_convert.specialize` does to each FAN layer at ``k``, without copying the model."""
    for _, layer in fan.named_modules():
        if isinstance(layer, rules.fan_layer_types()):
            rules.rule_for_layer(layer).plain(layer, k)


def _outcomes(entry, every: bool = False) -> list[str]:
    """'refused: ...' or 'ok' for what a new user types (adapt's default keys, trained_at left to
    adapt), and with ``every`` also for the catalog's key set and both trained_at values (the
    catalog's, adapt's default), with the whole-model :func:`fan_convert.specialize`; raises when
    an accepted FAN does not specialize at one of its keys."""
    combos = [(DEFAULT_KEYS, None)]
    if every:
        combos += [(entry.frames, entry.trained_at), (entry.frames, None), (DEFAULT_KEYS, entry.trained_at)]
    found = []
    with warnings.catch_warnings(), torch.device(_device_for(entry)):
        warnings.simplefilter("ignore")
        for keys, trained_at in dict.fromkeys(combos):
            try:
                fan = fan_convert.adapt(entry.build(), frames=keys, trained_at=trained_at, inplace=True)
            except ValueError as err:
                message = str(err)
                assert message and "\n" not in message, f"{entry.name} {keys}: a refusal is one line: {message!r}"
                found.append(f"refused: {message}")
                continue
            for k in keys:
                try:
                    fan_convert.specialize(fan, k) if every else _specialize_every_layer(fan, k)
                except Exception as err:
                    raise AssertionError(
                        f"{entry.name}: adapt accepted keys {keys} (trained_at={trained_at}) but specialize({k}) "
                        f"fails: {err}") from err
            found.append("ok")
    return found


def _device_for(entry) -> str:
    """The meta device (nothing initialised), unless the builder reads tensor values (pytorchvideo
    MViT's drop-path rates call .item()): then the CPU."""
    try:
        with warnings.catch_warnings(), torch.device("meta"):
            warnings.simplefilter("ignore")
            entry.build()
        return "meta"
    except RuntimeError:
        return "cpu"


@pytest.mark.parametrize("entry", [e for e in ZOO if not e.heavy], ids=lambda e: e.name)
def test_every_accepted_key_set_specializes_at_every_key(entry):
    outcomes = _outcomes(entry)
    assert outcomes[0] == "ok" or entry.name == "pytorchvideo:x3d_s", f"{entry.name}: {outcomes[0]}"


@pytest.mark.slow
@pytest.mark.parametrize("entry", ZOO, ids=lambda e: e.name)
def test_every_accepted_key_set_specializes_at_every_key_at_both_trained_at(entry):
    outcomes = _outcomes(entry, every=True)
    assert outcomes[1] == "ok", f"{entry.name}: the catalog's own key set is refused: {outcomes[1]}"


def test_x3d_s_at_4_8_16_is_refused_at_adapt_time_naming_the_pool_and_the_fix():
    with warnings.catch_warnings(), torch.device("meta"):
        warnings.simplefilter("ignore")
        model = build("pytorchvideo:x3d_s")
        with pytest.raises(ValueError) as refused:
            fan_convert.plan(model, frames=(4, 8, 16))  # trained_at defaults to the largest key, 16
        message = str(refused.value)
        assert "\n" not in message and "'blocks.5.pool.pool'" in message and "13 time steps at trained_at=16" in message
        assert "4, 8 frames" in message and "trained_at=13" in message
        with pytest.raises(ValueError, match="blocks.5.pool.pool"):
            fan_convert.adapt(model, frames=(4, 8, 16))
        fan = fan_convert.adapt(model, frames=(4, 8, 16), trained_at=13)  # X3D-S's native clip: every key serves
        for k in (4, 8, 16):
            assert not any(isinstance(m, NormBank) for m in fan_convert.specialize(fan, k).modules())


def test_a_head_pool_read_against_an_assumed_trained_at_is_warned_about():
    with warnings.catch_warnings(), torch.device("meta"):
        warnings.simplefilter("ignore")
        model = build("pytorchvideo:x3d_xs")  # trained at 4 frames; its head pool averages 4 time steps
    with torch.device("meta"):
        with pytest.warns(UserWarning, match=r"'blocks.5.pool.pool' pools .* trained_at=16, the largest key.*pass trained_at="):
            fan_convert.plan(model, frames=(4, 8, 16))
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            fan_convert.plan(model, frames=(4, 8, 16), trained_at=4)  # given: nothing to warn about
