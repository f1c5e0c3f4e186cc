"""Deployment: verified artifacts for one frame count, and the frame count for a latency budget.

    from fan_convert.deploy import choose_frames, export_specialized

    export_specialized(fan, 8, "model_8.pt2", input_size=112)        # torch.export, verified
    export_specialized(fan, 8, "model_8.onnx", format="onnx")        # pip install 'fan-convert[onnx]'
    result = choose_frames(fan, latency_ms=40, threads=2)            # largest T that fits 40 ms
    result = choose_frames_for_artifact("model.onnx", 40)            # the same, for the one all-frame-counts artifact
"""

from .budget import BudgetResult, BudgetRow, choose_frames, choose_frames_for_artifact, measure_latency, read_accuracy
from .clips import make_clip
from .cost import gflops, interleaved_ms
from .export import (
    FORMATS,
    WRITERS,
    ExportError,
    ExportOptions,
    ExportResult,
    VerificationError,
    Writer,
    export_specialized,
    export_verified,
)

__all__ = [
    "export_specialized", "export_verified", "make_clip", "ExportOptions", "ExportResult", "ExportError", "VerificationError",
    "FORMATS", "WRITERS", "Writer", "measure_latency", "choose_frames", "choose_frames_for_artifact",
    "read_accuracy", "BudgetResult", "BudgetRow",
    "gflops", "interleaved_ms",
]
