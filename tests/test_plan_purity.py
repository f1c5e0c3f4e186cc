"""plan() is a dry run: the model it is given comes back exactly as it was — the same module
objects at the same paths, the same parameters, buffers, training flags and hooks — on every
architecture of the zoo catalog, with and without an example clip (which runs the rewritten
model at every key, on a private copy), and when that verification fails midway. So is
`fan-convert inspect`, for the model it builds and plans."""

from __future__ import annotations

import hashlib

import pytest
import torch
from torch import nn

import fan_convert
from fan_convert.surgery.conversion import FIXED_T, UNSUPPORTED
from fan_convert.testing import randomize_norms
from fan_convert.zoo.catalog import ZOO, ZooEntry


def fingerprint(model: nn.Module) -> dict:
    """Everything plan() could disturb, by value (tensor bytes hashed) and by identity."""
    def digest(tensor: torch.Tensor) -> str:
        return hashlib.sha1(tensor.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy().tobytes()).hexdigest()

    return {
        "modules": [(path, id(m), type(m).__qualname__, m.training) for path, m in model.named_modules(remove_duplicate=False)],
        "hooks": [(path, len(m._forward_hooks), len(m._forward_pre_hooks), len(m._backward_hooks))
                  for path, m in model.named_modules()],
        "parameters": [(name, id(p), p.dtype, p.requires_grad, digest(p)) for name, p in model.named_parameters()],
        "buffers": [(name, id(b), b.dtype, digest(b)) for name, b in model.named_buffers()],
        "grad": [name for name, p in model.named_parameters() if p.grad is not None],
        "attributes": sorted(vars(model)),
    }


def _plan_options(entry: ZooEntry) -> dict:
    return {"trained_at": entry.trained_at, "frame_axis": entry.frame_axis}


# with an example clip plan() runs the model at every key: in the default suite for one 2D TSM, one
# 3D CNN with a fixed-T head pool, one with none and one transformer; every other one with -m slow
EXAMPLE_BY_DEFAULT = {"timm:resnet18", "pytorchvideo:x3d_xs", "torchvision:r3d_18", "hf:videomae"}


def _marks(entry: ZooEntry, example: bool) -> list:
    slow = entry.heavy or (example and entry.name not in EXAMPLE_BY_DEFAULT)
    return [pytest.mark.slow] if slow else []


@pytest.mark.parametrize("entry,example", [
    pytest.param(e, example, id=f"{e.name}-{'example' if example else 'static'}", marks=_marks(e, example))
    for e in ZOO for example in (False, True)])
def test_plan_leaves_every_zoo_model_as_it_was(entry: ZooEntry, example: bool):
    model = randomize_norms(entry.build()).train()
    model.get_submodule(next(p for p, _ in model.named_modules() if p)).eval()  # a mixed-mode model
    before = fingerprint(model)
    clip = entry.clip(entry.trained_at) if example else None
    fan_convert.plan(model, entry.frames, example_input=clip, **_plan_options(entry))
    assert fingerprint(model) == before


# `fan-convert inspect` plans an architecture it builds itself: by default for one 2D TSM, one 3D CNN
# with a fixed-T head pool, one with none and one transformer (a save_pretrained folder); the rest with -m slow
INSPECT_BY_DEFAULT = {"timm:resnet18", "pytorchvideo:x3d_xs", "torchvision:r3d_18", "hf:videomae"}


@pytest.mark.parametrize("entry", [
    pytest.param(e, id=e.name, marks=[] if e.name in INSPECT_BY_DEFAULT and not e.heavy else [pytest.mark.slow]) for e in ZOO])
def test_inspect_leaves_the_model_it_plans_as_it_was(entry: ZooEntry, tmp_path, monkeypatch):
    from typer.testing import CliRunner

    import fan_convert.zoo
    from fan_convert.cli import app, cli_args

    if entry.name.startswith("hf:"):  # inspect reads a transformers model from its folder
        entry.build().save_pretrained(tmp_path / "folder")
        argv = ["inspect", str(tmp_path / "folder")]
    else:
        temporal = entry.kwargs.get("temporal")
        argv = ["inspect", entry.spec, *(["--temporal", temporal] if temporal else [])]
    built, real_build = [], fan_convert.zoo.build

    def build_and_fingerprint(*args, **kwargs):
        model = real_build(*args, **kwargs)
        built.append((model, fingerprint(model)))
        return model

    monkeypatch.setattr(fan_convert.zoo, "build", build_and_fingerprint)
    result = CliRunner().invoke(app, cli_args([*argv, "--frames", *map(str, entry.frames)]))
    assert result.exit_code == 0, result.output
    assert "FAN conversion at frames" in result.output, result.output  # it planned
    assert len(built) == 1, "inspect built the model more than once"
    model, before = built[0]
    assert fingerprint(model) == before


class FixedEight(nn.Module):
    """A head pool sized to 8 frames (a fixed-T site plan() rewrites to verify) in front of a
    layer that reshapes by 8 frames, which fails at every other T: verification fails midway."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv3d(3, 4, 1)
        self.bn = nn.BatchNorm3d(4)
        self.pool = nn.AvgPool3d((8, 4, 4), stride=1)
        self.fc = nn.Linear(4, 2)

    def forward(self, x):
        x = self.bn(self.conv(x))
        x = x.reshape(x.shape[0], 4, 8, -1)  # a hard-coded frame count
        x = self.pool(x.reshape(x.shape[0], 4, 8, 4, 4))
        return self.fc(x.flatten(1))


def test_plan_leaves_the_model_as_it_was_when_verification_fails_midway():
    model = randomize_norms(FixedEight()).train()
    runs = []  # a private copy carries this hook along: it records whether the caller's model ran
    model.register_forward_pre_hook(lambda module, args: runs.append(module is model))
    before = fingerprint(model)
    with pytest.warns(UserWarning, match="still fails at T=4"):
        conversion = fan_convert.plan(model, (4, 8), trained_at=8, example_input=torch.randn(1, 3, 8, 4, 4))
    failed = [s for s in conversion.sites if s.kind == FIXED_T and s.status == UNSUPPORTED]
    assert failed and "T=4" in failed[0].reason  # the run at 4 frames did fail, after the rewrite
    assert runs and not any(runs)  # the copy ran; the model itself never did
    assert fingerprint(model) == before


def test_plan_leaves_the_model_as_it_was_when_building_an_adapter_raises():
    class Exploding(nn.AvgPool3d):
        pass

    def explode(module, ctx):
        raise RuntimeError("boom")

    rule = fan_convert.Rule(name="test.exploding", kind=FIXED_T, match=Exploding, build=explode, layer=nn.Identity)
    fan_convert.register_rule(rule)
    try:
        model = FixedEight()
        model.pool = Exploding((8, 4, 4), stride=1)
        before = fingerprint(model)
        with pytest.raises(RuntimeError, match="boom"):
            fan_convert.plan(model, (4, 8), trained_at=8, example_input=torch.randn(1, 3, 8, 4, 4))
        assert fingerprint(model) == before
    finally:
        from fan_convert.surgery import unregister_rule

        unregister_rule("test.exploding")


def test_the_planner_does_not_import_the_rewriter():
    import ast
    import pathlib

    import fan_convert.surgery as surgery

    root = pathlib.Path(surgery.__file__).parent
    for name in ("planner.py", "fixed_t.py", "analyze.py", "building.py", "rules.py", "conversion.py"):
        tree = ast.parse((root / name).read_text())
        imported = {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) and node.module}
        assert "rewriter" not in imported and "workflow" not in imported, name
