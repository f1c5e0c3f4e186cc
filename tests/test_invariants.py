"""The invariants of a conversion, as one matrix: every architecture of the zoo catalog
(fan_convert/zoo/catalog.py) x every alteration preset it supports (default, paper, none), built
with random weights and randomised norm statistics.

- preservation: before fine-tuning, in eval mode, the adapted model gives the original logits at
  every key (the zoo sweep's check, ``fan_convert.testing.coverage.check_entry``);
- isolation: a training step at one key never touches another key's parameters or statistics;
- fold: ``specialize(fan, T)`` computes what the adapted model computes at T, its keys made to
  differ as after fine-tuning;
- round trips: save -> load gives the same state and logits; a specialized file loads as the plain
  architecture computing the same.

Heavy architectures are marked slow, and so are the non-default presets of all but three
architectures (see EVERY_PRESET_BY_DEFAULT).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field

import pytest
import torch

import fan_convert
from fan_convert.outputs import logits_of
from fan_convert.testing import as_if_fine_tuned, fresh, per_key_state
from fan_convert.testing.coverage import Conversion, CoverageResult, check_entry
from fan_convert.zoo.catalog import ZOO, ZooEntry

# Temporal pools / position embeddings sized to the training clip, which must be rewritten.
FIXED_T = {
    "pytorchvideo:slow_r50": 1, "pytorchvideo:x3d_xs": 1, "pytorchvideo:slowfast_r50": 2, "pytorchvideo:mvit_base_16x4": 1,
    "torchvision:s3d": 1, "torchvision:mvit_v1_b": 1, "torchvision:r3d_18": 0, "timm:resnet50": 0,
    "hf:videomae": 2, "hf:timesformer": 3, "hf:vivit": 2, "hf:vjepa2": 1, "hf:videoprism_vision_model": 1,
}


# the architectures whose other presets (paper, none) also run in the default suite: a 2D CNN as
# TSM, a transformer as TSM and a 3D CNN; every other (architecture, preset) pair runs with -m slow
EVERY_PRESET_BY_DEFAULT = {"timm:resnet18", "timm:vit_tiny_patch16_224", "torchvision:r3d_18"}


def run(model: torch.nn.Module, clip) -> torch.Tensor:
    """The model's logits on ``clip`` (``.logits`` of a transformers output)."""
    return logits_of(model(fresh(clip)))


def _marks(entry: ZooEntry, targets: str | None) -> list:
    slow = entry.heavy or (targets != "default" and entry.name not in EVERY_PRESET_BY_DEFAULT)
    return [pytest.mark.slow] if slow else []


CASES = [pytest.param((e, t), id=f"{e.name}-{t}", marks=_marks(e, t)) for e in ZOO for t in e.targets]


@dataclass
class Case:
    entry: ZooEntry
    targets: str | None
    result: CoverageResult
    conversion: Conversion | None
    _tuned: dict = field(default_factory=dict)

    @property
    def key(self) -> int:
        """The key the invariants after preservation are checked at: the smallest (cheapest)."""
        return self.entry.frames[0]

    def adapted(self) -> torch.nn.Module:
        assert self.conversion is not None, f"{self.entry.name} did not convert: {self.result.error}"
        return self.conversion.fan

    def tuned(self) -> tuple[torch.nn.Module, object, torch.Tensor]:
        """A copy of the adapted model with every key moved as by fine-tuning, a clip at the key
        and the copy's logits on it (computed once)."""
        if not self._tuned:
            fan = as_if_fine_tuned(copy.deepcopy(self.adapted())).eval()
            clip = self.entry.clip(self.key, seed=1)
            with torch.no_grad(), fan_convert.frames(self.key):
                self._tuned.update(fan=fan, clip=clip, logits=run(fan, clip))
        return self._tuned["fan"], self._tuned["clip"], self._tuned["logits"]


@pytest.fixture(scope="module", params=CASES)
def case(request) -> Case:
    """One architecture x preset, converted once for all the invariants (pytest groups the tests
    by it, so one model is alive at a time)."""
    entry, targets = request.param
    kept: list[Conversion] = []
    result = check_entry(entry, targets=targets, keep=kept)
    return Case(entry, targets, result, kept[0] if kept else None)


def test_preservation(case):
    result = case.result
    assert result.passed, result.error
    assert result.adapted_params > result.params == result.specialized_params  # folding restores the plain size
    if case.entry.name in FIXED_T:
        assert result.fixed_t == FIXED_T[case.entry.name]


def test_isolation(case):
    fan = copy.deepcopy(case.adapted()).train()
    owners = per_key_state(fan)
    assert set(owners.values()) == set(case.entry.frames)
    before = {name: value.clone() for name, value in fan.state_dict().items()}
    optimizer = torch.optim.SGD(fan.parameters(), lr=0.1)
    clip = case.entry.clip(case.key, seed=3)
    with fan_convert.frames(case.key):
        run(fan, clip).float().pow(2).mean().backward()
    optimizer.step()
    changed = {name for name, value in fan.state_dict().items() if not torch.equal(before[name], value)}
    assert any(owners.get(name) == case.key for name in changed), "the step trained nothing of its own key"
    others = sorted(name for name in changed if owners.get(name, case.key) != case.key)
    assert not others, f"a step at key {case.key} changed {len(others)} entries of other keys, e.g. {others[0]}"


def test_fold(case):
    fan, clip, logits = case.tuned()
    plain = fan_convert.specialize(fan, case.key)
    assert type(plain) is type(case.conversion.model) and not per_key_state(plain)
    assert plain.state_dict().keys() == case.conversion.model.state_dict().keys()
    with torch.no_grad():
        torch.testing.assert_close(run(plain, clip), logits, atol=1e-4, rtol=1e-4)


def test_round_trips(case, tmp_path):
    fan, clip, logits = case.tuned()
    back = fan_convert.load(fan_convert.save(fan, tmp_path / "fan.safetensors"))
    assert back.fan_plan.to_dict() == fan.fan_plan.to_dict()
    state, restored = fan.state_dict(), back.state_dict()
    assert restored.keys() == state.keys() and all(torch.equal(restored[n], v) for n, v in state.items())
    plain = fan_convert.load(fan_convert.save_specialized(fan, case.key, tmp_path / "plain.safetensors"))
    assert type(plain) is type(case.conversion.model) and not per_key_state(plain)
    with torch.no_grad(), fan_convert.frames(case.key):
        assert torch.equal(run(back, clip), logits)
        torch.testing.assert_close(run(plain, clip), logits, atol=1e-4, rtol=1e-4)
