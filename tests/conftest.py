import re
import warnings
from pathlib import Path

import numpy as np
import torch

from fan_convert.testing import randomize_norms, write_video

warnings.filterwarnings("ignore", category=FutureWarning)
torch.set_num_threads(2)

# test modules import these from conftest
__all__ = ["encode", "randomize_norms", "error_lines", "two_class_workspace", "two_class_videos", "load_bench"]

# a step's progress line, printed when piped once the step has run for a second: "<step> ..." or
# "<step> ... (5 s)"; on a loaded machine a slow refusal can show one before its error line
_PROGRESS = re.compile(r".* \.\.\.( \(\d+ s\))?$")


def load_bench(name: str):
    """The script ``bench/<name>.py`` imported as module ``bench_<name>`` (registered in
    ``sys.modules``: dataclasses look their module up there)."""
    import importlib.util
    import sys

    spec = importlib.util.spec_from_file_location(f"bench_{name}", Path(__file__).parent.parent / "bench" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def error_lines(result) -> list[str]:
    """A refused command's output without its progress lines: exit code 2 is checked, and what
    remains (the caller checks it is one ``error:`` line) is returned."""
    assert result.exit_code == 2, result.output
    return [line for line in result.output.strip().splitlines() if not _PROGRESS.fullmatch(line)]


def encode(path: Path, n: int, size=(48, 64), seed=0):
    """An H.264 clip whose frame i has brightness 8*i (so frames can be told apart)."""
    h, w = size
    return write_video(path, (np.full((h, w, 3), 8 * i % 256, np.uint8) for i in range(n)), fps=10)


def two_class_videos(root: Path, videos_per_class: int = 2, *, growth: int = 3, size=(32, 40)) -> Path:
    """``root/videos/{a,b}/{v}.mp4``: ``videos_per_class`` clips a class, the v-th ``12 + growth * v``
    frames long (see :func:`encode`). Returns ``root/videos``."""
    for c in ("a", "b"):
        (root / "videos" / c).mkdir(parents=True)
        for v in range(videos_per_class):
            encode(root / "videos" / c / f"{v}.mp4", 12 + growth * v, size=size)
    return root / "videos"


def two_class_workspace(root: Path, videos_per_class: int = 2) -> Path:
    """``root/videos/{a,b}/*.mp4`` (short 32x40 clips) and ``root/fan.safetensors``: a tiny TSM
    converted at 2 and 4 frames with a 2-class head, by the command line."""
    from typer.testing import CliRunner

    from fan_convert.cli import app, cli_args
    from fan_convert.testing import tiny_tsm

    two_class_videos(root, videos_per_class)
    torch.save(tiny_tsm(num_classes=2).state_dict(), root / "plain.pth")
    arch = ["--arch", "fan_convert:tiny_resnet", "--temporal", "tsm", "--num-classes", "2", "--trained-at", "4"]
    argv = [str(root / "plain.pth"), "--frames", "2", "4", *arch, "-o", str(root / "fan.safetensors")]
    result = CliRunner().invoke(app, cli_args(argv))
    assert result.exit_code == 0, result.output
    return root
