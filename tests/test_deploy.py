"""Deployment: verified torch.export / ONNX artifacts per frame count, and the frame count for a
latency budget (fan_convert.deploy, `fan-convert export`, `fan-convert budget`)."""

import json
import sys
import warnings

import pytest
import torch
from conftest import error_lines
from torch import nn
from typer.testing import CliRunner

import fan_convert
from fan_convert.cli import app, cli_args
from fan_convert.deploy import (
    ExportError,
    VerificationError,
    choose_frames,
    export_specialized,
    export_verified,
    make_clip,
    measure_latency,
    read_accuracy,
)
from fan_convert.deploy import budget as budget_module
from fan_convert.deploy import export as export_module
from fan_convert.io import OutputError
from fan_convert.testing import as_if_fine_tuned, tiny_tsm
from fan_convert.train.evaluate import save_results
from fan_convert.zoo import build

KEYS = (4, 8, 16)
SIZE = 32
runner = CliRunner()


def tiny_fan() -> nn.Module:
    fan = fan_convert.adapt(tiny_tsm(), frames=KEYS)
    return as_if_fine_tuned(fan, std=0.1, statistics=0.5).eval()  # every key's norms and alterations differ


@pytest.fixture(scope="module")
def fan():
    return tiny_fan()


@pytest.fixture(scope="module")
def fan_file(fan, tmp_path_factory):
    return fan_convert.save(fan, tmp_path_factory.mktemp("fan") / "tiny.fan.safetensors")


def invoke(*args: str):
    return runner.invoke(app, cli_args([str(a) for a in args]), env={"COLUMNS": "200"})


def one_line_error(result) -> str:
    lines = error_lines(result)
    assert len(lines) == 1, result.output
    assert lines[0].startswith("error: ")
    return lines[0]


# --- export --------------------------------------------------------------------------------


def test_torch_export_round_trip_at_every_key(fan, tmp_path):
    artifacts = {}
    for t in KEYS:
        result = export_verified(fan, t, tmp_path / f"m_{t}.pt2", input_size=SIZE)
        assert result.path.is_file() and result.bytes == result.path.stat().st_size > 0
        assert result.frames == t and result.key == t and result.format == "torch-export"
        assert result.max_diff <= 1e-4 and result.input_shape == (1, 3, t, SIZE, SIZE)
        # the artifact, loaded on its own, computes the FAN's sub-network for t on a fresh clip
        artifacts[t] = torch.export.load(str(result.path)).module()
        x = torch.randn(1, 3, t, SIZE, SIZE)
        with torch.no_grad(), fan_convert.frames(t):
            assert (artifacts[t](x) - fan(x)).abs().max() <= 1e-4
    # the keys really differ, so matching the right one means something
    x = torch.randn(1, 3, 8, SIZE, SIZE)
    with torch.no_grad(), fan_convert.frames(4):
        assert (artifacts[8](x) - fan(x)).abs().max() > 1e-3
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(f"m_{t}.pt2" for t in KEYS)


def test_an_untrained_t_with_a_dynamic_batch(fan, tmp_path):
    path = export_specialized(fan, 6, tmp_path / "dyn.pt2", input_size=SIZE, dynamic_batch=True)
    assert path == tmp_path / "dyn.pt2"
    artifact = torch.export.load(str(path)).module()
    for b in (1, 3):
        x = torch.randn(b, 3, 6, SIZE, SIZE)
        with torch.no_grad(), fan_convert.frames(6):  # T=6 runs key 8's sub-network
            assert (artifact(x) - fan(x)).abs().max() <= 1e-4


def test_export_checks_its_arguments(fan, tmp_path):
    with pytest.raises(ValueError, match="not supported"):
        export_specialized(fan, 8, tmp_path / "m.pt2", format="tflite")
    with pytest.raises(ValueError, match="has 16 frames but frames=8"):
        export_specialized(fan, 8, tmp_path / "m.pt2", example_input=torch.randn(1, 3, 16, SIZE, SIZE))
    with pytest.raises(ValueError, match="not an adapted model"):
        export_specialized(nn.Linear(2, 2), 8, tmp_path / "m.pt2")
    with pytest.raises(OutputError, match="does not exist"):
        export_specialized(fan, 8, tmp_path / "missing" / "m.pt2", input_size=SIZE)
    assert list(tmp_path.iterdir()) == []


def _spoiled_specialize(monkeypatch):
    real = export_module.specialize

    def spoiled(model, t, **kwargs):
        plain = real(model, t, **kwargs)
        with torch.no_grad():
            plain.backbone.fc.bias.add_(0.01)  # the artifact now differs from the FAN
        return plain

    monkeypatch.setattr(export_module, "specialize", spoiled)


def test_a_failed_verification_leaves_no_file_and_never_clobbers(fan, tmp_path, monkeypatch):
    _spoiled_specialize(monkeypatch)
    with pytest.raises(VerificationError, match="differs from the FAN at 8 frames by 0.01"):
        export_specialized(fan, 8, tmp_path / "m.pt2", input_size=SIZE)
    assert list(tmp_path.iterdir()) == []  # neither the artifact nor a temporary file
    existing = tmp_path / "m.pt2"
    existing.write_bytes(b"the previous artifact")
    with pytest.raises(OutputError, match="already exists"):
        export_specialized(fan, 8, existing, input_size=SIZE)
    with pytest.raises(VerificationError):
        export_specialized(fan, 8, existing, input_size=SIZE, overwrite=True)
    assert existing.read_bytes() == b"the previous artifact"
    assert list(tmp_path.iterdir()) == [existing]
    # a looser tolerance accepts it
    assert export_verified(fan, 8, existing, input_size=SIZE, overwrite=True, atol=0.02).max_diff == pytest.approx(0.01, rel=1e-3)


def test_a_model_that_does_not_export_is_a_clear_error(fan, tmp_path, monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("data-dependent control flow\nmore detail")

    monkeypatch.setattr(torch.export, "export", broken)
    with pytest.raises(ExportError, match=r"could not export the 8-frame model \(RuntimeError: data-dependent control flow\)"):
        export_specialized(fan, 8, tmp_path / "m.pt2", input_size=SIZE)
    assert list(tmp_path.iterdir()) == []


class TwoPathway(nn.Module):
    """A SlowFast-like model: input [slow, fast], the slow pathway at a quarter of the frames."""

    def __init__(self):
        super().__init__()
        self.slow = nn.Sequential(nn.Conv3d(3, 4, 1), nn.BatchNorm3d(4), nn.ReLU())
        self.fast = nn.Sequential(nn.Conv3d(3, 4, 1), nn.BatchNorm3d(4), nn.ReLU())
        self.head = nn.Linear(8, 3)

    def forward(self, x):
        slow, fast = x
        return self.head(torch.cat([self.slow(slow).mean((2, 3, 4)), self.fast(fast).mean((2, 3, 4))], 1))


def test_list_inputs_export_and_verify(tmp_path):
    torch.manual_seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fan = fan_convert.adapt(TwoPathway().eval(), frames=(4, 8))
    with torch.no_grad():
        for name, p in fan.named_parameters():
            if ".norms." in name or ".scales." in name:
                p.add_(0.1 * torch.randn_like(p))
    clip = make_clip(fan, 8, 16, alpha=4)
    assert [tuple(c.shape) for c in clip] == [(1, 3, 2, 16, 16), (1, 3, 8, 16, 16)]
    result = export_verified(fan.eval(), 8, tmp_path / "sf_8.pt2", example_input=clip)
    assert result.input_shape == ((1, 3, 2, 16, 16), (1, 3, 8, 16, 16)) and result.max_diff <= 1e-4
    artifact = torch.export.load(str(result.path)).module()
    with torch.no_grad(), fan_convert.frames(8):
        assert (artifact(list(clip)) - fan(list(clip))).abs().max() <= 1e-4


def test_onnx_round_trip(fan, tmp_path):
    for name in ("onnx", "onnxscript"):
        pytest.importorskip(name)
    ort = pytest.importorskip("onnxruntime")
    result = export_verified(fan, 8, tmp_path / "m_8.onnx", format="onnx", input_size=SIZE, dynamic_batch=True)
    assert result.max_diff <= 1e-4 and list(tmp_path.iterdir()) == [result.path]  # one self-contained file
    session = ort.InferenceSession(str(result.path), providers=["CPUExecutionProvider"])
    x = torch.randn(3, 3, 8, SIZE, SIZE)
    (logits,) = session.run(None, {"clip": x.numpy()})
    with torch.no_grad(), fan_convert.frames(8):
        assert (torch.from_numpy(logits) - fan(x)).abs().max() <= 1e-4


def test_artifacts_carry_no_debug_records(fan, tmp_path):
    """Per-node stack traces and the stored example clip are debugging aids that made up half of
    a small model's file: neither format keeps them, and both still verify."""
    import zipfile

    pt2 = export_verified(fan, 8, tmp_path / "m.pt2", input_size=SIZE)
    assert pt2.max_diff <= 1e-4
    stored = {i.filename: i.file_size for i in zipfile.ZipFile(pt2.path).infolist() if "sample_inputs" in i.filename}
    assert all(size < 1024 for size in stored.values()), stored
    program = torch.export.load(str(pt2.path))
    assert program.example_inputs is None
    assert not any(n.meta.get("stack_trace") or n.meta.get("nn_module_stack") for n in program.graph.nodes)
    onnx = pytest.importorskip("onnx")
    pytest.importorskip("onnxruntime")
    result = export_verified(fan, 8, tmp_path / "m.onnx", format="onnx", input_size=SIZE)
    nodes = onnx.load(str(result.path)).graph.node
    assert result.max_diff <= 1e-4 and nodes and not any(n.metadata_props for n in nodes)


def test_onnx_without_its_packages_says_how_to_install(fan, fan_file, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "onnxscript", None)  # as if not installed
    with pytest.raises(ImportError, match=r"missing: onnxscript\); install them with: pip install 'fan-convert\[onnx\]'"):
        export_specialized(fan, 8, tmp_path / "m.onnx", format="onnx", input_size=SIZE)
    line = one_line_error(invoke("export", fan_file, "--frames", "8", "--format", "onnx", "-o", tmp_path / "m.onnx"))
    assert "pip install 'fan-convert[onnx]'" in line
    assert list(tmp_path.iterdir()) == []


def test_cli_export_keys_writes_one_verified_artifact_per_key(fan, fan_file, tmp_path):
    result = invoke("export", fan_file, "--frames", "keys", "--input-size", SIZE, "-o", tmp_path / "out.pt2")
    assert result.exit_code == 0, result.output
    for t in KEYS:
        assert (tmp_path / f"out_{t}.pt2").is_file() and f"out_{t}.pt2" in result.output
    x = torch.randn(1, 3, 16, SIZE, SIZE)
    with torch.no_grad(), fan_convert.frames(16):
        assert (torch.export.load(str(tmp_path / "out_16.pt2")).module()(x) - fan(x)).abs().max() <= 1e-4
    assert "max |diff|" in result.output and "size on disk" in result.output
    # an existing output is kept without --force, and nothing else is written
    before = (tmp_path / "out_8.pt2").read_bytes()
    result = invoke("export", fan_file, "--frames", "4", "--input-size", SIZE)  # default name: next to the model
    assert result.exit_code == 0 and (fan_file.parent / "tiny_4.pt2").is_file()
    result = invoke("export", fan_file, "--frames", "8", "--input-size", SIZE, "-o", tmp_path / "out_8.pt2")
    assert "already exists" in one_line_error(result)
    assert (tmp_path / "out_8.pt2").read_bytes() == before


def test_cli_export_bad_inputs_fail_in_one_line(fan_file, tmp_path):
    assert "--frames got 'x'" in one_line_error(invoke("export", fan_file, "--frames", "x"))
    assert "not supported" in one_line_error(invoke("export", fan_file, "--frames", "8", "--format", "tflite"))
    plain = fan_convert.save_specialized(fan_convert.load(fan_file), 8, tmp_path / "plain8.safetensors")
    assert "specialized file" in one_line_error(invoke("export", plain, "--frames", "8"))
    assert "does not exist" in one_line_error(invoke("export", tmp_path / "nope.safetensors", "--frames", "8"))



class FusedTwoPathway(TwoPathway):
    """TwoPathway with a SlowFast-style fusion conv striding the fast time axis down by 4."""

    def __init__(self):
        super().__init__()
        self.fuse = nn.Module()
        self.fuse.conv_fast_to_slow = nn.Conv3d(4, 4, 1, stride=(4, 1, 1))

    def forward(self, x):
        slow, fast = x
        fused = torch.cat([self.slow(slow), self.fuse.conv_fast_to_slow(self.fast(fast))], 1)
        return self.head(fused.mean((2, 3, 4)))


def test_the_input_layout_is_found_in_the_model_and_recorded_in_the_file(tmp_path):
    from fan_convert.zoo.layout import input_layout

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fan = fan_convert.adapt(FusedTwoPathway().eval(), frames=(4, 8))
    assert input_layout(fan) == {"pathways": ["slow", "fast"], "alpha": 4} and input_layout(TwoPathway()) == {}
    assert [tuple(c.shape) for c in make_clip(fan, 8, 16)] == [(1, 3, 2, 16, 16), (1, 3, 8, 16, 16)]
    path = fan_convert.save(fan, tmp_path / "sf.safetensors")
    assert fan_convert.read_manifest(path)["input"] == {"pathways": ["slow", "fast"], "alpha": 4}
    loaded = fan_convert.load(path, model=FusedTwoPathway())
    assert loaded.fan_input == {"pathways": ["slow", "fast"], "alpha": 4}
    loaded.fan_input = {"pathways": ["slow", "fast"], "alpha": 2}  # what the file records comes first
    assert [c.shape[2] for c in make_clip(loaded, 16, 16)] == [8, 16]
    assert "input" not in fan_convert.read_manifest(fan_convert.save(tiny_fan(), tmp_path / "one.safetensors"))


@pytest.mark.slow
def test_pytorchvideo_slowfast_layout_is_read_from_the_model():
    from fan_convert.zoo.layout import input_layout

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert input_layout(build("pytorchvideo:slowfast_r50")) == {"pathways": ["slow", "fast"], "alpha": 4}


def test_interleaved_ms_warms_up_interleaves_and_stops():
    from fan_convert.deploy import interleaved_ms

    order = []
    runs = {name: (lambda name=name: order.append(name)) for name in "abc"}
    times = interleaved_ms(runs, rounds=3, warmup=2, stop=lambda t: {"b"} if len(t["b"]) == 1 else set())
    assert order == ["a", "a", "a", "b", "b", "b", "c", "c", "c", "a", "c", "a", "c"]
    assert [len(times[n]) for n in "abc"] == [3, 1, 3] and all(v >= 0 for v in times["a"])


def test_gflops_counts_without_computing(fan):
    from fan_convert.deploy import gflops

    g4, g8 = gflops(fan, 4, SIZE), gflops(fan, 8, SIZE)
    assert 0 < g4 < g8 and abs(g8 / g4 - 2) < 0.05
    assert gflops(nn.Linear(3, 3), 4, SIZE) is None  # does not take clips: no count, no crash
    assert all(p.device.type == "cpu" for p in fan.parameters())


# --- budget --------------------------------------------------------------------------------


def fake_timing(calls):
    """interleaved_ms with made-up latencies (10 ms per frame) and the real stopping rule."""
    def interleaved_ms(runs, *, rounds, warmup=0, sync=None, stop=None):
        times, stopped = {t: [] for t in runs}, set()
        for _ in range(rounds):
            for t, run in runs.items():
                if t not in stopped:
                    calls.append((t, run))
                    times[t].append(10.0 * t)  # 4 -> 40 ms, 8 -> 80 ms, 16 -> 160 ms
                    stopped |= set(stop(times)) if stop else set()
        return times

    return interleaved_ms


def test_choose_frames_takes_the_largest_t_that_fits(fan, monkeypatch):
    calls, lines = [], []
    monkeypatch.setattr(budget_module, "interleaved_ms", fake_timing(calls))
    result = choose_frames(fan, 85, candidates=[4, 6, 8, 12, 16], batch=2, size=SIZE, threads=1, progress=lines.append)
    assert [(r.t, r.key, r.latency_ms, r.accuracy, r.fits) for r in result.rows] == [
        (4, 4, 40.0, None, True), (6, 8, 60.0, None, True), (8, 8, 80.0, None, True),
        (12, 16, 120.0, None, False), (16, 16, 160.0, None, False),
    ]
    assert result.chosen == 8 and result.rule == "largest T"
    assert "T=8 (key 8): 80.0 ms <= 85 ms" in result.message
    # 160 ms is over by half again at once; 120 ms only after three runs
    assert [r.runs for r in result.rows] == [20, 20, 20, 3, 1]
    assert lines[0].startswith("measuring T=4, 6, 8, 12, 16 (batch 2, ")
    assert "T=16: fastest run 160.0 ms > 85 ms, stopped measuring it" in lines
    assert "T=12: fastest run 120.0 ms > 85 ms, stopped measuring it" in lines
    # what was measured is the plain specialized model (what deployment runs), on the asked clip
    for t, run in calls:
        model, clip = run.args
        assert not hasattr(model, "fan_plan")
        assert not any(isinstance(m, (fan_convert.NormBank, fan_convert.WeightAlteration)) for m in model.modules())
        assert tuple(clip.shape) == (2, 3, t, SIZE, SIZE)
    assert json.loads(json.dumps(result.to_dict()))["chosen"] == 8
    # default candidates: the trained keys
    assert [r.t for r in choose_frames(fan, 85, size=SIZE).rows] == list(KEYS)


def test_larger_t_are_not_measured_once_a_smaller_one_is_over_budget(fan, monkeypatch):
    calls = []
    monkeypatch.setattr(budget_module, "interleaved_ms", fake_timing(calls))
    result = choose_frames(fan, 50, size=SIZE, repeats=5)  # 80 ms > 1.5 x 50: T=8 stops, T=16 never runs
    assert [(r.t, r.latency_ms, r.runs) for r in result.rows] == [(4, 40.0, 5), (8, 80.0, 1), (16, None, 0)]
    assert 16 not in {t for t, _ in calls} and result.chosen == 4
    assert "T=16" not in result.message and json.loads(json.dumps(result.to_dict()))["rows"][2]["latency_ms"] is None


def test_choose_frames_with_accuracy_takes_the_most_accurate_t_that_fits(fan, monkeypatch):
    monkeypatch.setattr(budget_module, "interleaved_ms", fake_timing([]))
    accuracy = {4: 50.0, 6: 63.0, 8: 61.0, 12: 70.0, 16: 72.0}
    result = choose_frames(fan, 85, accuracy=accuracy, size=SIZE)
    assert [r.t for r in result.rows] == [4, 6, 8, 12, 16]  # untrained T from the accuracy table too
    assert result.chosen == 6 and result.rule == "most accurate"
    assert result.row(6).accuracy == 63.0 and "top-1 63.00" in result.message
    assert choose_frames(fan, 1000, accuracy=accuracy, size=SIZE).chosen == 16


def test_nothing_fits_names_the_fastest_option(fan, monkeypatch):
    monkeypatch.setattr(budget_module, "interleaved_ms", fake_timing([]))
    result = choose_frames(fan, 30, size=SIZE)
    assert result.chosen is None and all(not r.fits for r in result.rows)
    assert result.fastest.t == 4
    assert "no frame count fits 30 ms" in result.message and "the fastest is T=4 (key 4) at 40.0 ms" in result.message
    with pytest.raises(ValueError, match="positive number"):
        choose_frames(fan, 0, size=SIZE)
    said = []
    with pytest.raises(ValueError, match="input_size must be a positive int"):
        choose_frames(fan, 30, size=0, progress=said.append)
    assert said == []  # refused before announcing a measurement


def test_measure_latency_runs_and_restores_threads(fan):
    before = torch.get_num_threads()
    plain = fan_convert.specialize(fan, 8)
    ms = measure_latency(plain, 8, size=SIZE, threads=1, warmup=1, repeats=3)
    assert 0 < ms < 10_000 and torch.get_num_threads() == before

    class Broken(nn.Module):
        def forward(self, x):
            assert torch.get_num_threads() == 1
            raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        measure_latency(Broken(), 8, size=SIZE, threads=1)
    assert torch.get_num_threads() == before
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="CUDA is not available"):
            measure_latency(plain, 8, size=SIZE, device="cuda")


def test_choose_frames_measures_for_real(fan):
    before = torch.get_num_threads()
    result = choose_frames(fan, 10_000, size=SIZE, threads=1, warmup=1, repeats=2)
    assert [r.t for r in result.rows] == list(KEYS) and all(0 < r.latency_ms < 10_000 for r in result.rows)
    assert result.chosen == 16 and torch.get_num_threads() == before


def test_read_accuracy_takes_the_first_model_top1(tmp_path):
    path = tmp_path / "eval.json"
    save_results({"fan.safetensors": {4: {"top1": 50.0, "top5": 80.0, "clips": 10}, 8: {"top1": 60.5, "top5": 90.0, "clips": 10}},
                  "other": {4: {"top1": 1.0}}}, path)
    assert read_accuracy(path) == {4: 50.0, 8: 60.5}
    path.write_text("[1, 2]")
    with pytest.raises(ValueError, match="not an eval results file"):
        read_accuracy(path)
    path.write_text('{"m": {"eight": {"top1": 3}}}')
    with pytest.raises(ValueError, match="no frame count"):
        read_accuracy(path)


def test_cli_budget_prints_the_table_and_the_choice(fan_file, tmp_path, monkeypatch):
    monkeypatch.setattr(budget_module, "interleaved_ms", fake_timing([]))
    result = invoke("budget", fan_file, "--latency-ms", 100, "--input-size", SIZE, "--frames", 4, 6, 8, 12, 16)
    assert result.exit_code == 0, result.output
    assert "chosen: T=8 (key 8): 80.0 ms <= 100 ms" in result.output
    assert "8 (nearest)" in result.output and "120.0" in result.output  # T=6 runs key 8, T=12 is listed
    accuracy = tmp_path / "eval.json"
    save_results({"fan": {4: {"top1": 50.0}, 6: {"top1": 64.0}, 8: {"top1": 61.0}, 16: {"top1": 70.0}}}, accuracy)
    result = invoke("budget", fan_file, "--latency-ms", 100, "--input-size", SIZE, "--accuracy", accuracy, "--json")
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["chosen"] == 6 and data["rule"] == "most accurate" and [r["t"] for r in data["rows"]] == [4, 6, 8, 16]


def test_cli_budget_nothing_fits_is_one_line_exit_2(fan_file, tmp_path, monkeypatch):
    monkeypatch.setattr(budget_module, "interleaved_ms", fake_timing([]))
    result = invoke("budget", fan_file, "--latency-ms", 20, "--input-size", SIZE, "--threads", 2)
    assert result.exit_code == 2
    *measuring, line = result.output.strip().splitlines()  # progress lines, then the one error line
    assert measuring[0].startswith("measuring T=4, 8, 16") and not any(m.startswith("error") for m in measuring)
    assert line.startswith("error: no frame count fits 20 ms") and "fastest is T=4 (key 4) at 40.0 ms" in line
    bad = tmp_path / "bad.json"
    bad.write_text("not json")
    assert "is not JSON" in one_line_error(invoke("budget", fan_file, "--latency-ms", 20, "--accuracy", bad))
    if not torch.cuda.is_available():
        assert "CUDA is not available" in one_line_error(invoke("budget", fan_file, "--latency-ms", 20, "--device", "cuda"))


def test_a_python_export_for_every_frame_count_carries_what_budget_reads(tmp_path):
    """fan_convert.export writes the metadata `fan-convert export` writes (frame range, keys,
    classes, preprocessing, input at the recorded crop), so `fan-convert budget` and
    choose_frames_for_artifact take a file exported from Python."""
    from fan_convert.deploy.artifact import read_artifact
    from fan_convert.deploy.budget import choose_frames_for_artifact

    model = tiny_fan()
    model.fan_classes = [f"class {i}" for i in range(10)]
    model.fan_preprocessing = {"resize": SIZE, "crop": SIZE, "mean": [0.45] * 3, "std": [0.225] * 3, "layout": "BCTHW"}
    fan_file = fan_convert.save(model, tmp_path / "task.fan.safetensors")
    fan_convert.export(model, tmp_path / "python.pt2", max_frames=16)  # no input_size: the recorded crop, as the CLI
    result = invoke("export", fan_file, "--max-frames", 16, "-o", tmp_path / "cli.pt2")
    assert result.exit_code == 0, result.output

    python, cli = read_artifact(tmp_path / "python.pt2"), read_artifact(tmp_path / "cli.pt2")
    assert python.every_frame_count and python.keys == KEYS and python.frame_range[1] == 16
    assert python.metadata["classes"] == model.fan_classes and python.metadata["preprocessing"]["crop"] == SIZE
    assert python.metadata["input"]["shape"] == [1, 3, "T", SIZE, SIZE]
    assert cli.metadata.pop("exported_from") == fan_file.name and python.metadata.pop("exported_from") is None
    assert python.metadata == cli.metadata

    chosen = choose_frames_for_artifact(tmp_path / "python.pt2", 1000, repeats=1, warmup=0, trust_pickle=True)
    assert chosen.chosen == KEYS[-1], chosen
    result = invoke("budget", tmp_path / "python.pt2", "--latency-ms", "1000", "--repeats", "1", "--warmup", "0",
                    "--trust-pickle", "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["settings"]["size"] in (SIZE, [SIZE, SIZE]), result.stdout


@pytest.mark.parametrize("suffix", [".pt2", ".onnx"])
def test_the_artifact_for_every_frame_count_refuses_a_clip_of_0_frames(fan, tmp_path, suffix):
    """A clip of 0 frames is refused by the artifact itself (a check in the graph), not answered
    with logits; a .pt2 names the cause, onnxruntime fails the gather that carries the check."""
    path = tmp_path / f"all{suffix}"
    fan_convert.export(fan, path, input_size=SIZE, max_frames=16)
    empty = torch.zeros(1, 3, 0, SIZE, SIZE)
    if suffix == ".pt2":
        run = torch.export.load(path).module()
        with pytest.raises(RuntimeError, match="the clip has 0 frames"):
            run(empty)
        assert run(torch.zeros(1, 3, 1, SIZE, SIZE)).shape == (1, 3)  # one frame still runs
    else:
        import onnxruntime

        session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        with pytest.raises(Exception, match="indices element out of data bounds"):
            session.run(None, {"clip": empty.numpy()})
        assert session.run(None, {"clip": torch.zeros(1, 3, 1, SIZE, SIZE).numpy()})[0].shape == (1, 3)
