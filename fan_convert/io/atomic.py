"""Writing output files so that a failure never leaves a partial or clobbered file behind."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Callable


class OutputError(ValueError):
    """An output path that cannot or must not be written."""


def check_output(path: str | os.PathLike, overwrite: bool = False) -> Path:
    """Validate an output path before any work is done.

    Example::

        path = check_output("out/model.safetensors")   # OutputError now if it exists or out/ is missing
    """
    path = Path(path)
    if path.is_dir():
        raise OutputError(f"output '{path}' is a directory; give a file name such as '{path / 'model.safetensors'}'")
    if path.exists() and not overwrite:
        raise OutputError(f"output '{path}' already exists; choose another name or pass --force (overwrite=True) to replace it")
    parent = path.parent if str(path.parent) else Path(".")
    if not parent.is_dir():
        raise OutputError(f"output directory '{parent}' does not exist; create it first")
    if not os.access(parent, os.W_OK):
        raise OutputError(f"output directory '{parent}' is not writable; choose another location")
    return path


def atomic_write(path: str | os.PathLike, write: Callable[[str], None], overwrite: bool = False) -> Path:
    """Call ``write(temp_path)`` and move the result onto ``path`` only if it succeeded.

    Example::

        atomic_write("weights.pt", lambda temp: torch.save(model.state_dict(), temp), overwrite=True)
    """
    path = check_output(path, overwrite)
    fd, temp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent if str(path.parent) else ".")
    os.close(fd)
    try:
        write(temp)
        os.chmod(temp, 0o666 & ~_umask())  # mkstemp makes owner-only files; give the usual mode
        os.replace(temp, path)
    except BaseException:
        if os.path.exists(temp):
            os.remove(temp)
        raise
    return path


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask
