"""What a forward costs: GFLOPs counted on the meta device, and latencies measured in
interleaved rounds (every contender once per round, so a slow spell on a shared machine hits all
of them, not only one).

    gflops(fan, 8, 112)                                          # e.g. 16.7, or None
    times = interleaved_ms({"a": lambda: a(x), "b": lambda: b(x)}, rounds=20)
    statistics.median(times["a"])
"""

from __future__ import annotations

import copy
import time
from typing import Any, Callable, Hashable, Iterable, Mapping, TypeVar

import torch
from torch import nn
from torch.utils._pytree import tree_map

from ..context import frames as select_frames

K = TypeVar("K", bound=Hashable)


def gflops(model: nn.Module, t: int, input_size: int = 224, *, batch: int = 1) -> float | None:
    """GFLOPs of one forward of ``model`` on a clip of ``t`` frames at ``input_size`` (in the
    model's input layout, see :func:`fan_convert.deploy.make_clip`), counted on a copy on the
    meta device: nothing is computed. None when the model does not run on such a clip.

    Example::

        print(gflops(fan, 8, 112))   # the 8-frame sub-network's cost
    """
    from torch.utils.flop_counter import FlopCounterMode

    from .clips import make_clip

    meta_model = copy.deepcopy(model).to("meta").requires_grad_(False)  # (FlopCounterMode trips on some no-grad graphs)
    clip = tree_map(lambda v: torch.zeros(v.shape, device="meta"), make_clip(model, t, input_size, batch=batch))
    try:
        with torch.no_grad(), select_frames(t), FlopCounterMode(display=False) as counter:
            meta_model(clip)
        return counter.get_total_flops() / 1e9
    except Exception:  # a model that does not take such clips (fixed sizes, other layouts)
        return None


def interleaved_ms(
    runs: Mapping[K, Callable[[], Any]],
    *,
    rounds: int,
    warmup: int = 1,
    sync: Callable[[], None] | None = None,
    stop: Callable[[dict[K, list[float]]], Iterable[K]] | None = None,
) -> dict[K, list[float]]:
    """Time every callable in ``runs`` once per round, in turn, for ``rounds`` rounds; each
    makes ``warmup`` untimed calls just before its first timed one. Returns the milliseconds of
    each timed call, per name.

    ``sync``: called before starting and stopping the clock (e.g. ``torch.cuda.synchronize``).
    ``stop``: called after each timed call with the times so far; the names it returns are not
    run again (e.g. those already over a latency budget, and larger ones never start).

    Example::

        times = interleaved_ms({"fan": lambda: fan(x), "plain": lambda: plain(x)}, rounds=20, warmup=2)
        slower = statistics.median(times["fan"]) / statistics.median(times["plain"])
    """
    sync = sync or (lambda: None)
    times: dict[K, list[float]] = {name: [] for name in runs}
    stopped: set[K] = set()
    for round_index in range(rounds):
        for name, run in runs.items():
            if name in stopped:
                continue
            for _ in range(warmup if round_index == 0 else 0):
                run()
            sync()
            start = time.perf_counter()
            run()
            sync()
            times[name].append(1000 * (time.perf_counter() - start))
            if stop is not None:
                stopped.update(stop(times))
        if len(stopped) == len(runs):
            break
    return times
