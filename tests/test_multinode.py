"""Two machines on one computer: docs/fine-tune.md's multi-node commands, read from the document
and run as written (torchrun twice, c10d rendezvous on 127.0.0.1, gloo, one process per machine),
against one process with the same global batch; then one machine killed after the first
checkpoint and both resumed with the documented resume command."""

from __future__ import annotations

import contextlib
import json
import os
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from conftest import two_class_videos
from safetensors.torch import load_file
from test_readme import code_blocks, shell_commands
from test_trainer import make
from typer.testing import CliRunner

import fan_convert
from fan_convert.cli import app, cli_args
from fan_convert.train.checkpointing import load_training_state

TESTS = Path(__file__).resolve().parent
DOC = TESTS.parent / "docs" / "fine-tune.md"
SECTION = "## Several machines (multi-node)"
HOOK = TESTS / "multinode_site"  # sitecustomize: every torchrun worker also writes its own weights
VIDEOS_PER_CLASS, EPOCHS = 6, 4  # 12 videos, global batch 4: 3 steps per epoch, 12 steps
SMALL = ["--crop", "32", "--resize", "32", "--epochs", str(EPOCHS), "--device", "cpu"]
PER_PROCESS_BATCH = 2


def documented_commands() -> tuple[str, str]:
    """The section's bash block: the command every machine runs, and its resume command."""
    lines = DOC.read_text().splitlines()
    start = lines.index(SECTION) + 1
    end = next(i for i in range(start, len(lines)) if lines[i].startswith("## ")) + 1
    (block,) = [b for b in code_blocks(DOC) if start < b.line < end and b.lang == "bash"]
    train, resume = shell_commands(block.text)
    assert resume == train + " --resume"
    return train, resume


def for_this_computer(command: str, *, fan: Path, videos: Path, out_dir: Path, port: int) -> list[str]:
    """The documented command with this computer's paths and sizes: every placeholder must be there."""
    replacements = {
        "torchrun ": f"{shlex.quote(sys.executable)} -m torch.distributed.run ",
        "--nproc-per-node 8": "--nproc-per-node 1",
        "10.0.0.1:29400": f"127.0.0.1:{port}",
        "r50.fan.safetensors": str(fan),
        "/shared/videos/": str(videos),
        "/shared/runs/r50": str(out_dir),
        "--checkpoint-every 500": "--checkpoint-every 1",
    }
    for old, new in replacements.items():
        assert command.count(old) == 1, f"docs/fine-tune.md's multi-node command no longer has {old!r}: update this test"
        command = command.replace(old, new)
    return shlex.split(command) + SMALL + ["--batch-size", str(PER_PROCESS_BATCH)]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def workspace(tmp_path_factory) -> Path:
    """``videos/{a,b}/*.mp4`` and ``fan.safetensors``: a tiny ViT-TSN (layer norm only, so that
    two processes' half batches give the gradient of the whole batch) adapted at 2 and 4 frames."""
    root = tmp_path_factory.mktemp("multinode")
    two_class_videos(root, VIDEOS_PER_CLASS, growth=2)
    torch.manual_seed(0)
    model = fan_convert.zoo.build("timm:test_vit", temporal="tsn", num_classes=2, img_size=32, patch_size=8)
    fan_convert.save(fan_convert.adapt(model, frames=(2, 4)), root / "fan.safetensors")
    return root


class Machines:
    """The torchrun commands of one launch, one per machine, each in its own process group; the
    workers' own weights go to ``weights/``."""

    def __init__(self, root: Path, name: str, command: str, workspace: Path, extra: tuple[str, ...] = ()):
        root.mkdir(parents=True, exist_ok=True)
        self.out_dir, self.weights = root / "run", root / f"weights_{name}"
        argv = for_this_computer(command, fan=workspace / "fan.safetensors", videos=workspace / "videos",
                                 out_dir=self.out_dir, port=free_port()) + list(extra)
        path = os.pathsep.join(p for p in (str(HOOK), os.environ.get("PYTHONPATH", "")) if p)
        env = {**os.environ, "PYTHONPATH": path, "FAN_TEST_RANK_WEIGHTS": str(self.weights), "OMP_NUM_THREADS": "1"}
        self.logs = [root / f"{name}_machine{m}.log" for m in (0, 1)]
        self.processes = []
        for log in self.logs:
            with open(log, "w") as out:
                self.processes.append(subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=root,
                                                       start_new_session=True))

    def output(self) -> str:
        return "\n".join(f"--- {log.name} ---\n{log.read_text()[-3000:]}" for log in self.logs)

    def wait(self, timeout: float = 300) -> list[int]:
        deadline = time.monotonic() + timeout
        try:
            return [p.wait(timeout=max(1.0, deadline - time.monotonic())) for p in self.processes]
        except subprocess.TimeoutExpired:
            self.kill()
            pytest.fail(f"the two machines did not finish in {timeout:.0f} s:\n{self.output()}")

    def kill_machine(self, m: int) -> None:
        """SIGKILL to machine ``m``'s torchrun and its worker (torchrun starts each worker in a
        session of its own), as if the machine went down."""
        agent = self.processes[m]
        for pid in [*descendants(agent.pid), agent.pid]:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        agent.wait()

    def kill(self) -> None:
        for m, p in enumerate(self.processes):
            if p.poll() is None:
                self.kill_machine(m)


def descendants(pid: int) -> list[int]:
    """The processes started by ``pid`` and by them, children first (from /proc)."""
    parents = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError, IndexError, ValueError):
                parents[int(entry.name)] = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
    found, frontier = [], [pid]
    while frontier:
        children = [child for child, parent in parents.items() if parent in frontier]
        found += children
        frontier = children
    return found


def ranks_weights(machines: Machines) -> list[dict[str, torch.Tensor]]:
    return [load_file(str(machines.weights / f"rank{r}.safetensors")) for r in (0, 1)]


def epochs_logged(out_dir: Path) -> list[int]:
    return [json.loads(line)["epoch"] for line in (out_dir / "log.jsonl").read_text().splitlines()]


@pytest.mark.slow  # three 2-machine launches: 86 s pinned to one busy core
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="finds the killed machine's worker in /proc")
def test_two_machines_train_and_resume_as_documented(workspace, tmp_path):
    train, resume = documented_commands()
    started = []
    try:
        # one process, the same global batch (2 machines x 1 process x batch 2)
        single = tmp_path / "single"
        argv = ["train", workspace / "fan.safetensors", "--data", workspace / "videos", "--out-dir", single, "--seed", "0",
                *SMALL, "--batch-size", 2 * PER_PROCESS_BATCH]
        result = CliRunner().invoke(app, cli_args([str(a) for a in argv]))
        assert result.exit_code == 0, result.output
        reference = load_file(str(single / "fan.safetensors"))

        # two machines, uninterrupted, with --force in a folder that holds a run: rank 0 alone clears it
        (tmp_path / "whole" / "run").mkdir(parents=True)
        for name in ("log.jsonl", "last.safetensors"):
            shutil.copy(single / name, tmp_path / "whole" / "run" / name)
        whole = Machines(tmp_path / "whole", "whole", train, workspace, extra=("--force",))
        started.append(whole)
        assert whole.wait() == [0, 0], whole.output()
        rank0, rank1 = ranks_weights(whole)
        assert set(rank0) == set(rank1) and all(torch.equal(rank0[n], rank1[n]) for n in rank0), "the ranks' weights differ"
        written = load_file(str(whole.out_dir / "fan.safetensors"))
        assert all(torch.equal(written[n], rank0[n]) for n in rank0)  # the file holds the ranks' final weights
        assert set(written) == set(reference)
        for name, value in written.items():
            torch.testing.assert_close(value, reference[name], atol=2e-5, rtol=1e-4, msg=name)
        assert epochs_logged(whole.out_dir) == list(range(1, EPOCHS + 1))

        # two machines, the second killed once a checkpoint exists; then both resumed
        crashed = Machines(tmp_path / "crashed", "crashed", train, workspace)
        started.append(crashed)
        checkpoint = crashed.out_dir / "last.safetensors"
        deadline = time.monotonic() + 300
        while not checkpoint.exists():
            assert time.monotonic() < deadline and all(p.poll() is None for p in crashed.processes), crashed.output()
            time.sleep(0.01)
        crashed.kill_machine(1)
        assert crashed.wait(timeout=120)[0] != 0, f"machine 0 finished although machine 1 was killed:\n{crashed.output()}"
        steps = EPOCHS * 3
        resumed_at = load_training_state(checkpoint)["step"]
        assert 1 <= resumed_at < steps, f"the kill came too late (checkpoint at step {resumed_at} of {steps})"

        resumed = Machines(tmp_path / "crashed", "resumed", resume, workspace)
        started.append(resumed)
        assert resumed.wait() == [0, 0], resumed.output()
        assert load_training_state(checkpoint)["step"] == steps
        final = load_file(str(resumed.out_dir / "fan.safetensors"))
        assert set(final) == set(written)
        assert all(torch.equal(final[n], written[n]) for n in written), f"resuming at step {resumed_at} did not continue exactly"
        rank0, rank1 = ranks_weights(resumed)
        assert all(torch.equal(rank0[n], rank1[n]) for n in rank0)
        assert epochs_logged(resumed.out_dir) == list(range(1, EPOCHS + 1))
    finally:
        for machines in started:
            machines.kill()


def test_an_epoch_logged_before_its_checkpoint_is_logged_once_after_resume(tmp_path):
    """A run killed between an epoch's log line and its checkpoint (e.g. a machine lost during
    rank 0's validation) trains that epoch again; log.jsonl holds it once, with its metrics."""
    interrupted = make(tmp_path, checkpoint_every=6)  # 6 steps per epoch: a checkpoint due at each epoch's last batch
    real_save = interrupted.save_checkpoint

    def killed_before_epoch_2s_checkpoint():
        if interrupted.epoch == 2 and interrupted.batch_in_epoch == 0:
            raise KeyboardInterrupt
        real_save()

    interrupted.save_checkpoint = killed_before_epoch_2s_checkpoint
    with pytest.raises(KeyboardInterrupt):
        interrupted.fit()
    assert epochs_logged(tmp_path) == [1, 2]
    resumed = make(tmp_path, checkpoint_every=6)
    resumed.resume(tmp_path / "last.safetensors")
    assert (resumed.epoch, resumed.batch_in_epoch) == (1, 0)  # the end of epoch 1, not its last batch
    assert epochs_logged(tmp_path) == [1]
    history = resumed.fit()
    assert epochs_logged(tmp_path) == [1, 2, 3] and [r["epoch"] for r in history] == [1, 2, 3]
    assert all("loss" in r for r in history)
