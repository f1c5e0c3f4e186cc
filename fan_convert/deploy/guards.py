"""Which layer fixed the frame count: the shape guards torch.export adds while it traces, each with
the module that was running and the first line outside torch that asked for it.

A model that cannot take a symbolic frame count fails torch.export with a constraint violation
that names only a size expression. Recording the guards as they are added (torch logs each one)
names the layer instead:

    with GuardLog(model) as log:
        torch.export.export(model, ...)          # fails
    log.culprit()   # Guard(module='features.1.0.attn', kind='ShiftedWindowAttention3d', where='.../swin_transformer.py:36 ...')
"""

from __future__ import annotations

import logging
import os
import sys
from dataclasses import dataclass

import torch
from torch import nn

__all__ = ["Guard", "GuardLog"]

_TORCH_DIR = os.path.dirname(torch.__file__) + os.sep
_OWN_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__))) + os.sep  # fan_convert/
_LOGGING_DIR = os.path.dirname(logging.__file__) + os.sep
_LOGGER = "torch.fx.experimental.symbolic_shapes"


@dataclass(frozen=True)
class Guard:
    """One guard: its expression, the module running when it was added, and where it was asked for."""

    expression: str
    module: str  # the innermost running module's path ('' for the root)
    kind: str  # its class name
    where: str  # 'path/to/file.py:LINE in function', the first frame outside torch
    ours: bool  # asked for by fan_convert's own layers (designed to trace; a guard there is usually benign)

    def describe(self) -> str:
        name = f"'{self.module}' ({self.kind})" if self.module else f"the model ({self.kind})"
        return f"{name} fixes the frame count at {self.where} (guard {self.expression[:200]})"


class GuardLog(logging.Handler):
    """A context manager recording the guards added while ``model`` runs inside it."""

    def __init__(self, model: nn.Module):
        super().__init__(logging.INFO)
        self.model = model
        self.guards: list[Guard] = []
        self._stack: list[tuple[str, str]] = []
        self._hooks: list = []
        self._logger = logging.getLogger(_LOGGER)

    def __enter__(self) -> "GuardLog":
        for path, module in self.model.named_modules():
            self._hooks.append(module.register_forward_pre_hook(self._enter_module(path, type(module).__name__)))
            self._hooks.append(module.register_forward_hook(self._leave_module, always_call=True))
        self._saved = (self._logger.level, self._logger.propagate, self._logger.handlers)
        self._logger.setLevel(logging.INFO)
        self._logger.propagate = False  # record, do not print (torch's own stderr handler is set aside too)
        self._logger.handlers = [self]
        return self

    def __exit__(self, *exc) -> None:
        self._logger.setLevel(self._saved[0])
        self._logger.propagate = self._saved[1]
        self._logger.handlers = self._saved[2]
        for hook in self._hooks:
            hook.remove()
        self._hooks.clear()

    def _enter_module(self, path: str, kind: str):
        def hook(module, args):
            self._stack.append((path, kind))
        return hook

    def _leave_module(self, module, args, output):
        if self._stack:
            self._stack.pop()

    def emit(self, record: logging.LogRecord) -> None:
        # torch logs "<prefix> <expression> [guard added] <where>"; a suppressed guard binds nothing
        if "[guard added]" not in str(record.msg) or len(record.args) < 2 or "suppressed" in str(record.args[0]):
            return
        frame, where, ours = sys._getframe(1), "", False
        while frame is not None:
            filename = frame.f_code.co_filename
            if not filename.startswith((_TORCH_DIR, _LOGGING_DIR, __file__)):
                ours = filename.startswith(_OWN_DIR)
                where = f"{_short(filename)}:{frame.f_lineno} in {frame.f_code.co_name}"
                break
            frame = frame.f_back
        module, kind = self._stack[-1] if self._stack else ("", type(self.model).__name__)
        self.guards.append(Guard(str(record.args[1]), module, kind, where, ours))

    def culprit(self) -> Guard | None:
        """The first guard asked for outside fan_convert's own layers (else the first of ours)."""
        located = [g for g in self.guards if g.where]
        return next((g for g in located if not g.ours), located[0] if located else None)


def _short(filename: str) -> str:
    """``filename`` from its package directory on (``torchvision/models/video/swin_transformer.py``)."""
    for root in sorted((p for p in sys.path if p), key=len, reverse=True):
        root = os.path.abspath(root) + os.sep
        if filename.startswith(root):
            return filename[len(root):]
    return filename
