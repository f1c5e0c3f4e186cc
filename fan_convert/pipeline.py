"""From a checkpoint file to a Frame Adaptive Network in one call: read -> build -> strict load
-> eval -> adapt. The command line, the trainer's CLI and the examples all go through here.

    fan = fan_convert.from_checkpoint("r3d18.pth", "torchvision:r3d_18", frames=(4, 8, 16))
    fan.fan_source["notes"]           # what reading and loading did, e.g. ["stripped prefix 'module.'"]
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Any, Sequence

from torch import nn

from .context import check_frames
from .io import CheckpointError, load_into, read_checkpoint
from .surgery import adapt
from .zoo import Head, build, find_head


def load_pretrained(
    path: str | os.PathLike,
    arch: str | None = None,
    *,
    arch_kwargs: dict[str, Any] | None = None,
    allow_missing: Sequence[str] = (),
    allow_unexpected: Sequence[str] = (),
    trust_pickle: bool = False,
    new_head: bool = False,
) -> nn.Module:
    """The plain architecture ``arch`` with the weights in ``path``, strictly loaded, in eval mode:
    the one way from a checkpoint to a model (:func:`from_checkpoint` and the CLI use it). A
    transformers ``save_pretrained`` folder names its own architecture (``arch=None``).

    ``model.fan_source`` records the file name and notes on what was unwrapped, renamed or
    allowed through (see :func:`fan_convert.io.read_checkpoint` and :func:`fan_convert.io.load_into`).
    ``new_head=True``: the classifier (the parameters whose shape depends on ``num_classes``,
    :func:`fan_convert.zoo.find_head`) keeps its fresh initialisation when the checkpoint's
    has another number of classes, with no pattern to write. ``model.fan_head`` records the
    classifier's keys and size.

    Example::

        model = load_pretrained("r3d18.pth", "torchvision:r3d_18", arch_kwargs={"num_classes": 174},
                                new_head=True)   # a new 174-class head keeps its random init
    """
    if arch is None and not Path(path).is_dir():  # a save_pretrained folder names its architecture in config.json
        raise ValueError("arch (--arch) is required: name the checkpoint's architecture, e.g. arch='timm:resnet50' "
                         "(--arch timm:resnet50) with arch_kwargs={'temporal': 'tsm'} (--temporal tsm)")
    checkpoint = read_checkpoint(path, trust_pickle=trust_pickle)  # a folder's arch is read, or it is refused
    arch_kwargs = dict(arch_kwargs or {})
    if arch is None:
        arch, arch_kwargs = checkpoint.arch["spec"], {**checkpoint.arch["kwargs"], **arch_kwargs}
    if checkpoint.model is not None and checkpoint.arch == {"spec": arch, "kwargs": arch_kwargs}:
        model, notes = checkpoint.model, list(checkpoint.notes)  # a folder's model, built once while reading it
    else:
        with warnings.catch_warnings():  # some zoo factories warn about deprecated torch APIs
            warnings.simplefilter("ignore", FutureWarning)
            model = build(arch, **arch_kwargs)
        head = find_head(arch, **arch_kwargs)
        try:
            notes = checkpoint.notes + load_into(model, checkpoint.tensors, allow_missing=tuple(allow_missing),
                                                 allow_unexpected=tuple(allow_unexpected),
                                                 new_head=head.keys if head is not None and new_head else ())
        except CheckpointError as err:
            raise CheckpointError(str(err) + _head_hint(head, model, str(err))) from None
        if head is not None:
            model.fan_head = {"keys": list(head.keys), "classes": head.classes(model.state_dict())}
            notes = [_head_note(head, model, checkpoint.tensors) if n.startswith("new head:") else n for n in notes]
    model.fan_source = {"checkpoint": Path(path).name, "notes": notes}
    return model.eval()


def _head_hint(head: Head | None, model: nn.Module, message: str) -> str:
    """For a checkpoint that does not fit: name the classifier when it is among the keys at fault."""
    if head is None or not any(f"'{key}'" in message for key in head.keys):
        return ""
    n = head.classes(model.state_dict())
    return (f"; the classifier is {', '.join(head.modules)} ({n} classes here): --num-classes N gives a new N-class head "
            "(arch_kwargs={'num_classes': N}, new_head=True), or --num-classes the checkpoint's count keeps it")


def _head_note(head: Head, model: nn.Module, tensors: dict) -> str:
    parts = head.keys[0].split(".")
    found = next((tensors[name] for name in (".".join(parts[i:]) for i in range(len(parts))) if name in tensors), None)
    old = head.classes({head.keys[0]: found}) if found is not None else None
    was = f" (the checkpoint's has {old} classes)" if old is not None else ""
    n = head.classes(model.state_dict())
    return f"new {n}-class head: {', '.join(head.modules)} starts from random weights{was}; the rest is the checkpoint's"


def from_checkpoint(
    path: str | os.PathLike,
    arch: str | None,
    frames: Sequence[int] = (4, 8, 16),
    *,
    arch_kwargs: dict[str, Any] | None = None,
    allow_missing: Sequence[str] = (),
    allow_unexpected: Sequence[str] = (),
    trust_pickle: bool = False,
    new_head: bool = False,
    **adapt_options: Any,
) -> nn.Module:
    """Convert the checkpoint in ``path`` into a FAN: :func:`load_pretrained`, then
    :func:`fan_convert.adapt` on the loaded model (in eval mode, so its norm statistics are the
    checkpoint's).

    Args:
        path: ``.safetensors``, or a ``.pt/.pth/.pth.tar/.ckpt`` state dict (read weights-only).
        arch: the architecture spec, e.g. ``"torchvision:r3d_18"`` or ``"timm:resnet50"``.
        frames: the frame counts to specialise for.
        arch_kwargs: arguments for the architecture (``num_classes``, ``temporal``, ...).
        allow_missing / allow_unexpected: key patterns the strict load may let through (a new
            head; checkpoint keys to ignore).
        trust_pickle: read a pickled whole ``nn.Module`` (runs code from the file).
        new_head: a classifier of another size than the checkpoint's keeps its fresh
            initialisation (``arch_kwargs={"num_classes": N}``; no pattern needed).
        adapt_options: passed to :func:`fan_convert.adapt` (``targets``, ``exclude``,
            ``kernel_size``, ``trained_at``, ``example_input``, ...).

    Returns:
        The FAN, in eval mode: ``fan.fan_plan`` is its conversion plan and ``fan.fan_source``
        the file name and the load notes; :func:`fan_convert.save` writes both to the manifest.

    Example::

        fan = fan_convert.from_checkpoint("x3d_xs.pyth", "pytorchvideo:x3d_xs", frames=(4, 8, 16), trained_at=4)
        print(fan.fan_source["notes"])    # ["unwrapped 'model_state'", "stripped prefix 'module.'"]
        fan_convert.save(fan, "x3d_xs.fan.safetensors")
    """
    keys = check_frames(frames)  # a bad frame list fails before the checkpoint is read
    model = load_pretrained(path, arch, arch_kwargs=arch_kwargs, allow_missing=allow_missing,
                            allow_unexpected=allow_unexpected, trust_pickle=trust_pickle, new_head=new_head)
    fan = adapt(model, keys, inplace=True, **adapt_options)
    return fan.eval()
