"""transformers video classifiers: converted from a save_pretrained folder by the CLI, exact at
their training T, running at every T (whole tubelets), specialised back to the plain class."""

import json
import shutil
import sys

import pytest
import torch
from typer.testing import CliRunner

import fan_convert
from fan_convert.cli import app, cli_args
from fan_convert.testing import as_if_fine_tuned, random_clip
from fan_convert.zoo.catalog import HF_BLOCK, HF_SMALL

transformers = pytest.importorskip("transformers")

runner = CliRunner()
KEYS = (4, 8, 16)
# The zoo catalog's small configs (each trained at 8 frames), with 5 labels; the canonical sizes
# run in the slow README check (test_readme.py).
SMALL = {name: {**config, **HF_BLOCK, "num_labels": 5} for name, config in HF_SMALL.items()}
UNTRAINED = 6  # a multiple of every tubelet size here, between the keys


def run(*argv):
    return runner.invoke(app, cli_args([str(a) for a in argv]))


def small(model_type: str, seed: int = 0):
    torch.manual_seed(seed)
    model = fan_convert.build(f"hf:{model_type}", **SMALL[model_type])
    with torch.no_grad():  # transformers zero-initialises position tables and tokens: make them count
        for p in model.parameters():
            p.add_(0.1 * torch.randn_like(p))
    return model.eval()


def clip(model, t: int, seed: int = 0) -> torch.Tensor:
    """Two clips of ``t`` frames in ``model``'s (B, T, C, H, W) layout at its frame size."""
    size = model.config.to_dict().get("image_size") or model.config.crop_size
    return random_clip(t, size, batch=2, frame_axis=1, seed=seed)


def logits(model, x):
    with torch.no_grad():
        return model(**{model.main_input_name: x}).logits.reshape(x.shape[0], -1)


def frame_count(config) -> int:
    return config.num_frames if hasattr(config, "num_frames") else config.frames_per_clip


def plain_class_for(model, t: int):
    """The model's own class built from its config for ``t`` frames (what a user would rebuild)."""
    fields = model.config.to_dict()
    fields["frames_per_clip" if "frames_per_clip" in fields else "num_frames"] = t
    return type(model)(type(model.config).from_dict(fields)).eval()


@pytest.mark.parametrize("model_type", list(SMALL))
def test_save_pretrained_folder_converts_runs_everywhere_and_specialises_back(model_type, tmp_path):
    model = small(model_type)
    folder = tmp_path / "pretrained"
    model.save_pretrained(folder)
    out = tmp_path / "fan.safetensors"
    result = run(folder, "--frames", *KEYS, "-o", out)
    assert result.exit_code == 0, result.output
    assert "GFLOPs" in result.output and "n/a" not in result.output  # counted at the model's own frame size
    shutil.rmtree(folder)  # the FAN file alone rebuilds the model
    fan = fan_convert.load(out)
    assert type(fan) is type(model) and fan.fan_plan.trained_at == 8 and fan.fan_plan.frame_axis == 1

    x8 = clip(model, 8)
    assert (logits(fan, x8) - logits(model, x8)).abs().max() <= 1e-5
    assert (fan(x8).logits.reshape(2, -1) - logits(model, x8)).abs().max() <= 1e-5  # positional input: T from dim 1
    for t in KEYS + (UNTRAINED, 12):
        out_t = logits(fan, clip(model, t))
        assert out_t.shape == (2, 5) and torch.isfinite(out_t).all()

    as_if_fine_tuned(fan, std=0.1)
    fan_convert.save(fan, tmp_path / "tuned.safetensors")
    reloaded = fan_convert.load(tmp_path / "tuned.safetensors")
    for t in KEYS + (UNTRAINED,):
        x = clip(model, t, seed=t)
        assert torch.equal(logits(reloaded, x), logits(fan, x))
    for t in KEYS:
        x = clip(model, t, seed=t)
        plain = fan_convert.specialize(fan, t)
        assert type(plain) is type(model) and frame_count(plain.config) == t
        assert not any(type(m).__module__.startswith("fan_convert") for m in plain.modules())
        rebuilt = plain_class_for(model, t)
        rebuilt.load_state_dict(plain.state_dict(), strict=True)
        assert (logits(rebuilt, x) - logits(fan, x)).abs().max() <= 1e-5
        fan_convert.save_specialized(fan, t, tmp_path / f"plain{t}.safetensors")
        assert torch.equal(logits(fan_convert.load(tmp_path / f"plain{t}.safetensors"), x), logits(plain, x))
    plain.save_pretrained(tmp_path / "plain")  # the specialised model is a plain transformers model again
    again = type(model).from_pretrained(tmp_path / "plain", local_files_only=True)
    assert frame_count(again.config) == KEYS[-1] and torch.equal(logits(again, x), logits(plain, x))


def test_fixed_t_sites_are_listed_with_the_recorded_frame_count():
    by_type = {}
    for model_type in SMALL:
        conversion = fan_convert.plan(small(model_type), frames=KEYS)
        fixed = conversion.select("fixed_t", status=None)
        root = [s for s in fixed if s.path == ""]
        assert len(root) == 1 and root[0].status == "skipped" and "=8" in root[0].reason
        by_type[model_type] = sorted({s.becomes for s in fixed if s.status == "converted"})
    assert by_type == {
        "videomae": ["SinusoidFramePositions", "TubeletFrames"],
        "timesformer": ["FrameCountConfig", "LearnedTimeEmbedding"],
        "vivit": ["SpaceTimePositions", "TubeletFrames"],
        "vjepa2": ["TubeletFrames"],
        "videoprism_vision_model": ["LearnedTimeEmbedding"],
    }


def test_explicit_frames_select_the_key_while_the_clip_sets_the_length():
    model = small("timesformer")
    fan = as_if_fine_tuned(fan_convert.adapt(model, frames=KEYS), std=0.1)
    x = clip(model, 12)
    with fan_convert.frames(8):
        at8 = logits(fan, x)
    with fan_convert.frames(16):
        at16 = logits(fan, x)
    assert not torch.allclose(at8, at16)
    assert torch.equal(logits(fan, x), at16)  # 12 frames: the tie between 8 and 16 goes to 16


def test_an_adapted_model_pickles_and_deep_copies():
    import copy
    import io

    model = small("timesformer")
    fan = as_if_fine_tuned(fan_convert.adapt(model, frames=KEYS), std=0.1)
    buffer = io.BytesIO()
    torch.save(fan, buffer)
    buffer.seek(0)
    again = torch.load(buffer, weights_only=False)
    for t in (4, 12):
        x = clip(model, t)
        assert torch.equal(logits(again, x), logits(fan, x))
        assert torch.equal(logits(copy.deepcopy(fan), x), logits(fan, x))


def test_learned_time_embeddings_interpolate_linearly():
    model = small("timesformer")
    fan = fan_convert.adapt(model, frames=KEYS)
    embeddings = fan.timesformer.embeddings
    trained = embeddings._parameters["time_embeddings"]
    with fan_convert.frames(8):
        assert embeddings.time_embeddings is trained
    with fan_convert.frames(16):
        doubled = embeddings.time_embeddings
    assert doubled.shape == (1, 16, 32)
    # align_corners=False: the 2i-th and (2i+1)-th of 16 sit a quarter step either side of entry i
    middle = trained[0, 3] * 0.75 + trained[0, 4] * 0.25
    assert torch.allclose(doubled[0, 7], middle, atol=1e-6)


def test_videomae_table_is_the_sinusoid_table_for_every_length():
    from transformers.models.videomae.modeling_videomae import get_sinusoid_encoding_table

    model = small("videomae")
    fan = fan_convert.adapt(model, frames=KEYS)
    embeddings = fan.videomae.embeddings
    for t in (4, 8, 16):
        with fan_convert.frames(t):
            table = embeddings.position_embeddings
        assert torch.equal(table, get_sinusoid_encoding_table(t // 2 * 4, 32))


def test_vivit_positions_interpolate_along_time_only():
    model = small("vivit")
    fan = fan_convert.adapt(model, frames=KEYS)
    embeddings = fan.vivit.embeddings
    trained = embeddings._parameters["position_embeddings"]  # (1, 1 + 4 steps x 4 patches, C)
    with fan_convert.frames(4):
        half = embeddings.position_embeddings
    assert half.shape == (1, 1 + 2 * 4, 32)
    assert torch.equal(half[:, 0], trained[:, 0])
    grid = trained[0, 1:].reshape(4, 4, 32)
    assert torch.allclose(half[0, 1:].reshape(2, 4, 32), (grid[0::2] + grid[1::2]) / 2, atol=1e-6)


def test_frame_counts_that_split_a_tubelet_are_refused_early(tmp_path):
    model = small("videomae")
    for dry_run_or_adapt in (fan_convert.plan, fan_convert.adapt):
        with pytest.raises(ValueError, match="multiple of 2; 5 is not: use e.g. 4 or 6"):
            dry_run_or_adapt(model, frames=(4, 5, 8))
    fan = fan_convert.adapt(model, frames=KEYS)
    with pytest.raises(ValueError, match="clip of 5 frames is not a whole number of tubelets"):
        logits(fan, clip(model, 5))
    with pytest.raises(ValueError, match="do not map to a whole number"):
        fan_convert.specialize(fan, 5)
    model.save_pretrained(tmp_path / "vm")
    result = run(tmp_path / "vm", "--frames", 4, 5, 8, "-o", tmp_path / "out.safetensors")
    assert result.exit_code == 2 and "multiple of 2" in result.output
    assert not (tmp_path / "out.safetensors").exists()


def test_arch_kwargs_override_the_default_config_and_the_manifest_keeps_the_whole_config(tmp_path):
    model = small("vivit")
    torch.save(model.state_dict(), tmp_path / "vivit.pt")
    pairs = [f"--arch-kwarg={k}={json.dumps(v)}" for k, v in SMALL["vivit"].items() if k != "num_labels"]
    result = run(tmp_path / "vivit.pt", "--arch", "hf:vivit", *pairs, "--num-classes", 5, "--frames", *KEYS)
    assert result.exit_code == 0, result.output
    manifest = fan_convert.read_manifest(tmp_path / "vivit.fan.safetensors")
    assert manifest["arch"]["spec"] == "hf:vivit"
    assert manifest["arch"]["kwargs"]["num_frames"] == 8 and manifest["arch"]["kwargs"]["layer_norm_eps"] == 1e-6
    x = clip(model, 8)
    assert (logits(fan_convert.load(tmp_path / "vivit.fan.safetensors"), x) - logits(model, x)).abs().max() <= 1e-5


def test_config_json_spec_and_bad_names():
    model = small("timesformer")
    assert fan_convert.build("hf:TimesformerForVideoClassification", **SMALL["timesformer"]).config.num_frames == 8
    with pytest.raises(ValueError, match="unknown hf video classifier 'bert'.*hf:videomae"):
        fan_convert.build("hf:bert")
    with pytest.raises(ValueError, match="has no field 'num_frame'"):
        fan_convert.build("hf:videomae", num_frame=8)
    del model


def test_config_json_path_builds_the_saved_architecture(tmp_path):
    small("videomae").save_pretrained(tmp_path / "vm")
    model = fan_convert.build(f"hf:{tmp_path / 'vm' / 'config.json'}")
    assert model.config.num_frames == 8 and model.config.hidden_size == 32
    assert model.fan_arch["spec"] == "hf:videomae"
    result = run("inspect", tmp_path / "vm", "--json", "--frames", 4, 8)  # a dry run on the folder's architecture
    assert result.exit_code == 0, result.output
    assert "SinusoidFramePositions" in result.output and "TubeletFrames" in result.output


def test_bad_save_pretrained_folders_get_one_line_errors(tmp_path):
    folder = tmp_path / "vm"
    small("videomae").save_pretrained(folder)
    (folder / "model.safetensors").rename(tmp_path / "weights")
    result = run(folder, "--frames", *KEYS)
    assert result.exit_code == 2 and "no weights" in result.output
    (tmp_path / "weights").rename(folder / "model.safetensors")
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, "architectures": ["VideoMAEForPreTraining"]}))
    result = run(folder, "--frames", *KEYS)
    assert result.exit_code == 2 and "holds a VideoMAEForPreTraining" in result.output
    (folder / "config.json").write_text(json.dumps({**config, "hidden_size": 64}))
    result = run(folder, "--frames", *KEYS)
    assert result.exit_code == 2 and "do not fit its config" in result.output
    empty = tmp_path / "empty"
    empty.mkdir()
    result = run(empty, "--frames", *KEYS)
    assert result.exit_code == 2 and "without a config.json" in result.output


def test_sharded_folder_is_read(tmp_path):
    model = small("vivit")
    model.save_pretrained(tmp_path / "sharded", max_shard_size="20KB")
    assert (tmp_path / "sharded" / "model.safetensors.index.json").exists()
    loaded = fan_convert.load_pretrained(tmp_path / "sharded")  # arch from its config.json
    x = clip(model, 8)
    assert torch.equal(logits(loaded, x), logits(model, x))


def test_without_transformers_an_hf_spec_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "transformers", None)
    with pytest.raises(ImportError, match=r"pip install 'fan-convert\[hf\]'"):
        fan_convert.build("hf:videomae")
    result = run("inspect", "hf:videomae")
    assert result.exit_code == 2 and "fan-convert[hf]" in result.output and len(result.output.strip().splitlines()) == 1


def test_fine_tuning_reads_videos_as_the_model_takes_them(tmp_path):
    from conftest import two_class_videos

    from fan_convert.data import MultiViewClips, video_folder

    two_class_videos(tmp_path, 2, growth=0, size=(36, 40))
    folder = tmp_path / "vm"
    small("videomae").save_pretrained(folder)
    mean, std = [0.5, 0.4, 0.3], [0.2, 0.25, 0.3]
    (folder / "preprocessor_config.json").write_text(json.dumps({"image_mean": mean, "image_std": std}))
    assert run(folder, "--frames", 4, 8, "-o", tmp_path / "fan.safetensors").exit_code == 0
    fan = fan_convert.load(tmp_path / "fan.safetensors")
    assert fan.config.image_mean == mean  # the manifest kept the folder's normalisation

    from fan_convert.integrations.transformers import reader_settings

    settings = reader_settings(fan)
    assert settings == {"layout": "BTCHW", "crop_size": 32, "mean": tuple(mean), "std": tuple(std)}
    items, _ = video_folder(tmp_path / "videos")
    views, _ = MultiViewClips(items, (4, 8), train=False, resize=36, **settings)[0]
    assert views[4].shape == (4, 3, 32, 32) and views[8].shape == (8, 3, 32, 32)

    result = run("train", tmp_path / "fan.safetensors", "--data", tmp_path / "videos", "--epochs", 1, "--batch-size", 2,
                 "--crop", 32, "--resize", 36, "--optimizer", "adamw", "--lr", "1e-3", "--out-dir", tmp_path / "run")
    assert result.exit_code == 0, result.output
    tuned = fan_convert.load(tmp_path / "run" / "fan.safetensors")
    assert type(tuned) is type(fan)
    result = run("eval", tmp_path / "run" / "fan.safetensors", "--data", tmp_path / "videos", "--frames", 4, 6, 8,
                 "--crop", 32, "--resize", 36)
    assert result.exit_code == 0, result.output
    result = run("train", tmp_path / "fan.safetensors", "--data", tmp_path / "videos", "--epochs", 1, "--out-dir", tmp_path / "r2")
    assert result.exit_code == 2 and "pass --crop 32" in result.output


def test_a_save_pretrained_folder_is_built_once(tmp_path, monkeypatch):
    model = small("videomae")
    model.save_pretrained(tmp_path / "folder")
    import fan_convert.pipeline

    def no_second_build(*args, **kwargs):
        raise AssertionError("the folder's model was built a second time")

    monkeypatch.setattr(fan_convert.pipeline, "build", no_second_build)
    loaded = fan_convert.load_pretrained(tmp_path / "folder")
    x = clip(model, 8)
    assert torch.equal(logits(loaded, x), logits(model, x))
    assert loaded.fan_arch["spec"] == "hf:videomae" and not loaded.training
    with pytest.raises(AssertionError, match="second time"):  # another head is another architecture: built anew
        fan_convert.load_pretrained(tmp_path / "folder", arch_kwargs={"num_labels": 3})
