"""The mutual-distillation fine-tuner: one loop for CPU, one GPU (AMP) or many (torchrun/DDP).

Each step feeds every frame count's view of the same clips through the model (the root hook
selects the sub-network from each view's T) and minimises the mutual distillation loss. With a
single frame count it is plain cross-entropy training (the baselines use that).
"""

from __future__ import annotations

import json
import math
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Iterator

import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import DataLoader, Sampler

from ..nn import NormBank, ResidualAlteration, WeightAlteration
from .checkpointing import load_training_state, save_training_state
from .data import collate_views
from .loss import mutual_distillation_loss


@dataclass
class TrainConfig:
    """Everything that defines a run (saved with every checkpoint).

    Example::

        config = TrainConfig(frames=(4, 8, 16), epochs=5, lr=0.005, warmup_epochs=1, amp="bf16", out_dir="runs/r3d")
    """

    frames: tuple[int, ...]
    epochs: int = 10
    batch_size: int = 16
    optimizer: str = "sgd"  # "sgd" (momentum 0.9, nesterov) or "adamw"
    lr: float = 0.01
    weight_decay: float = 1e-4
    schedule: str = "cosine"  # "cosine" or "step"
    warmup_epochs: float = 0.0
    milestones: tuple[int, ...] = ()  # epochs where "step" divides the lr by 10
    clip_grad: float | None = 20.0
    distill_weight: float = 1.0
    loss_mode: str = "distill"  # "distill" or "ce" (the paper's ablation)
    detach_teacher: bool = True
    amp: str = "off"  # "off", "bf16" or "fp16" (CUDA)
    channels_last: bool = False  # conv weights in channels-last memory format (faster on GPUs)
    compile: bool = False
    num_workers: int = 0
    seed: int = 0
    checkpoint_every: int = 0  # steps; 0: at the end of each epoch only
    out_dir: str | None = None
    device: str = "auto"
    progress: bool = True
    extra: dict = field(default_factory=dict)

    def __post_init__(self):
        self.frames = tuple(sorted(self.frames))
        self.milestones = tuple(self.milestones)
        for name, value, allowed in (
            ("optimizer", self.optimizer, ("sgd", "adamw")), ("schedule", self.schedule, ("cosine", "step")),
            ("amp", self.amp, ("off", "bf16", "fp16")), ("loss_mode", self.loss_mode, ("distill", "ce")),
        ):
            if value not in allowed:
                raise ValueError(f"{name} must be one of {', '.join(allowed)}, got {value!r}")
        if not self.frames or self.epochs < 1 or self.batch_size < 1 or self.lr <= 0:
            raise ValueError("frames must be non-empty and epochs, batch_size, lr positive")


def param_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """Weight decay on weights only: never on norms, biases or alteration scales.

    Example::

        optimizer = torch.optim.SGD(param_groups(fan, weight_decay=1e-4), lr=0.01, momentum=0.9)
    """
    no_decay_ids = set()
    for module in model.modules():
        if isinstance(module, (NormBank,)) or "Norm" in type(module).__name__:
            no_decay_ids |= {id(p) for p in module.parameters()}
        if isinstance(module, WeightAlteration):
            no_decay_ids |= {id(p) for p in module.scales.parameters()}
        if isinstance(module, ResidualAlteration):
            no_decay_ids |= {id(p) for p in module.adapters.parameters()}
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        (no_decay if id(p) in no_decay_ids or p.dim() <= 1 or name.endswith(".bias") else decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def lr_factor(step: int, steps_per_epoch: int, config: TrainConfig) -> float:
    """The multiplier of the base learning rate at optimizer step ``step``: a linear warm-up over
    ``config.warmup_epochs``, then a cosine decay to 0 at the end of the run, or for the
    ``"step"`` schedule a division by 10 at each of ``config.milestones`` (in epochs).

    Example::

        lr_factor(500, 100, TrainConfig(frames=(4, 8, 16), epochs=10))   # 0.5: halfway down the cosine
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: lr_factor(step, len(loader), config))
    """
    total = config.epochs * steps_per_epoch
    warmup = int(config.warmup_epochs * steps_per_epoch)
    if step < warmup:
        return (step + 1) / warmup
    if config.schedule == "step":
        return 0.1 ** sum(step >= m * steps_per_epoch for m in config.milestones)
    progress = (step - warmup) / max(1, total - warmup)
    return 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))


def to_channels_last(model: nn.Module) -> nn.Module:
    """Channels-last memory format for every 4-D (2D conv) and 5-D (3D conv) weight, in place.

    ``model.to(memory_format=torch.channels_last)`` refuses 5-D tensors, so 3D and mixed models
    need each tensor converted by its rank.

    Example::

        to_channels_last(fan)   # then feed clips as usual; convolutions pick the faster kernels on GPU
    """
    formats = {4: torch.channels_last, 5: torch.channels_last_3d}
    with torch.no_grad():
        for tensor in [*model.parameters(), *model.buffers()]:
            if tensor.dim() in formats:
                tensor.data = tensor.data.contiguous(memory_format=formats[tensor.dim()])
    return model


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


def distributed_context() -> tuple[int, int]:
    """(rank, world size); initialises the process group when launched by torchrun.

    Example::

        rank, world = distributed_context()   # (0, 1) in a plain `python train.py`
    """
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1 and not dist.is_initialized():
        dist.init_process_group(backend="nccl" if torch.cuda.is_available() else "gloo")
    return (dist.get_rank(), dist.get_world_size()) if dist.is_initialized() else (0, 1)


class Trainer:
    """Fine-tune ``model`` on a :class:`~fan_convert.train.data.MultiViewClips`-style dataset.

    Example::

        trainer = Trainer(fan, train_data, TrainConfig(frames=(4, 8, 16), epochs=3, out_dir="runs/x"))
        history = trainer.fit()
    """

    def __init__(self, model: nn.Module, dataset, config: TrainConfig):
        self.config = config
        self.rank, self.world = distributed_context()
        self.device = self._device()
        torch.manual_seed(config.seed + self.rank)
        self.model = model.to(self.device)
        if config.channels_last:
            to_channels_last(self.model)
        self.dataset = dataset
        self.sampler = EpochSampler(len(dataset), shuffle=True, seed=config.seed, rank=self.rank, world=self.world)
        groups = param_groups(self.model, config.weight_decay)
        if config.optimizer == "sgd":
            self.optimizer = torch.optim.SGD(groups, lr=config.lr, momentum=0.9, nesterov=True)
        else:
            self.optimizer = torch.optim.AdamW(groups, lr=config.lr)
        self.steps_per_epoch = max(1, math.ceil(len(self.sampler.order()) / config.batch_size))
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, lambda step: lr_factor(step, self.steps_per_epoch, config)
        )
        self.scaler = torch.amp.GradScaler("cuda", enabled=config.amp == "fp16" and self.device.type == "cuda")
        self.step, self.epoch, self.skipped = 0, 0, 0
        self.skipped_videos: list[str] = []  # one reason per skip, for skip_report()
        self.history: list[dict] = []
        self.forward_model = self.model
        if self.world > 1:
            ids = [self.device.index] if self.device.type == "cuda" else None
            self.forward_model = nn.parallel.DistributedDataParallel(self.model, device_ids=ids)
        if config.compile:
            self.forward_model = torch.compile(self.forward_model)

    def _device(self) -> torch.device:
        if self.config.device != "auto":
            return torch.device(self.config.device)
        if torch.cuda.is_available():
            return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        return torch.device("cpu")

    @property
    def checkpoint_path(self) -> Path | None:
        return Path(self.config.out_dir) / "last.safetensors" if self.config.out_dir else None

    def resume(self, path: str | Path) -> None:
        """Continue exactly where the checkpoint at ``path`` stopped."""
        state = load_training_state(path)
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.scaler.load_state_dict(state["scaler"])
        self.step, self.epoch, self.skipped = state["step"], state["epoch"], state["skipped"]
        self.history = json.loads(state["history"])
        torch.set_rng_state(state["rng"])

    def save_checkpoint(self) -> None:
        if self.rank != 0 or self.checkpoint_path is None:
            return
        self.checkpoint_path.parent.mkdir(parents=True, exist_ok=True)
        save_training_state(self.checkpoint_path, {
            "model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(), "scaler": self.scaler.state_dict(),
            "step": self.step, "epoch": self.epoch, "skipped": self.skipped,
            "history": json.dumps(self.history), "rng": torch.get_rng_state(),
            "config": json.dumps(asdict(self.config)),
        })

    def _log(self, record: dict) -> None:
        self.history.append(record)
        if self.rank == 0 and self.config.out_dir:
            Path(self.config.out_dir).mkdir(parents=True, exist_ok=True)
            with open(Path(self.config.out_dir) / "log.jsonl", "a") as f:
                f.write(json.dumps(record) + "\n")

    def _loader(self) -> DataLoader:
        self.sampler.epoch = self.epoch
        # max(0, ...): a batch of only skipped videos makes no step, so steps can fall behind batches
        self.sampler.start = max(0, (self.step - self.epoch * self.steps_per_epoch) * self.config.batch_size)
        if hasattr(self.dataset, "set_epoch"):
            self.dataset.set_epoch(self.epoch)
        return DataLoader(self.dataset, batch_size=self.config.batch_size, sampler=self.sampler,
                          num_workers=self.config.num_workers, collate_fn=collate_views)

    def train_step(self, views: dict[int, torch.Tensor], labels: torch.Tensor, frames: tuple[int, ...] | None = None) -> dict[str, float]:
        """One optimisation step on the views of ``frames`` (default: every configured frame count)."""
        config = self.config
        frames = config.frames if frames is None else frames
        self.model.train()
        amp_dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(config.amp)
        with torch.autocast(self.device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
            logits = {t: self.forward_model(views[t].to(self.device, non_blocking=True)) for t in frames}
            labels = labels.to(self.device)
            loss, parts = mutual_distillation_loss(
                {t: v.float() for t, v in logits.items()}, labels, weight=config.distill_weight,
                detach_teacher=config.detach_teacher, mode=config.loss_mode,
            )
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        if config.clip_grad:
            self.scaler.unscale_(self.optimizer)
            nn.utils.clip_grad_norm_(self.model.parameters(), config.clip_grad)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.scheduler.step()
        self.step += 1
        parts["loss"] = loss.item()
        for t, out in logits.items():
            parts[f"acc@{t}"] = (out.argmax(-1) == labels).float().mean().item()
        return parts

    def fit(self) -> list[dict]:
        """Train to ``config.epochs``; returns one record per epoch (also in ``out_dir/log.jsonl``)."""
        from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

        config = self.config
        show = config.progress and self.rank == 0
        with Progress(TextColumn("{task.description}"), BarColumn(), TextColumn("{task.fields[stats]}"),
                      TimeRemainingColumn(), disable=not show, transient=False) as progress:
            while self.epoch < config.epochs:
                loader = self._loader()
                task = progress.add_task(f"epoch {self.epoch + 1}/{config.epochs}", total=len(loader), stats="")
                sums: dict[str, float] = {}
                count, clips, started = 0, 0, time.perf_counter()
                for views, labels, skipped in loader:
                    self.skipped += skipped
                    self.skipped_videos += skipped.reasons
                    if labels.numel() == 0:
                        continue
                    parts = self.train_step(views, labels)
                    count += 1
                    clips += labels.numel()
                    for k, v in parts.items():
                        sums[k] = sums.get(k, 0.0) + v
                    rate = clips / (time.perf_counter() - started)
                    shown = " ".join(f"{k} {v / count:.3f}" for k, v in sums.items() if k.startswith(("loss", "acc")))
                    progress.update(task, advance=1, stats=f"{shown} {rate:.1f} clips/s")
                    if config.checkpoint_every and self.step % config.checkpoint_every == 0:
                        self.save_checkpoint()
                self.epoch += 1
                record = {"epoch": self.epoch, "step": self.step, "lr": self.scheduler.get_last_lr()[0],
                          "seconds": round(time.perf_counter() - started, 2), "skipped": self.skipped,
                          **{k: v / max(count, 1) for k, v in sums.items()}}
                self._log(record)
                self.save_checkpoint()
        return self.history
