"""Fine-tune a FAN on several processes with torchrun (GPUs or hosts; here CPU with gloo).

    torchrun --nproc_per_node 2 examples/torchrun_ddp.py
    python examples/torchrun_ddp.py          # launches the line above for you

The Trainer sees WORLD_SIZE, joins the process group (nccl on GPUs, gloo on CPU), wraps the
model in DistributedDataParallel and shards every epoch across ranks; only rank 0 writes.
"""

import os
import subprocess
import sys
import tempfile

import torch

import fan_convert
from fan_convert.data import TemporalBenchmark
from fan_convert.train.trainer import TrainConfig, Trainer
from fan_convert.zoo import build

if "WORLD_SIZE" not in os.environ:  # not under torchrun: start two CPU processes
    out = tempfile.mkdtemp(prefix="fan-ddp-")
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", __file__, out]
    sys.exit(subprocess.call(command))

torch.set_num_threads(1)
frames = (4, 8, 16)
torch.manual_seed(0)  # every rank builds the same model; DDP also broadcasts rank 0's weights
model = build("fan_convert:tiny_resnet", temporal="tsm", num_classes=len(TemporalBenchmark.CLASSES))
fan = fan_convert.adapt(model, frames=frames)
data = TemporalBenchmark(split="train", size=96, frames=frames, train=True)
config = TrainConfig(frames=frames, epochs=1, batch_size=8, lr=0.05, out_dir=sys.argv[1], progress=False)
trainer = Trainer(fan, data, config)
history = trainer.fit()
print(f"rank {trainer.rank}/{trainer.world}: {trainer.step} steps, loss {history[-1]['loss']:.3f}")
if trainer.rank == 0:
    print("rank 0 wrote", fan_convert.save(trainer.model, os.path.join(sys.argv[1], "fan.safetensors"), overwrite=True))
