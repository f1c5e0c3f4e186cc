"""One ONNX file for every frame count, run with onnxruntime alone.

Step 1 (with fan-convert, once): export the FAN as one .onnx whose frame axis is dynamic
(`fan-convert export model.fan.safetensors -o model.onnx`, or `fan_convert.export(fan, "model.onnx")`).
Step 2 (on the device: numpy and onnxruntime only, no torch, no fan_convert): feed clips of any
length; the file picks the sub-network of the nearest trained key from each clip's frame count.

    python examples/onnx_every_frame_count.py                 # both steps (step 2 in a fresh process)
    python examples/onnx_every_frame_count.py model.onnx      # step 2 only, on your file
"""

import json
import sys


def infer(path: str) -> None:
    """Step 2: what a device runs. Imports numpy and onnxruntime, nothing else."""
    import numpy as np
    import onnxruntime

    session = onnxruntime.InferenceSession(path, providers=["CPUExecutionProvider"])
    meta = session.get_modelmeta().custom_metadata_map
    info = json.loads(meta["fan_convert"]) if "fan_convert" in meta else {}
    (clip,) = session.get_inputs()
    print(f"input {clip.name}: {clip.shape}; trained keys {info.get('keys')}, frames {info.get('frame_range')}")
    rng = np.random.default_rng(0)
    size = clip.shape[-1]
    for t in (4, 6, 8, 12, 16, 20):  # trained keys and frame counts between and beyond them
        x = rng.standard_normal((1, 3, t, size, size), dtype=np.float32)
        (logits,) = session.run(None, {clip.name: x})
        print(f"{t:2d} frames -> logits {tuple(logits.shape)}, class {int(logits.argmax())}")
    for what, shape in (("0 frames", (1, 3, 0, size, size)), ("4 channels", (1, 4, 8, size, size))):
        try:
            (out,) = session.run(None, {clip.name: np.zeros(shape, dtype=np.float32)})
            # onnxruntime checks ranks and fixed sizes, not the range of the frame axis: check T >= 2 yourself
            print(f"{what}: ran, output shape {tuple(out.shape)}: onnxruntime does not check the frame axis' range; "
                  "the artifact takes 2 frames or more, so check T >= 2 before calling")
        except Exception as err:  # onnxruntime's own error for a bad input
            print(f"{what}: refused by onnxruntime ({type(err).__name__}: {str(err).splitlines()[0][:120]})")
    loaded = sorted(m for m in ("torch", "fan_convert") if m in sys.modules)
    print(f"imported at inference: numpy, onnxruntime; torch or fan_convert: {loaded or 'none'}")


def export() -> str:
    """Step 1: convert a model and export it once (here a randomly initialised TSM ResNet-18)."""
    import subprocess
    import tempfile
    import warnings
    from pathlib import Path

    import torch

    import fan_convert

    work = Path(tempfile.mkdtemp(prefix="fan-onnx-"))
    torch.manual_seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = fan_convert.build("timm:resnet18", temporal="tsm", num_classes=10)
    fan = fan_convert.adapt(model, frames=(4, 8, 16))
    result = fan_convert.export(fan, work / "tsm.onnx", input_size=64)  # with its metadata: keys, frame range, input
    checked = ", ".join(f"{t}" for t in result.checked)
    print(f"exported {result.path.name}: {result.bytes / 1e6:.1f} MB, one file for frames {result.frames[0]}-{result.frames[1]}; "
          f"checked against the FAN at T = {checked}: max |diff| {result.max_diff:.1e}", flush=True)
    # step 2 in a fresh interpreter, so nothing step 1 imported is around
    subprocess.run([sys.executable, __file__, str(result.path)], check=True)
    return str(result.path)


if __name__ == "__main__":
    if len(sys.argv) > 1:
        infer(sys.argv[1])
    else:
        export()
