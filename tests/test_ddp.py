import pathlib
import subprocess
import sys

TESTS = pathlib.Path(__file__).parent


def test_two_process_cpu_training_with_torchrun(tmp_path):
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
               str(TESTS / "ddp_worker.py"), str(tmp_path), str(TESTS)]
    result = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "rank 0: steps 6" in result.stdout and "rank 1: steps 6" in result.stdout  # 24 clips / 2 ranks / batch 4
    assert (tmp_path / "last.safetensors").exists() and (tmp_path / "log.jsonl").read_text().count("\n") == 2
