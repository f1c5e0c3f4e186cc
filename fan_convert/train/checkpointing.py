"""Training checkpoints: model + optimizer + scheduler + progress in one safetensors file.

Tensors (weights, optimizer moments, RNG state) go into the safetensors body; everything else
(step counters, optimizer hyper-parameters, scheduler state) into JSON metadata. Written
atomically, so a run killed mid-write keeps its previous checkpoint.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from ..io.atomic import atomic_write

_KEY = "fan_convert_training"


def _split(obj: Any, prefix: str, tensors: dict[str, torch.Tensor]) -> Any:
    """Replace tensors inside nested containers by references stored in ``tensors``."""
    if isinstance(obj, torch.Tensor):
        name = f"{prefix}"
        tensors[name] = obj.detach().cpu().contiguous()
        return {"__tensor__": name}
    if isinstance(obj, dict):
        pairs = enumerate(obj.items())
        return {"__dict__": [[_split(k, f"{prefix}.k{i}", tensors), _split(v, f"{prefix}.{i}", tensors)] for i, (k, v) in pairs]}
    if isinstance(obj, (list, tuple)):
        return {"__list__": [_split(v, f"{prefix}.{i}", tensors) for i, v in enumerate(obj)], "tuple": isinstance(obj, tuple)}
    return obj


def _join(obj: Any, tensors: dict[str, torch.Tensor]) -> Any:
    if isinstance(obj, dict):
        if "__tensor__" in obj:
            return tensors[obj["__tensor__"]]
        if "__dict__" in obj:
            return {_join(k, tensors): _join(v, tensors) for k, v in obj["__dict__"]}
        if "__list__" in obj:
            items = [_join(v, tensors) for v in obj["__list__"]]
            return tuple(items) if obj.get("tuple") else items
    return obj


def save_training_state(path: str | Path, state: dict[str, Any]) -> Path:
    """Write ``state`` (model/optimizer/scheduler state dicts, counters, RNG) atomically.

    Example::

        save_training_state("runs/r3d/last.safetensors", {"model": fan.state_dict(), "optimizer": optimizer.state_dict(), "step": step})
    """
    tensors: dict[str, torch.Tensor] = {}
    skeleton = _split(state, "s", tensors)
    metadata = {_KEY: json.dumps(skeleton)}
    return atomic_write(path, lambda temp: save_file(tensors, temp, metadata=metadata), overwrite=True)


def load_training_state(path: str | Path) -> dict[str, Any]:
    """Read back what :func:`save_training_state` wrote: the same nested dicts, lists and tuples,
    with the tensors on the CPU. Raises ValueError for a safetensors file that is not a training checkpoint.

    Example::

        state = load_training_state("runs/r3d/last.safetensors")
        fan.load_state_dict(state["model"])
    """
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        metadata = f.metadata() or {}
    if _KEY not in metadata:
        raise ValueError(f"'{path}' is not a fan-convert training checkpoint; pass the run's last.safetensors to Trainer.resume (--resume)")
    return _join(json.loads(metadata[_KEY]), load_file(str(path)))
