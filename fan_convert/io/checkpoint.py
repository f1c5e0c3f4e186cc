"""Reading the checkpoints people actually have, safely, and loading them strictly.

Accepted: ``.safetensors``; ``.pt/.pth/.pth.tar/.ckpt`` read with ``torch.load(weights_only=True)``;
state dicts nested the way training scripts save them (``state_dict``, ``model``,
``model_state``, ...) and prefixed by DataParallel/DDP (``module.``) or ``torch.compile``
(``_orig_mod.``). A pickled whole ``nn.Module`` runs code from the file when loaded, so it is
read only when the caller says it trusts the file.
"""

from __future__ import annotations

import os
import pickle
import re
import warnings
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from ..errors import CheckpointError, first_line

_NESTED_KEYS = ("state_dict", "model_state", "model_state_dict", "model", "module", "net", "network", "weights", "params")
_WRAPPER_PREFIXES = ("module.", "_orig_mod.")


@dataclass
class Checkpoint:
    """Tensors by name, and what was done to find them."""

    tensors: dict[str, torch.Tensor]
    notes: list[str] = field(default_factory=list)
    arch: dict | None = None  # the architecture the checkpoint names itself (a save_pretrained folder's config)
    model: nn.Module | None = None  # that architecture, built and loaded while reading (a save_pretrained folder)


def read_checkpoint(path: str | os.PathLike, *, trust_pickle: bool = False) -> Checkpoint:
    """Read the state dict in ``path``, unwrapping nesting and wrapper prefixes.

    Example::

        ckpt = read_checkpoint("slow_r50.pyth")     # {"model_state": {...}} -> tensors
        print(ckpt.notes)                            # ["unwrapped 'model_state'"]
    """
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"checkpoint '{path}' does not exist; check the path")
    if path.is_dir():
        from ..integrations.transformers.pretrained_folder import is_pretrained_folder, read_pretrained_folder

        if is_pretrained_folder(path):  # transformers save_pretrained: config.json + weights
            model, notes = read_pretrained_folder(path)
            return Checkpoint({k: v.detach() for k, v in model.state_dict().items()}, notes, model.fan_arch, model)
        raise CheckpointError(
            f"checkpoint '{path}' is a directory without a config.json; give the checkpoint file inside it "
            "(or a transformers save_pretrained folder)")
    if path.stat().st_size == 0:
        raise CheckpointError(f"checkpoint '{path}' is empty; the download or copy did not finish")
    if path.suffix == ".safetensors":
        return Checkpoint(_read_safetensors(path))
    notes: list[str] = []
    obj = _torch_load(path, trust_pickle, notes)
    return Checkpoint(_unwrap(obj, notes), notes)


def _read_safetensors(path: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    try:
        return load_file(str(path))
    except Exception as err:
        raise CheckpointError(f"cannot read '{path}' as safetensors ({first_line(err)}); the file may be truncated or corrupt") from None


def _torch_load(path: Path, trust_pickle: bool, notes: list[str]):
    try:
        with warnings.catch_warnings():  # torch's own advice (weights_only=False) must not reach the user
            warnings.simplefilter("ignore")
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        blocked = _blocked_by_safe_loader(path, str(err))
        if blocked is None:  # not a pickle at all: garbage or a damaged file
            raise CheckpointError(f"cannot read '{path}' ({_reason(err)}); the file may be truncated or not a PyTorch checkpoint") from None
        if not trust_pickle:
            raise CheckpointError(
                f"'{path}' {blocked}; loading it runs code from the file — "
                "pass --trust-pickle (trust_pickle=True) only if you trust its source"
            ) from None
    except Exception as err:  # a damaged file fails in many ways (zip, unicode, key errors)
        raise CheckpointError(f"cannot read '{path}' ({_reason(err)}); the file may be truncated or not a PyTorch checkpoint") from None
    notes.append("loaded trusted pickle")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return torch.load(path, map_location="cpu", weights_only=False)
    except Exception as err:
        raise CheckpointError(f"cannot unpickle '{path}' ({first_line(err)}); it needs the code that saved it to be importable") from None


def _blocked_by_safe_loader(path: Path, message: str) -> str | None:
    """Why the weights-only loader refused a pickle, or None when the file is no pickle."""
    if "Unsupported global" in message:
        return "contains pickled Python objects (such as a whole nn.Module)"
    with open(path, "rb") as f:
        head = f.read(2)
    if zipfile.is_zipfile(path) or (head[:1] == b"\x80" and head[1:2] in b"\x02\x03\x04\x05"):
        return "is a pickle that holds more than tensors (not a plain state dict)"
    return None


def _reason(err: BaseException) -> str:
    """torch's reason, without its advice to turn the weights-only protection off."""
    text = str(err)
    if "WeightsUnpickler error:" in text:
        return first_line(Exception(text.split("WeightsUnpickler error:", 1)[1]))
    if "weights_only" in text:
        return type(err).__name__
    return first_line(err)


def _unwrap(obj, notes: list[str]) -> dict[str, torch.Tensor]:
    if isinstance(obj, nn.Module):
        notes.append(f"took the state dict of a pickled {type(obj).__name__}")
        obj = obj.state_dict()
    while isinstance(obj, dict) and not _is_tensor_dict(obj):
        inner = next((k for k in _NESTED_KEYS if isinstance(obj.get(k), (dict, nn.Module))), None)
        if inner is None:
            break
        notes.append(f"unwrapped '{inner}'")
        obj = obj[inner].state_dict() if isinstance(obj[inner], nn.Module) else obj[inner]
    if not isinstance(obj, dict):
        raise CheckpointError(f"checkpoint holds a {type(obj).__name__}, not a state dict; save model.state_dict()")
    tensors = {k: v for k, v in obj.items() if isinstance(k, str) and isinstance(v, torch.Tensor)}
    if not tensors:
        keys = ", ".join(repr(k) for k in list(obj)[:5])
        raise CheckpointError(f"checkpoint has no tensors (top-level keys: {keys}); save model.state_dict()")
    if len(tensors) < len(obj):
        notes.append(f"ignored {len(obj) - len(tensors)} non-tensor entries")
    for prefix in _WRAPPER_PREFIXES:
        if all(k.startswith(prefix) for k in tensors):
            tensors = {k[len(prefix):]: v for k, v in tensors.items()}
            notes.append(f"stripped prefix '{prefix}'")
    return tensors


def _is_tensor_dict(obj: dict) -> bool:
    values = list(obj.values())
    return bool(values) and sum(isinstance(v, torch.Tensor) for v in values) >= len(values) / 2


def align_keys(tensors: dict[str, torch.Tensor], model_keys: list[str]) -> tuple[dict[str, torch.Tensor], list[str]]:
    """Rename checkpoint keys when they differ from the model's by a leading prefix
    (``base_model.`` vs ``backbone.``, a bare backbone vs a video wrapper). Returns the renamed
    tensors and a note, or the input unchanged when the names already match best."""
    def first_parts(keys) -> set[str]:
        return {""} | {k.split(".", 1)[0] + "." for k in keys if "." in k}

    wanted = set(model_keys)
    best, best_hits = ("", ""), len(wanted & set(tensors))
    for old in first_parts(tensors):
        for new in first_parts(model_keys):
            renamed = {new + k[len(old):] for k in tensors if k.startswith(old)}
            hits = len(wanted & renamed)
            if hits > best_hits:
                best, best_hits = (old, new), hits
    old, new = best
    if best == ("", ""):
        return tensors, []
    renamed = {(new + k[len(old):] if k.startswith(old) else k): v for k, v in tensors.items()}
    return renamed, [f"renamed prefix '{old or '<none>'}' -> '{new or '<none>'}'"]


def _suffixes(key: str) -> list[str]:
    """``key`` and the names it has without its leading components: ``backbone.fc.weight``,
    ``fc.weight``, ``weight`` (a video wrapper's checkpoint names its backbone's keys bare)."""
    parts = key.split(".")
    return [".".join(parts[i:]) for i in range(len(parts))]


def _matches(key: str, pattern: str) -> bool:
    """A pattern matches a key when it is the key, a prefix of it ending at a ``.``, or a regex
    that full-matches it; leading components may be left out (``fc``, ``classifier.1``,
    ``classifier.*`` and ``classifier.1.weight`` all match ``backbone.classifier.1.weight``)."""
    for name in _suffixes(key):
        if name == pattern or name.startswith(pattern + "."):
            return True
        try:
            if re.fullmatch(pattern, name):
                return True
        except re.error:
            continue
    return False


def _matches_any(key: str, patterns) -> bool:
    return any(_matches(key, p) for p in patterns)


def nearest_names(pattern: str, keys, n: int = 3) -> list[str]:
    """The module names and keys that look most like ``pattern`` (for a pattern that matches nothing)."""
    import difflib

    names = dict.fromkeys(name for key in keys for full in (key, key.rpartition(".")[0]) if full
                          for name in _suffixes(full)[:2])
    return difflib.get_close_matches(pattern, list(names), n=n, cutoff=0.3)


def check_patterns(patterns, keys, flag: str, whose: str) -> None:
    """Every pattern must match at least one of ``keys``; one that matches none is an error
    naming the nearest module names and keys."""
    keys = list(keys)
    for pattern in patterns:
        if not any(_matches(key, pattern) for key in keys):
            near = nearest_names(pattern, keys)
            hint = f"nearest: {', '.join(repr(n) for n in near)}" if near else f"e.g. {keys[0]!r}" if keys else "there are none"
            raise CheckpointError(f"{flag} pattern {pattern!r} matches no {whose} key ({hint}); a pattern is a key, "
                                  "a key prefix or a full-match regex, leading components may be left out")


def load_into(
    model: nn.Module,
    tensors: dict[str, torch.Tensor],
    *,
    allow_missing: tuple[str, ...] = (),
    allow_unexpected: tuple[str, ...] = (),
    new_head: tuple[str, ...] = (),
) -> list[str]:
    """Load ``tensors`` into ``model`` strictly: every model tensor must be present with its
    shape and every checkpoint tensor must be used, except keys matched by ``allow_missing``
    (the model keeps its own value; also covers shape mismatches, e.g. a new head) or
    ``allow_unexpected`` (ignored). Patterns: a key, a key prefix, or a regex full-match, with
    leading components optional (``fc`` matches ``backbone.fc.weight``); a pattern that matches
    no key is an error. ``new_head``: exact model keys (the classifier, see
    :func:`fan_convert.zoo.find_head`) that keep their fresh values when the checkpoint's
    shapes differ. Returns notes on what the escape hatches let through.

    Example::

        ckpt = read_checkpoint("slow_r50.pyth")
        notes = load_into(model, ckpt.tensors, allow_missing=("blocks.5.proj",))   # keep the new head
    """
    remap = getattr(model, "checkpoint_keys", None)  # a video wrapper knows its backbone's bare keys
    tensors, notes = remap(tensors) if callable(remap) else (tensors, [])
    tensors, aligned = align_keys(tensors, list(model.state_dict()))
    notes += aligned
    own = model.state_dict()
    check_patterns(allow_missing, own, "--allow-missing (allow_missing=)", "model")
    check_patterns(allow_unexpected, tensors, "--allow-unexpected (allow_unexpected=)", "checkpoint")
    missing = [k for k in own if k not in tensors]
    unexpected = [k for k in tensors if k not in own]
    mismatched = [k for k in own if k in tensors and tensors[k].shape != own[k].shape]
    replaced = [k for k in new_head if k in mismatched or k in missing]
    if replaced:
        missing = [k for k in missing if k not in replaced]
        mismatched = [k for k in mismatched if k not in replaced]
    problems = []
    for label, keys, allowed in (
        ("missing", missing, allow_missing),
        ("shape-mismatched", mismatched, allow_missing),
        ("unexpected", unexpected, allow_unexpected),
    ):
        blocked = [k for k in keys if not _matches_any(k, allowed)]
        if blocked:
            shown = ", ".join(_describe(k, tensors, own) for k in blocked[:4])
            more = f" and {len(blocked) - 4} more" if len(blocked) > 4 else ""
            problems.append(f"{len(blocked)} {label} key(s): {shown}{more}")
        if len(keys) > len(blocked):
            notes.append(f"allowed {len(keys) - len(blocked)} {label} key(s)")
    if problems:
        hatch = "--allow-missing/--allow-unexpected PATTERN (allow_missing=/allow_unexpected=)"
        raise CheckpointError(f"checkpoint does not fit the architecture: {'; '.join(problems)}; check --arch or use {hatch}")
    if replaced:
        notes.append(f"new head: {', '.join(replaced)} keep their fresh initialisation")
    usable = {k: v for k, v in tensors.items() if k in own and k not in mismatched and k not in replaced}
    model.load_state_dict(usable, strict=False)
    return notes


def _describe(key: str, tensors, own) -> str:
    if key in tensors and key in own:
        return f"'{key}' {tuple(tensors[key].shape)} vs model {tuple(own[key].shape)}"
    return f"'{key}'"

