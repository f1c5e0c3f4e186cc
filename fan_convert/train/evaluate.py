"""Accuracy across frame counts (the Temporal Deviation table) and norm recalibration.

Works for an adapted model (each T runs on the nearest trained key) and for any plain video
model, so a model can be diagnosed before it is converted.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Callable, Sequence

import torch
from torch import nn
from torch.utils.data import DataLoader

from ..context import frames as select_frames
from ..context import nearest_key
from ..data import collate_views
from ..nn import NormBank
from ..outputs import logits_of
from .distributed import resolve_device
from .frame_counts import bind_frames, model_keys


@torch.no_grad()
def evaluate(
    model: nn.Module, dataset, frames: Sequence[int] | None = None, *, batch_size: int = 16,
    device: str | torch.device = "cpu", num_workers: int = 0, progress: Callable[[int, int], None] | None = None,
) -> dict[int, dict[str, float]]:
    """Top-1/top-5 accuracy (%) at each frame count; ``dataset`` yields ``({t: clip}, label)``
    with a view for every ``t`` in ``frames`` (one decode serves them all). ``frames`` defaults
    to the dataset's frame counts, else the model's keys (a dataset built without frame counts
    is given them). The counts stay on the device until the end: one read-back for the whole run.
    ``progress(done, total)`` is called after each batch.

    Example::

        table = evaluate(fan, MultiViewClips(items, (2, 4, 6, 8, 12, 16), train=False))   # every view
        table = evaluate(fan, MultiViewClips(items, train=False))                         # the keys
    """
    if not frames:
        frames = getattr(dataset, "frames", None) or model_keys(model)
        if not frames:
            raise ValueError("evaluate needs frames=...: neither the dataset nor the model (not adapted) names them")
    frames = tuple(frames)
    bind_frames(dataset, frames)
    device = resolve_device(device) if isinstance(device, str) else device
    model = model.eval().to(device)
    cuda = device.type == "cuda"
    if cuda:
        torch.backends.cudnn.benchmark = True  # one clip shape per frame count
    loader = DataLoader(dataset, batch_size=batch_size, num_workers=num_workers, collate_fn=collate_views, pin_memory=cuda)
    correct = torch.zeros(2, len(frames), dtype=torch.long, device=device)  # rows: top-1, top-5
    total = skipped = 0
    reasons: list[str] = []
    for batch, (views, labels, lost) in enumerate(loader, 1):
        skipped += lost
        reasons += lost.reasons
        if labels.numel():
            labels = labels.to(device, non_blocking=True)
            total += labels.numel()
            for column, t in enumerate(frames):
                logits = logits_of(model(views[t].to(device, non_blocking=True)))
                top = logits.topk(min(5, logits.shape[-1]), dim=-1).indices
                correct[0, column] += (top[:, 0] == labels).sum()
                correct[1, column] += (top == labels[:, None]).any(-1).sum()
        if progress is not None:
            progress(batch, len(loader))
    if total == 0:
        raise ValueError("no sample could be evaluated; check the data")
    top1, top5 = correct.tolist()
    return {t: {"top1": 100 * top1[i] / total, "top5": 100 * top5[i] / total, "clips": total, "skipped": skipped,
                "skipped_videos": reasons} for i, t in enumerate(frames)}


def deviation_table(results: dict[str, dict[int, dict[str, float]]], keys: Sequence[int] = ()):
    """A rich table: one column per model, one row per frame count (top-1 %).

    Example::

        results = {"fan": evaluate(fan, val, (2, 4, 8, 16)), "original": evaluate(model, val, (2, 4, 8, 16))}
        rich.print(deviation_table(results, keys=(4, 8, 16)))
    """
    from rich.table import Table

    table = Table(title="Top-1 accuracy (%) by frame count" + (f" — trained keys {list(keys)}" if keys else ""))
    table.add_column("frames", justify="right")
    if keys:
        table.add_column("sub-network", justify="right")
    for name in results:
        table.add_column(name, justify="right")
    all_t = sorted({t for r in results.values() for t in r})
    for t in all_t:
        row = [str(t)] + ([str(nearest_key(t, keys)) + ("" if t in keys else " (nearest)")] if keys else [])
        row += [f"{r[t]['top1']:.1f}" if t in r else "-" for r in results.values()]
        table.add_row(*row)
    return table


def save_results(results: dict, path: str | Path) -> None:
    """Write ``{model: {t: metrics}}`` (as :func:`evaluate` gives per model) to ``path`` as JSON,
    frame counts as string keys; :func:`fan_convert.deploy.read_accuracy` reads it back.

    Example::

        save_results({"fan": evaluate(fan, val, (4, 8, 16))}, "eval.json")
    """
    Path(path).write_text(json.dumps({name: {str(t): v for t, v in r.items()} for name, r in results.items()}, indent=2))


def plot_results(results: dict[str, dict[int, dict[str, float]]], path: str | Path, keys: Sequence[int] = ()) -> Path:
    """Accuracy vs frames, one line per model, to a PNG (needs matplotlib: the ``plot`` extra).

    Example::

        plot_results({"fan": evaluate(fan, val, (2, 4, 8, 16))}, "accuracy.png", keys=(4, 8, 16))
    """
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise ImportError("plotting needs matplotlib: pip install 'fan-convert[plot]'") from None
    fig, ax = plt.subplots(figsize=(5, 3.5), dpi=120)
    for name, r in results.items():
        ts = sorted(r)
        ax.plot(ts, [r[t]["top1"] for t in ts], marker="o", label=name)
    for k in keys:
        ax.axvline(k, color="grey", lw=0.5, ls=":")
    ax.set_xlabel("frames at inference")
    ax.set_ylabel("top-1 accuracy (%)")
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return Path(path)


@torch.no_grad()
def calibrate(
    fan: nn.Module, dataset, *, batches: int = 10, batch_size: int = 16, device: str | torch.device = "cpu", num_workers: int = 0,
    progress: Callable[[int, int], None] | None = None,
) -> nn.Module:
    """Recompute every key's batch-norm statistics on that key's views (no training).

    Each BatchNorm copy of key ``k`` gets the plain average of the statistics of ``batches``
    batches of ``k``-frame views; everything else stays in eval mode. Modifies ``fan``.
    ``progress(done, total)`` is called after each batch (total: the batches of every key).

    Example::

        data = MultiViewClips(items, fan_convert.get_plan(fan).frames, train=False)   # a view per key
        calibrate(fan, data, batches=20)
    """
    banks = [m for m in fan.modules() if isinstance(m, NormBank)]
    if not banks:
        raise ValueError("calibrate needs an adapted model (fan_convert.adapt) with norm banks")
    keys = banks[0].keys
    device = resolve_device(device) if isinstance(device, str) else device
    fan = fan.to(device).eval()
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, collate_fn=collate_views, num_workers=num_workers,
                        pin_memory=device.type == "cuda")
    per_key = min(batches, len(loader))
    for number, key in enumerate(keys):
        norms = [b.norms[str(key)] for b in banks if isinstance(b.norms[str(key)], nn.modules.batchnorm._BatchNorm)]
        saved = [n.momentum for n in norms]
        for n in norms:
            n.reset_running_stats()
            n.momentum = None  # cumulative average over the calibration batches
            n.train()
        for i, (views, labels, _) in enumerate(loader):
            if i >= batches:
                break
            if labels.numel():
                with select_frames(key):
                    fan(views[key].to(device, non_blocking=True))
            if progress is not None:
                progress(number * per_key + i + 1, per_key * len(keys))
        for n, momentum in zip(norms, saved, strict=True):
            n.momentum = momentum
            n.eval()
    return fan
