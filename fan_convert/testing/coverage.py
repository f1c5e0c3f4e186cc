"""The conversion check every zoo architecture must pass (norm statistics randomised), and the
coverage table it feeds."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from ..context import frames as select_frames
from ..errors import describe
from ..outputs import logits_of
from ..surgery import adapt, specialize
from ..zoo.catalog import ZooEntry
from . import count_parameters, fresh, randomize_norms


@dataclass
class CoverageResult:
    name: str
    passed: bool
    error: str = ""
    analysis: str = ""
    norms: int = 0
    alterations: int = 0
    fixed_t: int = 0
    overhead_pct: float = 0.0
    params: int = 0  # original
    adapted_params: int = 0
    specialized_params: int = 0  # folded for the training T
    convert_seconds: float = 0.0  # adapt() alone
    max_diff: float = float("nan")
    seconds: float = 0.0


@dataclass
class Conversion:
    """One architecture converted for the checks: the original (norm statistics randomised), its
    adapted model, the example clip at the training T and the original's logits on it."""

    entry: ZooEntry
    targets: str | None
    model: nn.Module
    fan: nn.Module
    clip: Any
    expected: torch.Tensor
    adapt_seconds: float


@torch.no_grad()
def convert_entry(entry: ZooEntry, targets: str | None = "default") -> Conversion:
    """Build ``entry`` with random weights and randomised norm statistics (so that a norm bank
    that lost its copied statistics cannot pass with fresh norms), and adapt it at its natural
    frame counts with an example clip at its training T."""
    torch.manual_seed(0)
    model = randomize_norms(entry.build()).eval()
    clip = entry.clip(entry.trained_at)
    expected = logits_of(model(fresh(clip)))
    started = time.perf_counter()
    fan = adapt(
        model, entry.frames, targets=targets, trained_at=entry.trained_at, example_input=clip, frame_axis=entry.frame_axis,
    ).eval()
    return Conversion(entry, targets, model, fan, clip, expected, time.perf_counter() - started)


@torch.no_grad()
def check_entry(
    entry: ZooEntry, tolerance: float = 1e-5, *, targets: str | None = "default", keep: list | None = None,
) -> CoverageResult:
    """Build -> adapt (with an example clip) -> the same logits as the original at the training T
    for every key -> runs at every key and at an untrained T -> the plan lists what it did and
    counts the parameters right. ``keep``: a list that receives the :class:`Conversion`."""
    started = time.perf_counter()
    result = CoverageResult(entry.name, passed=False)
    try:
        conversion = convert_entry(entry, targets)
        if keep is not None:
            keep.append(conversion)
        fan, clip, expected = conversion.fan, conversion.clip, conversion.expected
        plan = fan.fan_plan
        result.convert_seconds = round(conversion.adapt_seconds, 2)
        result.params, result.adapted_params = plan.params_before, plan.params_after
        if count_parameters(fan) != plan.params_after:
            raise AssertionError(f"the plan counts {plan.params_after:,} parameters, the adapted model has {count_parameters(fan):,}")
        result.analysis, result.overhead_pct = plan.analysis, 100 * plan.overhead
        result.norms, result.alterations = len(plan.select("norm")), len(plan.select("alteration"))
        result.fixed_t = len(plan.select("fixed_t"))
        unsupported = [s for s in plan.select(status="unsupported") if s.kind == "fixed_t"]
        if unsupported:
            raise AssertionError(f"fixed-T site left unsupported: {unsupported[0].path}: {unsupported[0].reason}")
        if not result.norms or (targets is not None and not result.alterations):
            raise AssertionError("nothing converted: no norm or no alteration site")
        diffs = []
        for k in entry.frames:
            with select_frames(k):
                diffs.append((logits_of(fan(fresh(clip))) - expected).abs().max().item())
        result.max_diff = max(diffs)
        if result.max_diff > tolerance:
            raise AssertionError(f"function not preserved: max |logit difference| {result.max_diff:.2e} > {tolerance:g}")
        for t in sorted({*entry.frames, entry.untrained_t} - {entry.trained_at}):
            out = logits_of(fan(entry.clip(t, seed=t)))
            if out.shape != expected.shape or not torch.isfinite(out).all():
                raise AssertionError(f"bad output at T={t}: shape {tuple(out.shape)}")
        result.specialized_params = count_parameters(specialize(fan, entry.trained_at))
        result.passed = True
    except Exception as err:  # recorded in the table; the test re-raises it
        result.error = describe(err)[:200]
    result.seconds = round(time.perf_counter() - started, 1)
    return result


def coverage_table(results: list[CoverageResult]) -> str:
    """Markdown, one row per architecture."""
    lines = [
        "| model | traced with | norms specialised | alterations | fixed-T sites rewritten | parameters: original → adapted"
        " → specialized | param overhead | adapt (s) | max logit diff | result |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for r in results:
        outcome = "pass" if r.passed else f"FAIL: {r.error}"
        lines.append(
            f"| `{r.name}` | {r.analysis or '-'} | {r.norms} | {r.alterations} | {r.fixed_t} | "
            f"{r.params:,} → {r.adapted_params:,} → {r.specialized_params:,} | {r.overhead_pct:.2f}% | "
            f"{r.convert_seconds:.2f} | {r.max_diff:.1e} | {outcome} |"
        )
    passed = sum(r.passed for r in results)
    seconds = sum(r.convert_seconds for r in results)
    lines.append(f"\n{passed} of {len(results)} architectures pass; adapt() took {seconds:.1f} s for all of them.")
    return "\n".join(lines)
