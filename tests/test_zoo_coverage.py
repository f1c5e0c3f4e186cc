"""The zoo sweep itself: a broad catalog, a check that would catch a norm bank that lost its
copied statistics, and the coverage table. The sweep over every architecture runs in
tests/test_invariants.py (preservation)."""

import dataclasses
import importlib.util

import pytest
import torch

from fan_convert.nn import NormBank
from fan_convert.testing import coverage
from fan_convert.zoo.catalog import ZOO

RESNET18 = next(e for e in ZOO if e.name == "timm:resnet18")


def test_the_zoo_is_broad():
    sources = {e.spec.split(":")[0] for e in ZOO}
    hf = {"hf"} if importlib.util.find_spec("transformers") else set()
    assert sources == {"timm", "torchvision", "pytorchvideo", *hf} and len(ZOO) >= 25 + 5 * bool(hf)
    assert len({e.name for e in ZOO}) == len(ZOO)
    assert all("default" in e.targets for e in ZOO)


def test_the_sweep_randomises_norm_statistics_so_lost_copies_fail(monkeypatch):
    kept = []
    assert coverage.check_entry(RESNET18, keep=kept).passed
    variances = [m.running_var for m in kept[0].model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert variances and all(not torch.allclose(v, torch.ones_like(v)) for v in variances)

    adapt = coverage.adapt

    def losing_statistics(*args, **kwargs):  # a converter whose banks start from fresh norms
        fan = adapt(*args, **kwargs)
        for bank in (m for m in fan.modules() if isinstance(m, NormBank)):
            for norm in bank.norms.values():
                norm.reset_running_stats()
        return fan

    monkeypatch.setattr(coverage, "adapt", losing_statistics)
    result = coverage.check_entry(RESNET18)
    assert not result.passed and "function not preserved" in result.error


def test_coverage_table_has_a_row_per_architecture_and_a_total():
    results = [
        coverage.CoverageResult("timm:resnet18", True, analysis="fx", norms=20, alterations=20, params=100, adapted_params=110,
                                specialized_params=100, convert_seconds=1.5, max_diff=0.0),
        coverage.CoverageResult("torchvision:s3d", False, error="AssertionError: nothing converted"),
    ]
    lines = coverage.coverage_table(results).splitlines()
    assert lines[0].startswith("| model |") and len([x for x in lines if x.startswith("| `")]) == 2
    assert "100 → 110 → 100" in lines[2] and "| pass |" in lines[2] and "FAIL: AssertionError" in lines[3]
    assert lines[-1] == "1 of 2 architectures pass; adapt() took 1.5 s for all of them."


def test_hf_entries_take_btchw_clips_and_an_untrained_t_that_splits_a_tubelet_fails():
    pytest.importorskip("transformers")
    vivit = next(e for e in ZOO if e.name == "hf:vivit")  # tubelets of 2 frames
    assert vivit.frame_axis == 1 and vivit.clip(6).shape == (1, 6, 3, vivit.size, vivit.size)
    assert all(e.untrained_t % 2 == 0 for e in ZOO if e.spec.startswith("hf:"))
    assert coverage.check_entry(vivit).passed
    result = coverage.check_entry(dataclasses.replace(vivit, untrained=7))
    assert not result.passed and "tubelet" in result.error
