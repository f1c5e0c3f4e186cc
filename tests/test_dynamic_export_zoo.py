"""The all-frame-counts export beyond TSM ResNet and R3D: video transformers (their position
tables follow the traced T), X3D-S (its head pool over the whole time axis does), and with -m slow
every light zoo model, each exported once or refused naming the layer that fixes T."""

import re
import warnings

import pytest
import torch
from torch import nn

import fan_convert
from fan_convert.deploy.dynamic import export
from fan_convert.nn.time_pool import AdaptiveTimePool3d
from fan_convert.testing import as_if_fine_tuned
from fan_convert.zoo.catalog import ZOO


@pytest.mark.parametrize("pool", [
    nn.AvgPool3d((8, 3, 3), stride=(1, 2, 2), padding=(0, 1, 1), count_include_pad=False),
    nn.AvgPool3d((8, 3, 3), stride=1, divisor_override=20),
    nn.AvgPool3d((8, 3, 3), stride=1, ceil_mode=True),
    nn.MaxPool3d((8, 3, 3), stride=(1, 2, 2), padding=(0, 1, 1)),
], ids=["avg-padded", "avg-divisor", "avg-ceil", "max"])
def test_the_time_pool_for_a_symbolic_t_equals_the_eager_pool(pool):
    adaptive = AdaptiveTimePool3d(pool, trained_frames=8)
    for t in (2, 3, 8, 13):
        x = torch.randn(2, 4, t, 7, 7, generator=torch.Generator().manual_seed(t))
        assert torch.allclose(adaptive._symbolic(x, t), adaptive(x), atol=1e-6), t


@pytest.mark.slow
@pytest.mark.parametrize("suffix", [".onnx", ".pt2"])
def test_x3d_s_exports_once_for_every_frame_count(tmp_path, suffix):
    if suffix == ".onnx":
        pytest.importorskip("onnxruntime")
    from pytorchvideo.models.x3d import create_x3d

    torch.manual_seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = create_x3d(input_clip_length=13, input_crop_size=32, model_num_class=5, width_factor=2.0,
                           depth_factor=2.2, head_dim_out=64, head_activation=None).eval()  # X3D-S at 32 px
        fan = as_if_fine_tuned(fan_convert.adapt(model, frames=(4, 8, 16), trained_at=13), statistics=0.3).eval()
        result = export(fan, tmp_path / f"x3d_s{suffix}", input_size=32)
    assert sorted(result.checked) == [2, 4, 5, 6, 8, 11, 12, 16, 20] and result.max_diff <= 1e-4


def _catalog_fan(spec: str):
    from fan_convert.zoo import build

    entry = next(e for e in ZOO if e.spec == spec)
    torch.manual_seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = build(spec, **entry.kwargs).eval()
        fan = fan_convert.adapt(model, frames=entry.frames, trained_at=entry.trained_at)
    return as_if_fine_tuned(fan, statistics=0.3).eval(), entry


@pytest.mark.parametrize("spec,suffix,frames", [
    ("hf:videomae", ".pt2", [4, 6, 8, 12, 16, 20]),  # tubelets of 2: even T only, from 2 tubelets
    ("hf:videomae", ".onnx", [4, 6, 8, 12, 16, 20]),
    ("hf:timesformer", ".pt2", [2, 4, 5, 6, 8, 11, 12, 16, 20]),  # one frame per time step: any T from 2
    pytest.param("hf:timesformer", ".onnx", [2, 4, 5, 6, 8, 11, 12, 16, 20], marks=pytest.mark.slow),
    pytest.param("hf:vivit", ".pt2", [4, 6, 8, 12, 16, 20], marks=pytest.mark.slow),
    pytest.param("hf:vivit", ".onnx", [4, 6, 8, 12, 16, 20], marks=pytest.mark.slow),
])
def test_video_transformers_export_once_for_every_frame_count(tmp_path, spec, suffix, frames):
    """The temporal position tables follow the traced T (a prefix of a long sinusoid table,
    learned embeddings resampled at a symbolic length), and a tubelet model's frame axis is a
    multiple of its tubelet: one artifact, checked at every key and between and outside them."""
    pytest.importorskip("transformers")
    if suffix == ".onnx":
        pytest.importorskip("onnxruntime")
    from fan_convert.deploy.dynamic import frame_multiple

    fan, entry = _catalog_fan(spec)
    result = export(fan, tmp_path / f"model{suffix}", input_size=entry.size, max_frames=32)
    multiple = frame_multiple(fan)
    assert result.frames == (2 * multiple, 32)
    assert sorted(result.checked) == frames and result.max_diff <= 1e-4 and not result.skipped


def test_a_tubelet_model_refuses_frame_counts_that_are_not_whole_tubelets(tmp_path):
    pytest.importorskip("transformers")
    fan, entry = _catalog_fan("hf:videomae")
    with pytest.raises(ValueError, match="does not run at 5 frames.*whole number of tubelets"):
        export(fan, tmp_path / "model.pt2", input_size=entry.size, frames=[4, 5])
    assert not (tmp_path / "model.pt2").exists()


REFUSED = {  # catalog entries that cannot take a symbolic frame count, and the layer the refusal names
    "torchvision:swin3d_t": "'features.0.0.attn' (ShiftedWindowAttention3d) fixes the frame count at "
                            "torchvision/models/video/swin_transformer.py",
}


@pytest.mark.slow
@pytest.mark.parametrize("entry", [e for e in ZOO if not e.heavy and e.alpha is None], ids=lambda e: e.name)
def test_every_light_zoo_model_exports_once_or_is_refused_naming_the_layer(tmp_path, entry):
    """The matrix of bench/dynamic_export_zoo.py as a test (.pt2; minutes per 224 px model on 2 cores)."""
    if entry.spec.startswith("hf:"):
        pytest.importorskip("transformers")
    from fan_convert.deploy import ExportError
    from fan_convert.testing.coverage import convert_entry

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fan = as_if_fine_tuned(convert_entry(entry).fan, statistics=0.3).eval()
        if entry.spec in REFUSED:
            with pytest.raises(ExportError, match=re.escape(REFUSED[entry.spec])):
                export(fan, tmp_path / "model.pt2", input_size=entry.size)
            assert not list(tmp_path.iterdir())
            return
        result = export(fan, tmp_path / "model.pt2", input_size=entry.size)
    assert set(entry.frames) <= set(result.checked) and result.max_diff <= 1e-4
