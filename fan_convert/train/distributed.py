"""Processes, devices and the one-forward-per-step model wrapper the trainer needs for DDP.

Under torchrun every rank owns one GPU (``cuda`` means ``cuda:$LOCAL_RANK``), joins the process
group on that device, and runs one DistributedDataParallel forward per step that carries every
frame count's view, so DDP sees a single autograd graph per step whatever keys it uses.
"""

from __future__ import annotations

import atexit
import math
import os
from typing import Iterator, Sequence

import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import Sampler

from ..context import nearest_key
from ..outputs import logits_of


def local_rank() -> int:
    return int(os.environ.get("LOCAL_RANK", "0"))


def resolve_device(name: str) -> torch.device:
    """The device this process trains on: ``auto`` is this rank's GPU if there is one, else the
    CPU; a bare ``cuda`` is ``cuda:$LOCAL_RANK`` (one GPU per torchrun rank); anything else as given.

    Example::

        resolve_device("cuda")   # cuda:3 on the fourth rank of `torchrun --nproc-per-node 8`
    """
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(name)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"device={name!r} (--device {name}): no CUDA GPU is visible to this process; use device='cpu' (--device cpu)")
        if device.index is None:
            device = torch.device("cuda", local_rank())
        if device.index >= torch.cuda.device_count():
            raise ValueError(
                f"device='{device}' (--device {device}): only {torch.cuda.device_count()} GPU(s) are visible; "
                "start at most one torchrun process per GPU"
            )
    return device


def distributed_context(device: torch.device | None = None) -> tuple[int, int]:
    """(rank, world size); when launched by torchrun (one process or more), pins this process to
    ``device`` and joins the process group (NCCL for a CUDA device, gloo otherwise).

    Example::

        rank, world = distributed_context(resolve_device("auto"))   # (0, 1) in a plain `python train.py`
    """
    world = int(os.environ.get("WORLD_SIZE", "1"))
    launched = world > 1 or "TORCHELASTIC_RUN_ID" in os.environ  # torchrun, even with one process
    if launched and not dist.is_initialized():
        cuda = device is not None and device.type == "cuda"
        if cuda:
            torch.cuda.set_device(device)  # before the group forms, so NCCL binds this rank's GPU
        dist.init_process_group(backend="nccl" if cuda else "gloo")
        # Leave the group while Python is still whole: a gloo group torn down during interpreter
        # finalisation can abort the process (SIGABRT) when another rank is still working.
        atexit.register(_leave_process_group)
    return (dist.get_rank(), dist.get_world_size()) if dist.is_initialized() else (0, 1)


def _leave_process_group() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def uses_every_key(frames: Sequence[int], keys: Sequence[int] | None) -> bool:
    """Whether views at ``frames`` reach every key's parameters (always true for a plain model).

    Example::

        uses_every_key((4, 6), (4, 8, 16))   # False: 16's norms and scales get no gradient
    """
    return keys is None or {nearest_key(t, keys) for t in frames} == set(keys)


class MultiView(nn.Module):
    """``{T: clip}`` in, ``{T: logits}`` out: every view of a step in one forward.

    Example::

        logits = MultiView(fan)({4: clips4, 16: clips16})   # {4: (B, classes), 16: (B, classes)}
    """

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, views: dict[int, torch.Tensor]) -> dict[int, torch.Tensor]:
        return {t: logits_of(self.model(views[t])) for t in sorted(views)}


def gather_rows(state: torch.Tensor, world: int, device: torch.device) -> torch.Tensor:
    """Every rank's copy of a 1-D state tensor (an RNG state), stacked by rank, on the CPU."""
    if world == 1:
        return state[None].clone()
    comm = device if dist.get_backend() == "nccl" else torch.device("cpu")
    local = state.to(comm)
    rows = [torch.empty_like(local) for _ in range(world)]
    dist.all_gather(rows, local)
    return torch.stack(rows).cpu()


def own_row(saved: torch.Tensor, rank: int, world: int) -> tuple[torch.Tensor, bool]:
    """This rank's saved state and whether it is exact: a checkpoint from a run with another
    world size (or an old single-row one) gives rank 0's state to every rank."""
    if saved.dim() == 1:
        return saved, world == 1
    if saved.shape[0] == world:
        return saved[rank].clone(), True  # a copy: set_rng_state ignores a view's offset
    return saved[0].clone(), False


class EpochSampler(Sampler[int]):
    """A shuffled order fixed by (seed, epoch), sharded over ranks, that can start mid-epoch."""

    def __init__(self, size: int, *, shuffle: bool, seed: int, rank: int = 0, world: int = 1):
        self.size, self.shuffle, self.seed, self.rank, self.world = size, shuffle, seed, rank, world
        self.epoch, self.start = 0, 0

    def order(self) -> list[int]:
        if self.shuffle:
            order = torch.randperm(self.size, generator=torch.Generator().manual_seed(self.seed * 1000 + self.epoch)).tolist()
        else:
            order = list(range(self.size))
        per_rank = math.ceil(self.size / self.world)
        order += order[: per_rank * self.world - self.size]  # pad so every rank has the same count
        return order[self.rank :: self.world]

    def __iter__(self) -> Iterator[int]:
        return iter(self.order()[self.start :])

    def __len__(self) -> int:
        return len(self.order()) - self.start
