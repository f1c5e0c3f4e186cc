"""Choosing the frame count for a latency budget: measure the specialized (plain) model at each
candidate T on the deployment device — or the one exported artifact for every frame count, at
each T — and pick the largest T (or, given accuracies, the most accurate T) whose latency fits.

    result = choose_frames(fan, 40.0, threads=2, size=112)
    result.chosen          # e.g. 8, or None when nothing fits (result.message says why)
    result = choose_frames_for_artifact("r3d.onnx", 40.0, threads=2)   # the artifact, at its recorded size
"""

from __future__ import annotations

import json
import os
import statistics
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import asdict, dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import torch
from torch import nn

from ..clips import frame_size as _size
from ..clips import fresh
from ..context import check_frame_count, check_frames, nearest_key
from ..context import frames as select_frames
from ..surgery import get_plan, specialize
from .artifact import Artifact, load_runner, read_artifact
from .clips import make_clip
from .cost import interleaved_ms

__all__ = ["BudgetResult", "BudgetRow", "choose_frames", "choose_frames_for_artifact", "measure_latency", "read_accuracy"]


@dataclass(frozen=True)
class BudgetRow:
    """One candidate frame count: the sub-network serving it, its measured latency, its accuracy."""

    t: int
    key: int  # the trained key (sub-network) serving t
    latency_ms: float | None  # median over the timed runs; None: not measured (a smaller T was over budget)
    accuracy: float | None  # top-1 from the accuracy table, if given
    fits: bool  # latency_ms <= the budget
    runs: int = 0  # timed forwards measured (fewer than asked once it was clearly over budget)

    @property
    def trained(self) -> bool:
        return self.t == self.key


@dataclass
class BudgetResult:
    """The latency/accuracy table and the choice. ``chosen`` is None when nothing fits."""

    budget_ms: float
    rows: list[BudgetRow]
    chosen: int | None
    rule: str  # "largest T" or "most accurate"
    settings: dict = field(default_factory=dict)  # batch, size, device, threads, warmup, repeats (an artifact: runtime too)

    def row(self, t: int) -> BudgetRow:
        return next(r for r in self.rows if r.t == t)

    @property
    def fastest(self) -> BudgetRow:
        return min((r for r in self.rows if r.latency_ms is not None), key=lambda r: (r.latency_ms, r.t))

    @property
    def message(self) -> str:
        """One line: what was chosen and why, or why nothing was."""
        where = _where(self.settings)
        if self.chosen is None:
            fast = self.fastest
            others = ", ".join(f"T={r.t} {r.latency_ms:.1f} ms" for r in self.rows if r is not fast and r.latency_ms is not None)
            return (
                f"no frame count fits {self.budget_ms:g} ms ({where}): the fastest is T={fast.t} (key {fast.key}) at "
                f"{fast.latency_ms:.1f} ms{f' ({others})' if others else ''}; raise the budget, lower the input size or batch, "
                "or use more threads"
            )
        row = self.row(self.chosen)
        acc = f", top-1 {row.accuracy:.2f}" if row.accuracy is not None else ""
        why = "the most accurate" if self.rule == "most accurate" else "the largest"
        return f"T={row.t} (key {row.key}): {row.latency_ms:.1f} ms <= {self.budget_ms:g} ms{acc} — {why} frame count that fits ({where})"

    def to_dict(self) -> dict[str, Any]:
        return {
            "budget_ms": self.budget_ms, "chosen": self.chosen, "rule": self.rule, "settings": dict(self.settings),
            "rows": [asdict(r) for r in self.rows], "message": self.message,
        }


def _where(settings: dict) -> str:
    size = settings.get("size")
    size = f"{size}x{size}" if isinstance(size, int) else "x".join(str(s) for s in size or ())
    threads = settings.get("threads")
    parts = [f"batch {settings.get('batch')}", size, str(settings.get("device")), settings.get("runtime")]
    if threads:
        parts.append(f"{threads} thread{'s' if threads != 1 else ''}")
    return ", ".join(p for p in parts if p)


@contextmanager
def num_threads(threads: int | None) -> Iterator[None]:
    """``torch.set_num_threads(threads)`` inside the block, the previous value restored after."""
    if threads is None:
        yield
        return
    check_frame_count(threads, "threads")
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _device(device: str | torch.device) -> torch.device:
    try:
        device = torch.device(device)
    except (RuntimeError, TypeError):
        raise ValueError(f"unknown device {device!r}; use cpu, cuda or cuda:N") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError("device 'cuda' requested but CUDA is not available here; use device='cpu' (--device cpu)")
    return device


def _syncer(device: torch.device) -> Callable[[], None] | None:
    return partial(torch.cuda.synchronize, device) if device.type == "cuda" else None


def _forward(model: nn.Module, clip: Any) -> Any:
    return model(fresh(clip))


def measure_latency(
    model: nn.Module,
    t: int,
    *,
    batch: int = 1,
    size: int | Sequence[int] = 112,
    device: str | torch.device = "cpu",
    threads: int | None = None,
    warmup: int = 3,
    repeats: int = 20,
    example_input: Any = None,
) -> float:
    """The median latency in milliseconds of one forward of ``model`` on a clip of ``t`` frames.

    ``model`` is moved to ``device`` and run in eval mode under :func:`torch.inference_mode`
    (its training flag is restored afterwards); the clip is ``(batch, 3, t, size, size)``
    (``example_input`` to give your own; SlowFast models get ``[slow, fast]``). A FAN runs its
    ``t``-frame sub-network; for deployment numbers pass ``fan_convert.specialize(fan, t)``.
    ``threads``: :func:`torch.set_num_threads` during the measurement, restored after.

    Example::

        ms = measure_latency(fan_convert.specialize(fan, 8), 8, size=112, threads=2)
    """
    t = check_frame_count(t, "frames")
    check_frame_count(batch, "batch")
    check_frame_count(repeats, "repeats")
    _check_warmup(warmup)
    device = _device(device)
    x = example_input if example_input is not None else make_clip(model, t, size, batch=batch, device=device)
    was_training = model.training
    model.to(device).eval()
    try:
        with num_threads(threads), torch.inference_mode(), select_frames(t):
            times = interleaved_ms({t: partial(_forward, model, x)}, rounds=repeats, warmup=warmup, sync=_syncer(device))
    finally:
        model.train(was_training)
    return statistics.median(times[t])


def _check_warmup(warmup: int) -> None:
    if isinstance(warmup, bool) or not isinstance(warmup, int) or warmup < 0:
        raise ValueError(f"warmup must be a non-negative integer, got {warmup!r}")


def _over_budget(times: list[float], budget_ms: float) -> bool:
    """Clearly over budget: even the fastest run is over, seen 3 times or by half again."""
    return bool(times) and min(times) > budget_ms and (len(times) >= 3 or min(times) > 1.5 * budget_ms)


def choose_frames(
    fan: nn.Module,
    latency_ms: float,
    *,
    candidates: Sequence[int] | None = None,
    batch: int = 1,
    size: int | Sequence[int] = 112,
    device: str | torch.device = "cpu",
    threads: int | None = None,
    accuracy: dict[int, float] | None = None,
    warmup: int = 3,
    repeats: int = 20,
    progress: Callable[[str], None] | None = None,
) -> BudgetResult:
    """Measure the specialized model at each candidate frame count and choose one that fits
    ``latency_ms``.

    Args:
        fan: an adapted model.
        latency_ms: the budget for one forward of ``batch`` clips, in milliseconds.
        candidates: frame counts to consider; default: the trained keys plus every T in
            ``accuracy`` (an untrained T runs the nearest key's sub-network).
        batch, size, device, threads, warmup, repeats: how to measure (as :func:`measure_latency`,
            with the candidates timed in interleaved rounds, so a slow spell on a busy machine
            does not favour one T); measure as you will deploy.
        accuracy: top-1 per frame count (e.g. :func:`read_accuracy` of ``fan-convert eval --json``).
        progress: called with one line of text as measuring goes (what is measured, what was dropped).

    A candidate whose fastest run is clearly over the budget is not measured further, and larger
    frame counts (which cost more) are not measured at all: their rows have ``latency_ms=None``.

    Returns:
        A :class:`BudgetResult`: one row per candidate (T, key, latency, accuracy, fits) and
        ``chosen``: without ``accuracy``, the largest T that fits; with it, the most accurate T
        that fits (ties: the faster; T without an accuracy are not chosen unless no fitting T
        has one). None when nothing fits; ``result.message`` names the fastest option.

    Example::

        result = choose_frames(fan, 40.0, threads=2, progress=print)
        print(result.message)
    """
    keys = get_plan(fan).frames
    _check_budget(latency_ms)
    accuracy = _accuracy(accuracy)
    candidates = _candidates(candidates, keys, accuracy)
    device = _device(device)
    check_frame_count(repeats, "repeats")
    check_frame_count(batch, "batch")
    _check_warmup(warmup)
    _size(size)  # a bad size stops here, before anything is announced or built
    settings = {"batch": batch, "size": size, "device": str(device), "threads": threads, "warmup": warmup, "repeats": repeats}

    def build(t: int) -> Callable[[], Any]:
        plain = specialize(fan, t, unfoldable="keep").to(device).eval()
        return partial(_forward, plain, make_clip(fan, t, size, batch=batch, device=device))

    return _measure_and_choose(build, keys, latency_ms, candidates, accuracy, settings, within=lambda: num_threads(threads),
                               sync=_syncer(device), progress=progress)


def choose_frames_for_artifact(
    path: str | os.PathLike | Artifact,
    latency_ms: float,
    *,
    candidates: Sequence[int] | None = None,
    batch: int | None = None,
    threads: int | None = None,
    accuracy: dict[int, float] | None = None,
    warmup: int = 3,
    repeats: int = 20,
    progress: Callable[[str], None] | None = None,
    trust_pickle: bool = False,
) -> BudgetResult:
    """:func:`choose_frames` for the one artifact of every frame count (``fan-convert export``
    without ``--frames``, :func:`fan_convert.export`): the file itself is run at each candidate T
    on the CPU — ``.onnx`` with onnxruntime (``threads``: its intra-op threads), ``.pt2`` with
    ``torch.export.load(path).module()`` (``threads``: :func:`torch.set_num_threads`, restored
    after) — on random float32 clips of the input shape recorded in the artifact, T filled in.

    Args:
        path: the ``.onnx`` or ``.pt2`` artifact (or its :func:`~fan_convert.deploy.artifact.read_artifact`).
        candidates: default: the artifact's keys plus every T in ``accuracy``; each must lie in
            the artifact's frame range and be a multiple of its ``frame_multiple`` (a tubelet
            model's tubelet), else ValueError.
        batch: clips per forward; only for an artifact exported with a dynamic batch (default
            1). A fixed-batch artifact runs its recorded batch: another value is a ValueError.
        trust_pickle: a ``.pt2`` is loaded only with ``trust_pickle=True``:
            :func:`torch.export.load` falls back to unpickling (running code from the file)
            when the weights-only read fails. An ``.onnx`` needs no trust.
        latency_ms, threads, accuracy, warmup, repeats, progress: as :func:`choose_frames`.

    Raises:
        ValueError: a missing file, not a fan-convert artifact, an artifact for one T only (pass
        the FAN file or the all-frame-counts artifact), bad candidates or batch, an untrusted
        ``.pt2``; ImportError: onnxruntime missing for an ``.onnx``.

    Example::

        result = choose_frames_for_artifact("r3d.onnx", 40.0, threads=2)
        result.chosen, result.message
    """
    artifact = path if isinstance(path, Artifact) else read_artifact(path)
    name = artifact.path.name
    if not artifact.every_frame_count:
        source = artifact.metadata.get("exported_from") or "MODEL.fan.safetensors"
        raise ValueError(f"'{name}' is a specialized artifact for {artifact.metadata['frames']} frames only: there is no T to "
                         f"choose; pass the FAN file it came from ({source}) or the artifact for every frame count "
                         f"(`fan-convert export {source} -o {artifact.path.stem}{artifact.path.suffix}`, without --frames)")
    keys = artifact.keys
    _check_budget(latency_ms)
    accuracy = _accuracy(accuracy)
    given = candidates is not None
    candidates = _candidates(candidates, keys, accuracy)
    try:
        artifact.check_frames(candidates)
    except ValueError as err:
        raise ValueError(f"{err}{'' if given else ' (the candidates: its keys and the T in the accuracy table)'}") from None
    check_frame_count(repeats, "repeats")
    if batch is not None:
        check_frame_count(batch, "batch")
    if threads is not None:
        check_frame_count(threads, "threads")
    _check_warmup(warmup)
    shapes = {t: artifact.clip_shape(t, batch) for t in candidates}
    height, width = artifact.size
    onnx = artifact.format == "onnx"
    settings = {"batch": shapes[candidates[0]][0], "size": height if height == width else (height, width), "device": "cpu",
                "threads": threads, "warmup": warmup, "repeats": repeats, "runtime": "onnxruntime" if onnx else "torch.export",
                "artifact": str(artifact.path)}
    run = load_runner(artifact, threads=threads, trust_pickle=trust_pickle)

    def build(t: int) -> Callable[[], Any]:
        return partial(run, torch.randn(shapes[t], generator=torch.Generator().manual_seed(t)))

    return _measure_and_choose(build, keys, latency_ms, candidates, accuracy, settings,
                               within=nullcontext if onnx else lambda: num_threads(threads), sync=None, progress=progress)


def _check_budget(latency_ms: float) -> None:
    if isinstance(latency_ms, bool) or not isinstance(latency_ms, (int, float)) or not latency_ms > 0:
        raise ValueError(f"the latency budget must be a positive number of milliseconds, got {latency_ms!r}")


def _accuracy(accuracy: dict[int, float] | None) -> dict[int, float]:
    return {check_frame_count(int(t) if isinstance(t, str) else t, "accuracy frame count"): float(a)
            for t, a in (accuracy or {}).items()}


def _candidates(candidates: Sequence[int] | None, keys: Sequence[int], accuracy: dict[int, float]) -> list[int]:
    """The frame counts to measure: as given, else the keys and every T with an accuracy; sorted."""
    return list(check_frames(sorted(set(keys) | set(accuracy)) if candidates is None else candidates))


def _measure_and_choose(
    build: Callable[[int], Callable[[], Any]],
    keys: Sequence[int],
    latency_ms: float,
    candidates: Sequence[int],
    accuracy: dict[int, float],
    settings: dict,
    *,
    within: Callable[[], AbstractContextManager],
    sync: Callable[[], None] | None,
    progress: Callable[[str], None] | None,
) -> BudgetResult:
    """Time ``build(t)()`` for every candidate in interleaved rounds (inside ``within()`` and
    :func:`torch.inference_mode`), stop those clearly over budget (and larger ones), and choose."""
    warmup, repeats = settings["warmup"], settings["repeats"]
    say = progress or (lambda line: None)
    say(f"measuring T={', '.join(map(str, candidates))} ({_where(settings)}): {warmup} warm-up and up to {repeats} timed "
        "forwards each, in interleaved rounds")
    runs = {t: build(t) for t in candidates}
    skipped: set[int] = set()
    announced: set[int] = set()

    def stop(times: dict[int, list[float]]) -> set[int]:
        for t in candidates:
            if times[t] and t not in announced:
                announced.add(t)
                say(f"T={t} (key {nearest_key(t, keys)}): first timed run {times[t][0]:.1f} ms")
        over = {t for t in times if t not in skipped and _over_budget(times[t], latency_ms)}
        for t in sorted(over):
            larger = [u for u in candidates if u > t and u not in skipped]
            say(f"T={t}: fastest run {min(times[t]):.1f} ms > {latency_ms:g} ms, stopped measuring it"
                + (f" (and T={', '.join(map(str, larger))}, which cost more)" if larger else ""))
            skipped.update([t, *larger])
        return skipped

    with within(), torch.inference_mode():
        times = interleaved_ms(runs, rounds=repeats, warmup=warmup, sync=sync, stop=stop)
    del runs
    rows = []
    for t in candidates:
        ms = statistics.median(times[t]) if times[t] else None
        rows.append(BudgetRow(t=t, key=nearest_key(t, keys), latency_ms=ms, accuracy=accuracy.get(t),
                              fits=ms is not None and ms <= latency_ms, runs=len(times[t])))
    fitting = [r for r in rows if r.fits]
    rated = [r for r in fitting if r.accuracy is not None]
    if accuracy and rated:
        chosen, rule = max(rated, key=lambda r: (r.accuracy, -r.latency_ms, r.t)).t, "most accurate"
    else:
        chosen, rule = (max(r.t for r in fitting) if fitting else None), "largest T"
    return BudgetResult(budget_ms=float(latency_ms), rows=rows, chosen=chosen, rule=rule, settings=settings)


def read_accuracy(path: str | os.PathLike, metric: str = "top1") -> dict[int, float]:
    """Accuracy per frame count from a results file written by ``fan-convert eval --json``
    (:func:`fan_convert.train.evaluate.save_results`): ``{model: {"8": {"top1": ...}, ...}}``.
    The first model's entry is used.

    Example::

        accuracy = read_accuracy("eval.json")   # {4: 61.2, 8: 66.5, 16: 68.0}
        result = choose_frames(fan, 40.0, accuracy=accuracy)
    """
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise ValueError(f"accuracy file '{path}' does not exist") from None
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise ValueError(f"accuracy file '{path}' is not JSON; write it with `fan-convert eval ... --json {path.name}`") from None
    if not isinstance(data, dict) or not data or not isinstance(next(iter(data.values())), dict):
        raise ValueError(f"accuracy file '{path}' is not an eval results file ({{model: {{frames: {{{metric}: ...}}}}}}); "
                         f"write it with `fan-convert eval ... --json {path.name}`")
    name, entry = next(iter(data.items()))
    accuracy = {}
    for t, metrics in entry.items():
        try:
            frames = check_frame_count(int(t), "frame count")
            accuracy[frames] = float(metrics[metric])
        except (ValueError, TypeError, KeyError):
            raise ValueError(f"accuracy file '{path}': entry {t!r} of {name!r} has no frame count with a {metric!r} value") from None
    if not accuracy:
        raise ValueError(f"accuracy file '{path}' has no results for the model {name!r} (its first entry)")
    return accuracy
