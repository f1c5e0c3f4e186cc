"""Run by tests/test_ddp.py under torchrun: two CPU processes (gloo) fine-tune one FAN."""

import sys

import torch
import torch.distributed as dist

import fan_convert
from fan_convert.train.trainer import TrainConfig, Trainer

sys.path.insert(0, sys.argv[2])
from test_trainer import FRAMES, Toy3D, ToyClips  # noqa: E402

torch.manual_seed(0)
fan = fan_convert.adapt(Toy3D(), frames=FRAMES)
trainer = Trainer(fan, ToyClips(), TrainConfig(frames=FRAMES, epochs=2, batch_size=4, lr=0.05, progress=False, out_dir=sys.argv[1]))
assert trainer.world == 2
trainer.fit()
flat = torch.cat([p.detach().flatten() for p in trainer.model.parameters()])
gathered = [torch.zeros_like(flat) for _ in range(2)]
dist.all_gather(gathered, flat)
assert torch.equal(gathered[0], gathered[1]), "ranks diverged"
print(f"rank {trainer.rank}: steps {trainer.step}, loss {trainer.history[-1]['loss']:.4f}")
dist.destroy_process_group()
