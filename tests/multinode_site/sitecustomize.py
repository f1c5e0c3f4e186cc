"""Imported at start-up by the Python processes of tests/test_multinode.py, which puts this folder
on PYTHONPATH, so that the torchrun commands stay exactly as docs/fine-tune.md writes them.

In a torchrun worker (RANK is set) and only when FAN_TEST_RANK_WEIGHTS names a folder,
``Trainer.fit`` also writes this process's parameters to ``<folder>/rank<RANK>.safetensors``
once it returns: the CLI writes rank 0's model only, and the test checks that every rank ends
with the same weights. Anywhere else it does nothing.
"""

import os

if os.environ.get("FAN_TEST_RANK_WEIGHTS") and "RANK" in os.environ:
    from pathlib import Path

    from safetensors.torch import save_file

    from fan_convert.train.trainer import Trainer

    _fit = Trainer.fit

    def _fit_and_save_rank_weights(self):
        history = _fit(self)
        folder = Path(os.environ["FAN_TEST_RANK_WEIGHTS"])
        folder.mkdir(parents=True, exist_ok=True)
        weights = {name: p.detach().cpu().contiguous() for name, p in self.model.named_parameters()}
        save_file(weights, str(folder / f"rank{self.rank}.safetensors"))
        return history

    Trainer.fit = _fit_and_save_rank_weights
