"""Mutual Distillation (FAN paper, eq. 9): the highest frame count teaches the others.

    loss = CE(p^H, y) + λ · Σ_{k < H} KL(p^H ‖ p^k)

with the teacher ``p^H`` detached, KL averaged over the batch (``batchmean``) and λ = 1.
"""

from __future__ import annotations

from typing import Mapping

import torch
import torch.nn.functional as F

MODES = ("distill", "ce")


def _cross_entropy(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    if target.dtype.is_floating_point:  # soft labels (mixup/cutmix): soft-target cross-entropy
        return torch.sum(-target * F.log_softmax(logits, dim=-1), dim=-1).mean()
    return F.cross_entropy(logits, target)


def mutual_distillation_loss(
    logits: Mapping[int, torch.Tensor],
    target: torch.Tensor,
    *,
    weight: float = 1.0,
    detach_teacher: bool = True,
    mode: str = "distill",
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """The FAN training loss over the logits of each frame count (``{4: l4, 8: l8, 16: l16}``).

    ``mode="ce"`` trains every branch on the labels instead (the paper's ablation), and
    ``detach_teacher=False`` lets the distillation gradient reach the teacher (another ablation).
    Returns the loss and its parts (``ce@16``, ``kl@4``, ...) as detached tensors on the logits'
    device, so that logging reads them back when it needs them rather than stalling every step.

    Example::

        logits = {t: model(views[t]) for t in (4, 8, 16)}
        loss, parts = mutual_distillation_loss(logits, labels)
    """
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    if not logits:
        raise ValueError("no logits: give one entry per frame count")
    high = max(logits)
    teacher = logits[high]
    loss = _cross_entropy(teacher, target)
    parts = {f"ce@{high}": loss.detach()}
    soft_teacher = F.softmax(teacher.detach() if detach_teacher else teacher, dim=-1)
    for t in sorted(k for k in logits if k != high):
        if mode == "ce":
            term = _cross_entropy(logits[t], target)
            parts[f"ce@{t}"] = term.detach()
        else:
            term = F.kl_div(F.log_softmax(logits[t], dim=-1), soft_teacher, reduction="batchmean")
            parts[f"kl@{t}"] = term.detach()
        loss = loss + weight * term
    return loss, parts


def taught_loss(
    logits: torch.Tensor, t: int, target: torch.Tensor, teacher: torch.Tensor, high: int, *, weight: float = 1.0
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """The loss of a step that trains one frame count ``t`` with a teacher: ``CE(p^t, y) +
    weight · KL(p^high ‖ p^t)``, the teacher's logits (from ``high`` frames) taken as constants.
    Returns the loss and its parts (``ce@4``, ``kl@4``) as detached tensors.

    Example::

        with torch.no_grad():
            teacher = model(views[16])
        loss, parts = taught_loss(model(views[4]), 4, labels, teacher, 16)
    """
    if t >= high:
        raise ValueError(f"the teacher ({high} frames) must see more frames than the student ({t})")
    ce = _cross_entropy(logits, target)
    kl = F.kl_div(F.log_softmax(logits, dim=-1), F.softmax(teacher.detach(), dim=-1), reduction="batchmean")
    return ce + weight * kl, {f"ce@{t}": ce.detach(), f"kl@{t}": kl.detach()}
