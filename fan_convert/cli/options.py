"""Every option that more than one command takes, declared once (defaults stay with each command).

    def convert(..., force: Force = False, trust_pickle: TrustPickle = False): ...
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, List, Optional

import typer

# what to read
Arch = Annotated[Optional[str], typer.Option("--arch", "-a", help="Architecture spec, e.g. timm:resnet50, torchvision:r3d_18.")]
Temporal = Annotated[Optional[str], typer.Option("--temporal", help="For timm: backbones: tsn (default) or tsm.")]
NumClasses = Annotated[Optional[int], typer.Option(
    "--num-classes", help="Number of classes of the model's classifier (convert: a new head of this size, when the checkpoint's differs).")]
TrustPickle = Annotated[bool, typer.Option("--trust-pickle", help="Read a pickled whole nn.Module (runs code from the file).")]
TrustFactory = Annotated[bool, typer.Option("--trust-factory", help="Allow a module.path:factory architecture recorded in the file.")]

# what to convert
Frames = Annotated[List[int], typer.Option("--frames", "-f", help="Frame counts, separated by spaces: --frames 4 8 16.")]
Targets = Annotated[List[str], typer.Option("--targets", help="'default', 'paper', 'none' or module-name patterns.")]
Exclude = Annotated[Optional[List[str]], typer.Option("--exclude", help="Module-name patterns to leave untouched.")]
KernelSize = Annotated[int, typer.Option("--kernel-size", help="Alteration kernel (1 is foldable).")]
KeepUnfoldable = Annotated[bool, typer.Option("--keep-unfoldable", help="Keep kernel>1 alterations as modules instead of refusing.")]

# what to write
Force = Annotated[bool, typer.Option("--force", help="Overwrite existing output files.")]


def Output(default: str) -> type:  # noqa: N802  (used as a type)
    """The ``--output/-o`` option, with what the command writes when it is not given."""
    return Annotated[Optional[Path], typer.Option("--output", "-o", help=f"Output file (default: {default}).")]


# how to run
def InputSize(fallback: int) -> type:  # noqa: N802  (used as a type)
    """``--input-size``: unset, a ``transformers`` model's own frame size, else ``fallback``
    (resolve with :func:`input_size`)."""
    return Annotated[Optional[int], typer.Option(
        "--input-size", help=f"Spatial size (H = W) of the clips (default: a transformers model's own size, else {fallback}).")]


def input_size(given: Optional[int], model, fallback: int) -> int:
    """What ``--input-size`` means for ``model``: as given, else its own frame size, else ``fallback``."""
    from ..integrations.transformers import frame_size

    return given if given is not None else frame_size(model) or fallback


Batch = Annotated[int, typer.Option("--batch", help="Clips per forward.")]
Device = Annotated[str, typer.Option("--device", help="cpu, cuda or cuda:N (train: auto picks CUDA when present).")]
Seed = Annotated[int, typer.Option("--seed", help="Random seed.")]
Workers = Annotated[int, typer.Option("--workers", help="DataLoader worker processes (decoding in parallel).")]

# data for train / eval / calibrate
Data = Annotated[str, typer.Option("--data", help="Videos root (root/<class>/*.mp4), the root of --list paths, or 'builtin'.")]
ListFile = Annotated[Optional[Path], typer.Option("--list", help="Annotation list: 'path label' per line.")]
Classes = Annotated[Optional[Path], typer.Option("--classes", help="Class-name file for --list labels.")]
BatchSize = Annotated[int, typer.Option("--batch-size", help="Videos per batch.")]
Crop = Annotated[int, typer.Option("--crop", help="Spatial crop size.")]
Resize = Annotated[int, typer.Option("--resize", help="Short side after decoding.")]
