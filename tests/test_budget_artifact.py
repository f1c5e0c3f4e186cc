"""`fan-convert budget` on the one artifact for every frame count (`fan-convert export` without
--frames): the .onnx / .pt2 file itself run at each candidate T, its range and input read from the
metadata it carries (fan_convert.deploy.choose_frames_for_artifact, fan_convert.deploy.artifact)."""

import json
import sys
import zipfile

import pytest
import torch
from test_deploy import fake_timing, invoke, one_line_error, tiny_fan

import fan_convert
from fan_convert.deploy import budget as budget_module
from fan_convert.deploy import choose_frames_for_artifact
from fan_convert.deploy.artifact import read_artifact
from fan_convert.deploy.dynamic import export

SIZE = 32
FAST = {"threads": 1, "warmup": 1, "repeats": 2}  # real timing, kept short


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """The tiny FAN's file, its .pt2 for every frame count (written by the CLI, so the metadata is
    what users get), the same as .onnx (the same metadata; checked at fewer T to stay quick) and a
    specialized 8-frame .pt2."""
    folder = tmp_path_factory.mktemp("artifacts")
    fan = tiny_fan()
    fan_file = fan_convert.save(fan, folder / "tiny.fan.safetensors")
    result = invoke("export", fan_file, "--input-size", SIZE, "-o", folder / "all.pt2")
    assert result.exit_code == 0, result.output
    metadata = {"fan_convert": ""}
    torch.export.load(str(folder / "all.pt2"), extra_files=metadata)
    paths = {"fan": fan_file, "pt2": folder / "all.pt2", "m8": folder / "m8.pt2"}
    result = invoke("export", fan_file, "--frames", 8, "--input-size", SIZE, "-o", paths["m8"])
    assert result.exit_code == 0, result.output
    try:
        import onnxruntime
        import onnxscript  # noqa: F401
    except ImportError:
        return paths
    real = onnxruntime.InferenceSession

    def one_thread(path, options=None, *args, **kwargs):  # onnxruntime's default pool pins a thread to every core
        options = options or onnxruntime.SessionOptions()
        options.intra_op_num_threads = 1
        return real(path, options, *args, **kwargs)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(onnxruntime, "InferenceSession", one_thread)
        paths["onnx"] = export(fan, folder / "all.onnx", input_size=SIZE, frames=(4, 16), metadata=metadata).path
    return paths


def onnx_file(files):
    if "onnx" not in files:
        pytest.skip("needs onnxruntime and onnxscript")
    return files["onnx"]


def rewritten(src, dst, change):
    """A copy of the .pt2 archive src with its fan_convert metadata changed (change returns None: removed)."""
    with zipfile.ZipFile(src) as old, zipfile.ZipFile(dst, "w") as new:
        for item in old.infolist():
            data = old.read(item)
            if item.filename.endswith("/extra/fan_convert"):
                data = change(json.loads(data))
                if data is None:
                    continue
                data = json.dumps(data)
            new.writestr(item, data)
    return dst


def test_the_metadata_is_read_without_loading_anything(files, monkeypatch):
    monkeypatch.setattr(torch.export, "load", None)  # neither torch.export nor onnxruntime is used
    monkeypatch.setitem(sys.modules, "onnxruntime", None)
    for name in ("pt2", "onnx"):
        if name not in files:
            continue
        artifact = read_artifact(files[name])
        assert artifact.every_frame_count and artifact.keys == (4, 8, 16) and artifact.frame_range == (2, 64)
        assert artifact.frame_multiple == 1 and artifact.batch == 1 and artifact.size == (SIZE, SIZE)
        assert artifact.clip_shape(6) == (1, 3, 6, SIZE, SIZE)
    assert not read_artifact(files["m8"]).every_frame_count


def test_a_huge_budget_chooses_the_largest_key(files):
    before = torch.get_num_threads()
    result = choose_frames_for_artifact(onnx_file(files), 1e6, **FAST)
    assert [r.t for r in result.rows] == [4, 8, 16] and all(0 < r.latency_ms < 1e6 and r.fits for r in result.rows)
    assert result.chosen == 16 and result.rule == "largest T" and torch.get_num_threads() == before
    assert "T=16 (key 16)" in result.message and "(batch 1, 32x32, cpu, onnxruntime, 1 thread)" in result.message
    assert json.loads(json.dumps(result.to_dict()))["settings"]["runtime"] == "onnxruntime"
    # untrained T run the nearest key's sub-network, the artifact choosing it from the clip's length
    result = choose_frames_for_artifact(files["onnx"], 1e6, candidates=[6, 20], **FAST)
    assert [(r.t, r.key) for r in result.rows] == [(6, 8), (20, 16)] and result.chosen == 20


def test_a_tiny_budget_fits_nothing(files):
    said = []
    result = choose_frames_for_artifact(onnx_file(files), 1e-6, progress=said.append, **FAST)
    assert result.chosen is None and [r.runs for r in result.rows] == [1, 0, 0]  # T=4 over at once: 8, 16 never run
    assert result.message.startswith("no frame count fits 1e-06 ms (batch 1, 32x32, cpu, onnxruntime, 1 thread)")
    assert "the fastest is T=4 (key 4)" in result.message
    assert said[0].startswith("measuring T=4, 8, 16 (batch 1, 32x32, cpu, onnxruntime")


def test_frame_counts_the_artifact_does_not_take_are_refused(files, tmp_path):
    pt2 = files["pt2"]  # refused from the metadata: no trust needed, nothing loaded
    with pytest.raises(ValueError, match=r"^frame counts 1, 70 are outside the range all.pt2 takes, 2..64 .* larger --max-frames$"):
        choose_frames_for_artifact(pt2, 50, candidates=[1, 8, 70])
    with pytest.raises(ValueError, match=r"outside the range .*\(the candidates: its keys and the T in the accuracy table\)"):
        choose_frames_for_artifact(pt2, 50, accuracy={8: 60.0, 100: 70.0})
    tubelets = rewritten(pt2, tmp_path / "tubelets.pt2", lambda m: {**m, "frame_multiple": 2})
    with pytest.raises(ValueError, match=r"frame counts 5, 7 are not multiples of 2: tubelets.pt2 takes whole tubelets of 2 frames; "
                                         r"pick multiples of 2 \(e.g. 4, 6, 8\)"):
        choose_frames_for_artifact(tubelets, 50, candidates=[4, 5, 7])
    with pytest.raises(ValueError, match="exported for batch 1 .fixed.; use batch=1 .--batch 1., or export with --dynamic-batch"):
        choose_frames_for_artifact(pt2, 50, batch=2)
    with pytest.raises(ValueError, match="positive number of milliseconds"):
        choose_frames_for_artifact(pt2, 0)


def test_a_pt2_is_loaded_only_when_trusted(files, monkeypatch):
    with pytest.raises(ValueError, match=r"can unpickle .* pass trust_pickle=True \(--trust-pickle\) if you trust the file"):
        choose_frames_for_artifact(files["pt2"], 1e6)
    loads = []
    real = torch.export.load
    monkeypatch.setattr(torch.export, "load", lambda *a, **k: loads.append(a) or real(*a, **k))
    before = torch.get_num_threads()
    result = choose_frames_for_artifact(files["pt2"], 1e6, candidates=[4, 16], trust_pickle=True, **FAST)
    assert result.chosen == 16 and len(loads) == 1 and torch.get_num_threads() == before
    assert "torch.export, 1 thread" in result.message


def test_what_is_not_an_all_frame_counts_artifact_is_refused(files, tmp_path, monkeypatch):
    with pytest.raises(ValueError, match="^'m8.pt2' is a specialized artifact for 8 frames only: there is no T to choose; pass the FAN "
                                         r"file it came from \(tiny.fan.safetensors\) or the artifact for every frame count"):
        choose_frames_for_artifact(files["m8"], 50)
    with pytest.raises(ValueError, match="artifact '.*nothing.onnx' does not exist"):
        choose_frames_for_artifact(tmp_path / "nothing.onnx", 50)
    bare = rewritten(files["pt2"], tmp_path / "bare.pt2", lambda m: None)
    with pytest.raises(ValueError, match="is not a fan-convert artifact: it has no 'fan_convert' metadata"):
        choose_frames_for_artifact(bare, 50)
    (tmp_path / "junk.onnx").write_bytes(b"\xff" * 64)
    (tmp_path / "junk.pt2").write_bytes(b"not a zip")
    for junk, kind in (("junk.onnx", "ONNX model"), ("junk.pt2", ".pt2 archive")):
        with pytest.raises(ValueError, match=f"is not a readable {kind}"):
            choose_frames_for_artifact(tmp_path / junk, 50)
    onnx = onnx_file(files)
    onnx_lib = pytest.importorskip("onnx")
    model = onnx_lib.load(str(onnx))
    del model.metadata_props[:]
    onnx_lib.save(model, str(tmp_path / "bare.onnx"))
    with pytest.raises(ValueError, match="is not a fan-convert artifact"):
        choose_frames_for_artifact(tmp_path / "bare.onnx", 50)
    monkeypatch.setitem(sys.modules, "onnxruntime", None)
    with pytest.raises(ImportError, match=r"needs onnxruntime; install it with: pip install 'fan-convert\[onnx\]'"):
        choose_frames_for_artifact(onnx, 50)


def test_the_cli_measures_the_artifact(files):
    onnx = onnx_file(files)
    result = invoke("budget", onnx, "--latency-ms", 1e6, "--threads", 1, "--warmup", 1, "--repeats", 2)
    assert result.exit_code == 0, result.output
    assert "all.onnx: latency budget 1e+06 ms" in result.output and "measuring T=4, 8, 16" in result.output
    assert "chosen: T=16 (key 16):" in result.output and "onnxruntime, 1 thread" in result.output
    result = invoke("budget", onnx, "--latency-ms", 1e6, "--frames", 5, 6, "--threads", 1, "--repeats", 1, "--json")
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["chosen"] == 6 and [(r["t"], r["key"]) for r in data["rows"]] == [(5, 4), (6, 8)]
    assert data["settings"]["size"] == SIZE and data["settings"]["runtime"] == "onnxruntime"


def test_the_cli_table_and_accuracy_for_an_artifact(files, tmp_path, monkeypatch):
    from fan_convert.train.evaluate import save_results

    monkeypatch.setattr(budget_module, "interleaved_ms", fake_timing([]))  # 10 ms per frame
    result = invoke("budget", files["pt2"], "--latency-ms", 100, "--frames", 4, 6, 8, 12, 16, "--trust-pickle")
    assert result.exit_code == 0, result.output
    assert "chosen: T=8 (key 8): 80.0 ms <= 100 ms" in result.output and "torch.export" in result.output
    assert "8 (nearest)" in result.output and "120.0" in result.output
    accuracy = tmp_path / "eval.json"
    save_results({"fan": {4: {"top1": 50.0}, 6: {"top1": 64.0}, 8: {"top1": 61.0}, 16: {"top1": 70.0}}}, accuracy)
    result = invoke("budget", files["pt2"], "--latency-ms", 100, "--accuracy", accuracy, "--trust-pickle", "--json")
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["chosen"] == 6 and data["rule"] == "most accurate" and [r["t"] for r in data["rows"]] == [4, 6, 8, 16]
    result = invoke("budget", files["pt2"], "--latency-ms", 20, "--trust-pickle")
    assert result.exit_code == 2 and result.output.strip().splitlines()[-1].startswith("error: no frame count fits 20 ms")


def test_the_cli_refuses_in_one_line(files, tmp_path):
    pt2, budget = files["pt2"], ("--latency-ms", 50)
    line = one_line_error(invoke("budget", pt2, *budget))
    assert "can unpickle" in line and "pass --trust-pickle if you trust the file" in line
    assert "a specialized artifact for 8 frames only" in one_line_error(invoke("budget", files["m8"], *budget))
    assert "does not exist" in one_line_error(invoke("budget", tmp_path / "gone.onnx", *budget))
    line = one_line_error(invoke("budget", pt2, *budget, "--device", "cuda"))
    assert "--device cuda does not apply to an artifact" in line
    line = one_line_error(invoke("budget", pt2, *budget, "--input-size", 64))
    assert "--input-size 64 does not apply: all.pt2 takes 32x32 clips" in line
    assert "outside the range" in one_line_error(invoke("budget", pt2, *budget, "--frames", 1, 8))
    assert "--batch 1" in one_line_error(invoke("budget", pt2, *budget, "--batch", 3))
