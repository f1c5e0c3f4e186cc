"""Every zoo architecture converts: function preserved at its training T for every key, runs at
every key and at an untrained T, and the plan lists norms, alterations and fixed-T sites."""

import pytest

from fan_convert.zoo.catalog import ZOO
from fan_convert.zoo.coverage import check_entry

CASES = [pytest.param(e, id=e.name, marks=[pytest.mark.slow] if e.heavy else []) for e in ZOO]


def test_the_zoo_is_broad():
    sources = {e.spec.split(":")[0] for e in ZOO}
    assert sources == {"timm", "torchvision", "pytorchvideo"} and len(ZOO) >= 25


# Temporal pools / position embeddings sized to the training clip, which must be rewritten.
FIXED_T = {
    "pytorchvideo:slow_r50": 1, "pytorchvideo:x3d_xs": 1, "pytorchvideo:slowfast_r50": 2, "pytorchvideo:mvit_base_16x4": 1,
    "torchvision:s3d": 1, "torchvision:mvit_v1_b": 1, "torchvision:r3d_18": 0, "timm:resnet50": 0,
}


@pytest.mark.parametrize("entry", CASES)
def test_architecture_converts(entry):
    result = check_entry(entry)
    assert result.passed, result.error
    assert result.adapted_params > result.params == result.specialized_params  # folding restores the plain size
    if entry.name in FIXED_T:
        assert result.fixed_t == FIXED_T[entry.name]
