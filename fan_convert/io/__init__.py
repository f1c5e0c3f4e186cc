"""Reading user checkpoints, and writing/reading fan-convert files."""

from .atomic import OutputError, atomic_write, check_output
from .checkpoint import Checkpoint, CheckpointError, load_into, read_checkpoint
from .fan_file import FanFileError, load, read_manifest, save, save_specialized

__all__ = [
    "read_checkpoint", "load_into", "Checkpoint", "CheckpointError", "save", "save_specialized", "load", "read_manifest",
    "FanFileError", "OutputError", "atomic_write", "check_output",
]
