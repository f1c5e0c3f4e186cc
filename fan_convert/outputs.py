"""What a model's forward returns, read the same way everywhere (training, evaluation, checks)."""

from __future__ import annotations

from typing import Any

__all__ = ["logits_of"]


def logits_of(output: Any) -> Any:
    """A model's logits: the output itself, or its ``.logits`` (a transformers ``ModelOutput``)."""
    return getattr(output, "logits", output)
