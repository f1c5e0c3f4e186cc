import re
import warnings
from pathlib import Path

import numpy as np
import torch

from fan_convert.testing import randomize_norms, write_video

warnings.filterwarnings("ignore", category=FutureWarning)
torch.set_num_threads(2)

__all__ = ["encode", "randomize_norms", "error_lines"]  # test modules import these from conftest

# a step's progress line, printed when piped once the step has run for a second: "<step> ..." or
# "<step> ... (5 s)"; on a loaded machine a slow refusal can show one before its error line
_PROGRESS = re.compile(r".* \.\.\.( \(\d+ s\))?$")


def error_lines(result) -> list[str]:
    """A refused command's output without its progress lines: exit code 2 is checked, and what
    remains (the caller checks it is one ``error:`` line) is returned."""
    assert result.exit_code == 2, result.output
    return [line for line in result.output.strip().splitlines() if not _PROGRESS.fullmatch(line)]


def encode(path: Path, n: int, size=(48, 64), seed=0):
    """An H.264 clip whose frame i has brightness 8*i (so frames can be told apart)."""
    h, w = size
    return write_video(path, (np.full((h, w, 3), 8 * i % 256, np.uint8) for i in range(n)), fps=10)
