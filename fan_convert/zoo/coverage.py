"""The conversion check every zoo architecture must pass, and the coverage table it feeds."""

from __future__ import annotations

import time
import warnings
from dataclasses import dataclass

import torch

from ..context import frames as select_frames
from ..errors import describe
from ..surgery import adapt, specialize
from .catalog import ZooEntry


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


def _count(model) -> int:
    return sum(p.numel() for p in model.parameters())


def _forward(model, clip):
    return model(list(clip) if isinstance(clip, list) else clip)


@torch.no_grad()
def check_entry(entry: ZooEntry, tolerance: float = 1e-5) -> CoverageResult:
    """Build -> adapt (with an example clip) -> the same logits as the original at the training T
    for every key -> runs at every key and at an untrained T -> the plan lists what it did."""
    started = time.perf_counter()
    result = CoverageResult(entry.name, passed=False)
    try:
        torch.manual_seed(0)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            model = entry.build().eval()
        clip = entry.clip(entry.trained_at)
        expected = _forward(model, clip)
        converting = time.perf_counter()
        fan = adapt(model, entry.frames, trained_at=entry.trained_at, example_input=clip).eval()
        result.convert_seconds = round(time.perf_counter() - converting, 2)
        result.params, result.adapted_params = _count(model), _count(fan)
        plan = fan.fan_plan
        result.analysis, result.overhead_pct = plan.analysis, 100 * plan.overhead
        result.norms, result.alterations = len(plan.select("norm")), len(plan.select("alteration"))
        result.fixed_t = len(plan.select("fixed_t"))
        unsupported = [s for s in plan.select(status="unsupported") if s.kind == "fixed_t"]
        if unsupported:
            raise AssertionError(f"fixed-T site left unsupported: {unsupported[0].path}: {unsupported[0].reason}")
        if not (result.norms and result.alterations):
            raise AssertionError("nothing converted: no norm or no alteration site")
        diffs = []
        for k in entry.frames:
            with select_frames(k):
                diffs.append((_forward(fan, clip) - expected).abs().max().item())
        result.max_diff = max(diffs)
        if result.max_diff > tolerance:
            raise AssertionError(f"function not preserved: max |logit difference| {result.max_diff:.2e} > {tolerance:g}")
        untrained = (entry.frames[0] + entry.frames[1]) // 2 + 1
        for t in sorted({*entry.frames, untrained} - {entry.trained_at}):
            out = _forward(fan, entry.clip(t, seed=t))
            if out.shape != expected.shape or not torch.isfinite(out).all():
                raise AssertionError(f"bad output at T={t}: shape {tuple(out.shape)}")
        result.specialized_params = _count(specialize(fan, entry.trained_at))
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
