"""The FAN fine-tuner: one loop for CPU, one GPU (AMP) or many (torchrun/DDP).

By default each step trains one frame count's view of its clips, in turn (``key_schedule``
"rotate"); the paper's schedule ("joint") feeds every frame count's view of the same clips through
the model at once and minimises the mutual distillation loss. The root hook selects the
sub-network from each view's T. With a single frame count it is plain cross-entropy training
(the baselines use that).
"""

from __future__ import annotations

import json
import math
import sys
import time
import warnings
from dataclasses import asdict, dataclass, field, replace
from functools import partial
from pathlib import Path

import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import DataLoader

from ..data import Skipped, collate_views
from ..io.atomic import atomic_write
from .checkpointing import load_training_state, save_training_state
from .distributed import EpochSampler, MultiView, distributed_context, gather_rows, own_row, resolve_device, uses_every_key
from .frame_counts import bind_frames, model_keys, resolve_frames
from .key_schedule import KEY_SCHEDULES, KeySchedule, PlannedBatches, SomeViews
from .loss import mutual_distillation_loss, taught_loss
from .metrics import RunningMeans
from .progress import EpochProgress
from .recipe import lr_factor, param_groups, start_momentum, to_channels_last

__all__ = ["TrainConfig", "Trainer", "EpochSampler", "distributed_context", "lr_factor", "param_groups", "to_channels_last"]
# The first torch whose compiler traces the frame context (a ContextVar read) without graph breaks.
COMPILE_CLEAN_TORCH = (2, 14)


@dataclass
class TrainConfig:
    """Everything that defines a run (saved with every checkpoint).

    Example::

        config = TrainConfig(epochs=15, lr=0.005, warmup_epochs=1, amp="bf16", out_dir="runs/r3d")

    ``frames`` (the frame counts each step trains) defaults to the adapted model's keys (its plan's
    ``frames``); a plain model needs them named, e.g. ``TrainConfig(frames=(16,))``.

    ``key_schedule`` (not ``schedule``, the learning-rate schedule) says which of them a step trains:
    ``"rotate"`` (default) one per step in turn (4, 8, 16, 4, ...); ``"joint"`` every one, with the
    mutual distillation loss (the paper's schedule); ``"random"`` one per step drawn with
    ``key_weights`` (default equal). One key per step trains on cross-entropy; ``teacher_every=k``
    adds ``distill_weight`` x KL to the highest key's output on the same clips, from a forward
    without gradients on the steps of every k-th round of ``len(frames)`` steps (the highest key's
    own steps stay CE only).

    ``epochs`` counts passes over the data. A one-key step costs about ``1/len(frames)`` of a joint
    step, so the default 30 epochs of "rotate" buy what 10 joint epochs do (docs/fine-tune.md has
    the measurements behind the default).
    """

    frames: tuple[int, ...] = ()  # (): the model's keys
    epochs: int = 30  # passes over the data; with "rotate" and 3 keys, the compute of 10 joint epochs
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
    key_schedule: str = "rotate"  # "rotate" or "random" (one frame count per step), "joint" (every one each step)
    key_weights: tuple[float, ...] = ()  # "random": one weight per frame count, in sorted order (): equal
    teacher_every: int = 0  # one key per step: a no-grad teacher forward every k-th round (0: cross-entropy only)
    detach_teacher: bool = True
    amp: str = "off"  # "off", "bf16" or "fp16" (CUDA)
    channels_last: bool = False  # conv weights in channels-last memory format (faster on GPUs)
    compile: bool = False
    num_workers: int = 0
    seed: int = 0
    checkpoint_every: int = 0  # batches; 0: at the end of each epoch only
    log_every: int = 10  # batches between read-backs of the running loss/accuracy (the only host syncs)
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
            ("key_schedule", self.key_schedule, KEY_SCHEDULES),
        ):
            if value not in allowed:
                raise ValueError(f"{name} must be one of {', '.join(allowed)}, got {value!r}")
        self._check_key_schedule()
        if any(isinstance(t, bool) or not isinstance(t, int) or t < 1 for t in self.frames):
            raise ValueError(f"frames must be positive integers, got {self.frames!r}")
        if self.epochs < 1 or self.batch_size < 1 or self.lr <= 0 or self.log_every < 1:
            raise ValueError("epochs, batch_size, lr and log_every must be positive")

    def _check_key_schedule(self) -> None:
        self.key_weights = tuple(float(w) for w in self.key_weights)
        if self.key_weights and self.key_schedule != "random":
            raise ValueError(f"key_weights weigh the draws of key_schedule='random', not {self.key_schedule!r}")
        if self.key_weights and (min(self.key_weights) < 0 or sum(self.key_weights) <= 0 or not all(map(math.isfinite, self.key_weights))):
            raise ValueError(f"key_weights must be non-negative, finite and not all zero, got {self.key_weights!r}")
        if self.key_weights and self.frames and len(self.key_weights) != len(self.frames):
            raise ValueError(f"key_weights has {len(self.key_weights)} entries for the frame counts {self.frames}: "
                             "give one per frame count")
        if isinstance(self.teacher_every, bool) or not isinstance(self.teacher_every, int) or self.teacher_every < 0:
            raise ValueError(f"teacher_every must be a non-negative integer (0: no teacher), got {self.teacher_every!r}")
        if self.teacher_every and self.key_schedule == "joint":
            raise ValueError("teacher_every is for one key per step (key_schedule 'rotate' or 'random'); "
                             "the joint schedule always distils from the highest key")
        if self.teacher_every and (self.loss_mode != "distill" or not self.detach_teacher):
            raise ValueError("teacher_every runs the teacher without gradients and distils from it; it needs loss_mode='distill' "
                             "and detach_teacher=True")


class Trainer:
    """Fine-tune ``model`` on a :class:`~fan_convert.data.MultiViewClips`-style dataset.

    Under torchrun every rank trains on its own GPU (``cuda`` is ``cuda:$LOCAL_RANK``) and runs
    every step, so no rank ever waits for another. ``frame_subsets=True`` declares that steps may
    train only some keys (``train_step(frames=...)``); DDP then tracks unused parameters (so it
    does for ``config.key_schedule`` "rotate" and "random", where every rank trains the same key).

    Example::

        trainer = Trainer(fan, train_data, TrainConfig(epochs=3, out_dir="runs/x"))   # trains every key of fan
        history = trainer.fit()

    The frame counts come from the model's plan unless ``config.frames`` names them; a dataset
    built without frame counts (``MultiViewClips(items, train=True)``) is given the same ones.
    """

    def __init__(self, model: nn.Module, dataset, config: TrainConfig, *, frame_subsets: bool = False):
        config = replace(config, frames=resolve_frames(config.frames, model_keys(model), "TrainConfig(frames=...)"))
        bind_frames(dataset, config.frames)
        self.config = config
        self.device = resolve_device(config.device)
        self.rank, self.world = distributed_context(self.device)
        torch.manual_seed(config.seed + self.rank)
        if self.device.type == "cuda":
            torch.cuda.manual_seed(config.seed + self.rank)
            torch.backends.cudnn.benchmark = True  # fixed clip shapes per frame count
        self.model = model.to(self.device)
        if config.channels_last:
            to_channels_last(self.model)
        self.dataset = dataset
        self.sampler = EpochSampler(len(dataset), shuffle=True, seed=config.seed, rank=self.rank, world=self.world)
        groups = param_groups(self.model, config.weight_decay)
        fused = self.device.type == "cuda"  # fused steps take the fp16 scaler's verdict without a host sync
        if config.optimizer == "sgd":
            self.optimizer = torch.optim.SGD(groups, lr=config.lr, momentum=0.9, nesterov=True, fused=fused or None)
            start_momentum(self.optimizer)
        else:
            self.optimizer = torch.optim.AdamW(groups, lr=config.lr, fused=fused or None)
        self.steps_per_epoch = max(1, math.ceil(len(self.sampler.order()) / config.batch_size))
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, lambda step: lr_factor(step, self.steps_per_epoch, config)
        )
        self.scaler = torch.amp.GradScaler("cuda", enabled=config.amp == "fp16" and self.device.type == "cuda")
        self.step, self.epoch, self.batch_in_epoch, self.skipped = 0, 0, 0, 0
        self.skipped_videos: list[str] = []  # one reason per skip, for skip_report()
        self.history: list[dict] = []
        self.epoch_hooks: list = []  # f(trainer) -> dict merged into each epoch's record (e.g. validation accuracy)
        self.keys = model_keys(model)
        self.key_schedule = KeySchedule(config.frames, config.key_schedule, seed=config.seed, weights=config.key_weights,
                                        teacher_every=config.teacher_every)
        one_key = config.key_schedule != "joint"
        self.track_unused = frame_subsets or one_key or not uses_every_key(config.frames, self.keys)
        self._last_batch = None
        views_model = MultiView(compile_per_frame_count(self.model) if config.compile else self.model)
        self.forward_model: nn.Module = views_model
        self._teacher_model = views_model  # the teacher's forward bypasses DDP: it has no backward
        self.ddp = dist.is_initialized()  # torchrun with 2+ processes, or a group the caller formed
        if self.ddp:
            ids = [self.device.index] if self.device.type == "cuda" else None
            self.forward_model = nn.parallel.DistributedDataParallel(
                views_model, device_ids=ids, find_unused_parameters=self.track_unused
            )

    @property
    def checkpoint_path(self) -> Path | None:
        return Path(self.config.out_dir) / "last.safetensors" if self.config.out_dir else None

    def _notice(self, text: str) -> None:
        if self.rank == 0:
            print(f"note: {text}", file=sys.stderr)

    def resume(self, path: str | Path) -> None:
        """Continue exactly where the checkpoint at ``path`` stopped (each rank's RNG included).
        The key schedule must be the one the checkpoint was trained with (ValueError otherwise)."""
        state = load_training_state(path)
        self._check_same_key_schedule(path, json.loads(state["config"]) if "config" in state else {})
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        start_momentum(self.optimizer)
        self.scheduler.load_state_dict(state["scheduler"])
        self._load_scaler(state.get("scaler") or {})
        self.step, self.epoch, self.skipped = state["step"], state["epoch"], state["skipped"]
        self.batch_in_epoch = state.get("batch_in_epoch", self.step - self.epoch * self.steps_per_epoch)
        self.history = json.loads(state["history"])
        self._rewrite_log()
        cpu_rng, exact = own_row(state["rng"], self.rank, self.world)
        torch.set_rng_state(cpu_rng)
        if self.device.type == "cuda" and "cuda_rng" in state:
            cuda_rng, cuda_exact = own_row(state["cuda_rng"], self.rank, self.world)
            torch.cuda.set_rng_state(cuda_rng, self.device)
            exact = exact and cuda_exact
        elif self.device.type == "cuda":
            exact = False
        if not exact:
            self._notice(f"'{path}' holds no random state for {self.world} {self.device.type} process(es); "
                         "random augmentation and dropout will not repeat the interrupted run exactly")

    def _check_same_key_schedule(self, path, saved: dict) -> None:
        """A run continues with the key schedule it started with: which keys later steps train
        depends on it, and the default changed from "joint" to "rotate" (checkpoints from before say "joint")."""
        if saved and "key_schedule" not in saved:  # written before key schedules existed: every key each step
            saved = {**saved, "key_schedule": "joint"}
        for name, flag in (("key_schedule", "--key-schedule"), ("key_weights", "--key-weights"), ("teacher_every", "--teacher-every")):
            if name not in saved:
                continue
            was, now = saved[name], getattr(self.config, name)
            if name == "key_weights":
                was, now = tuple(float(w) for w in was), tuple(now)
            if was != now:
                shown = ",".join(f"{w:g}" for w in was) if name == "key_weights" else was
                raise ValueError(f"'{path}' was trained with {name}={was!r} and this run has {name}={now!r}; resume with the "
                                 f"same schedule ({flag} {shown}, {name}={was!r}), or start over (--force)")

    def _load_scaler(self, saved: dict) -> None:
        if not self.scaler.is_enabled():
            return
        if not saved:
            self._notice("the checkpoint has no fp16 loss-scale state (saved without --amp fp16 on CUDA); "
                         "the scale starts again from its initial value")
            return
        try:
            self.scaler.load_state_dict(saved)
        except (KeyError, RuntimeError, TypeError, ValueError) as err:
            self._notice(f"the checkpoint's loss-scale state cannot be used ({err}); the scale starts again from its initial value")

    def save_checkpoint(self) -> None:
        """Write ``out_dir/last.safetensors`` (rank 0). Every rank must call it: each rank's
        random state is gathered into the file."""
        if self.checkpoint_path is None:
            return
        rng = gather_rows(torch.get_rng_state(), self.world, self.device)
        cuda_rng = gather_rows(torch.cuda.get_rng_state(self.device), self.world, self.device) if self.device.type == "cuda" else None
        if self.rank != 0:
            return
        self.checkpoint_path.parent.mkdir(parents=True, exist_ok=True)
        save_training_state(self.checkpoint_path, {
            "model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(), "scaler": self.scaler.state_dict(),
            "step": self.step, "epoch": self.epoch, "batch_in_epoch": self.batch_in_epoch, "skipped": self.skipped,
            "history": json.dumps(self.history), "rng": rng, **({"cuda_rng": cuda_rng} if cuda_rng is not None else {}),
            "config": json.dumps(asdict(self.config)),
        })

    def _rewrite_log(self) -> None:
        """``out_dir/log.jsonl`` as the checkpoint's history (rank 0): an epoch logged after the
        checkpoint, by a run killed before its next checkpoint, is trained again and must not
        appear twice."""
        if self.rank == 0 and self.config.out_dir:
            lines = "".join(json.dumps(record) + "\n" for record in self.history)
            Path(self.config.out_dir).mkdir(parents=True, exist_ok=True)
            atomic_write(Path(self.config.out_dir) / "log.jsonl", lambda temp: Path(temp).write_text(lines), overwrite=True)

    def _log(self, record: dict) -> None:
        self.history.append(record)
        if self.rank == 0 and self.config.out_dir:
            Path(self.config.out_dir).mkdir(parents=True, exist_ok=True)
            with open(Path(self.config.out_dir) / "log.jsonl", "a") as f:
                f.write(json.dumps(record) + "\n")

    def _loader(self) -> DataLoader:
        self.sampler.epoch = self.epoch
        self.sampler.start = self.batch_in_epoch * self.config.batch_size  # batches, not successful steps
        if hasattr(self.dataset, "set_epoch"):
            self.dataset.set_epoch(self.epoch)
        # its own generator: creating the loader mid-epoch after a resume must not draw from the global RNG
        seeds = torch.Generator().manual_seed((self.config.seed * 1000 + self.epoch) * 1000 + self.rank)
        if self.config.key_schedule != "joint":  # each batch reads only its step's views
            batches = PlannedBatches(self.sampler, self.config.batch_size, lambda batch: self.key_schedule(batch).views,
                                     first=self.batches_done)
            return DataLoader(SomeViews(self.dataset), batch_sampler=batches, num_workers=self.config.num_workers,
                              collate_fn=collate_views, pin_memory=self.device.type == "cuda", generator=seeds)
        return DataLoader(self.dataset, batch_size=self.config.batch_size, sampler=self.sampler,
                          num_workers=self.config.num_workers, collate_fn=collate_views,
                          pin_memory=self.device.type == "cuda", generator=seeds)

    def _stand_in(self, frames: tuple[int, ...]) -> tuple[dict, torch.Tensor]:
        """A decodable batch for a rank whose own batch came out empty: the last one it trained on
        if it has the views of ``frames``, else the first sample of the dataset that decodes."""
        if self._last_batch is None or not set(frames) <= set(self._last_batch[0]):
            for index in range(len(self.dataset)):
                sample = self.dataset[index]
                if sample is not None and not isinstance(sample, Skipped):
                    self._last_batch = collate_views([sample])[:2]
                    break
            else:
                raise ValueError("no sample of the training data can be decoded; check the data")
        return self._last_batch

    def _sample_weight(self, clips: int) -> torch.Tensor | float:
        """world · clips / (clips on all ranks): DDP's gradient average then weighs every clip
        alike, and a rank with an empty batch contributes nothing."""
        if self.world == 1:
            return 1.0
        local = torch.full((), float(clips), device=self.device)
        total = local.clone()
        dist.all_reduce(total)
        return local * self.world / total.clamp_min(1.0)

    def train_step(self, views: dict[int, torch.Tensor], labels: torch.Tensor,
                   frames: tuple[int, ...] | None = None, teacher: int | None = None) -> dict[str, torch.Tensor]:
        """One optimisation step on the views of ``frames`` (default: every configured frame count).
        ``teacher``: with one frame count, the frame count whose view, run without gradients,
        teaches it (``views`` then holds that view too): cross-entropy + λ·KL instead of cross-entropy.

        Returns the loss parts and accuracies as tensors on the device (empty for an empty batch);
        nothing in here waits for the GPU. Under DDP every rank must call it for every batch,
        an empty one included (it then trains on a stand-in batch with weight 0).
        """
        config = self.config
        frames = tuple(sorted(config.frames if frames is None else frames))
        if teacher is not None and (len(frames) != 1 or teacher in frames):
            raise ValueError(f"a teacher ({teacher} frames) teaches a step that trains one other frame count, not {frames}")
        if self.ddp and not self.track_unused and not uses_every_key(frames, self.keys):
            raise ValueError(f"frames {frames} leave some of the model's keys {self.keys} without a gradient; "
                             "create the Trainer with frame_subsets=True so that DDP expects that")
        empty = labels.numel() == 0
        if empty and self.world == 1:
            return {}
        read = frames if teacher is None else (*frames, teacher)
        if empty:
            views, labels = self._stand_in(read)
        else:
            self._last_batch = (views, labels)
        weight = self._sample_weight(0 if empty else labels.shape[0])
        self.model.train()
        views = {t: views[t].to(self.device, non_blocking=True) for t in read}
        labels = labels.to(self.device, non_blocking=True)
        saved_buffers = [b.detach().clone() for b in self.model.buffers()] if empty else None
        amp_dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(config.amp)
        with torch.autocast(self.device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
            taught = None if teacher is None else self._teacher_logits(teacher, views.pop(teacher))
            logits = self.forward_model(views)
            if taught is None:
                loss, parts = mutual_distillation_loss(
                    {t: v.float() for t, v in logits.items()}, labels, weight=config.distill_weight,
                    detach_teacher=config.detach_teacher, mode=config.loss_mode,
                )
            else:
                (t,) = frames
                loss, parts = taught_loss(logits[t].float(), t, labels, taught.float(), teacher, weight=config.distill_weight)
        if saved_buffers is not None:  # the stand-in batch must not move the norm statistics
            with torch.no_grad():
                for buffer, saved in zip(self.model.buffers(), saved_buffers, strict=True):
                    buffer.copy_(saved)
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss * weight).backward()
        if config.clip_grad:
            self.scaler.unscale_(self.optimizer)
            nn.utils.clip_grad_norm_(self.model.parameters(), config.clip_grad)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.scheduler.step()
        self.step += 1
        if empty:
            return {}
        parts["loss"] = loss.detach()
        for t, out in logits.items():
            parts[f"acc@{t}"] = (out.detach().argmax(-1) == labels).float().mean()
        return parts

    def _teacher_logits(self, t: int, clips: torch.Tensor) -> torch.Tensor:
        """The model's output at ``t`` frames without gradients, in training mode (batch
        statistics, as the joint schedule's teacher) and leaving every buffer as it was."""
        saved = [b.detach().clone() for b in self.model.buffers()]
        with torch.no_grad():
            logits = self._teacher_model({t: clips})[t]
            for buffer, value in zip(self.model.buffers(), saved, strict=True):
                buffer.copy_(value)
        return logits

    def fit(self) -> list[dict]:
        """Train to ``config.epochs``; returns one record per epoch (also in ``out_dir/log.jsonl``)."""
        config = self.config
        with EpochProgress(enabled=config.progress and self.rank == 0) as progress:
            while self.epoch < config.epochs:
                loader = self._loader()
                progress.start(f"epoch {self.epoch + 1}/{config.epochs}", total=len(loader))
                means = RunningMeans()
                clips, started = 0, time.perf_counter()
                for views, labels, skipped in loader:
                    self.skipped += skipped
                    self.skipped_videos += skipped.reasons
                    plan = self.key_schedule(self.batches_done)  # the views the loader read for this batch
                    means.add(self.train_step(views, labels) if config.key_schedule == "joint"
                              else self.train_step(views, labels, frames=plan.frames, teacher=plan.teacher))
                    self.batch_in_epoch += 1
                    clips += labels.numel()
                    stats = partial(_stats, means, clips, started)  # a read-back: every log_every steps, or when a line is due
                    progress.advance(stats() if means.unread >= config.log_every else None, fresh=stats)
                    # not after the epoch's last batch: the epoch-end checkpoint follows, and a resume from there
                    # would start an empty epoch and log it a second time
                    if config.checkpoint_every and self.batches_done % config.checkpoint_every == 0 \
                            and self.batch_in_epoch < self.steps_per_epoch:
                        self.save_checkpoint()
                progress.finish(f"{means.summary()}, {clips / (time.perf_counter() - started):.1f} clips/s")
                self.epoch += 1
                self.batch_in_epoch = 0
                record = {"epoch": self.epoch, "step": self.step, "lr": self.scheduler.get_last_lr()[0],
                          "seconds": round(time.perf_counter() - started, 2), "skipped": self.skipped, **means.read()}
                for hook in self.epoch_hooks:
                    record.update(hook(self))
                self._log(record)
                self.save_checkpoint()
        return self.history

    @property
    def batches_done(self) -> int:
        return self.epoch * self.steps_per_epoch + self.batch_in_epoch


def _stats(means: RunningMeans, clips: int, started: float) -> str:
    return f"{means.summary()}, {clips / (time.perf_counter() - started):.1f} clips/s"


def compile_per_frame_count(model: nn.Module, backend: str = "inductor") -> nn.Module:
    """``torch.compile`` with static shapes: one graph per frame count (and batch size), each
    specialised to its T. Warns on a torch that cannot trace the frame context in one graph.

    Example::

        compiled = compile_per_frame_count(fan)   # compiles on the first call at each T
    """
    version = tuple(int(part) for part in torch.__version__.split("+")[0].split(".")[:2])
    if version < COMPILE_CLEAN_TORCH:
        warnings.warn(
            f"torch {torch.__version__} cannot compile the frame context without graph breaks (needs torch >= "
            f"{'.'.join(map(str, COMPILE_CLEAN_TORCH))}); --compile will run in many small graphs, possibly slower than without it",
            stacklevel=2,
        )
    return torch.compile(model, dynamic=False, backend=backend)
