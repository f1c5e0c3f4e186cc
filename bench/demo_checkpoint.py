"""Make the plain checkpoint that ``fan-convert demo`` starts from (step 1 of the demo).

    python bench/demo_checkpoint.py            # trains, evaluates, writes fan_convert/train/demo_plain16.safetensors
    python bench/demo_checkpoint.py --check    # trains again and says whether the weights equal the shipped file

It trains TSM(tiny_resnet) at 16 frames exactly as ``fan-convert demo --from-scratch`` does
(``fan_convert.train.demo.train_plain`` with the demo's full recipe, seed 0: 3000 clips, 10
epochs; about 2.5 minutes on 2 idle CPU cores), prints its Temporal Deviation, and writes the
state dict with the recipe in the file's metadata. Training on a CPU is deterministic for a given
machine and torch build, so the same machine reproduces the file bit for bit; another CPU may
differ in the last bits and give accuracies within a few tenths of a point.

After writing, set ``PLAIN_SHA256`` in ``fan_convert/train/demo.py`` to the printed hash: the demo
refuses a file whose hash differs.
"""

from __future__ import annotations

import argparse
import sys
import time

from fan_convert.data import TemporalBenchmark
from fan_convert.train.demo import (
    EVAL_FRAMES,
    FULL,
    KEYS,
    PLAIN_CHECKPOINT,
    PLAIN_SHA256,
    load_plain,
    plain_recipe,
    same_weights,
    save_plain,
    train_plain,
)
from fan_convert.train.evaluate import evaluate


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(PLAIN_CHECKPOINT), help="where to write the checkpoint")
    parser.add_argument("--check", action="store_true", help="train and compare with the shipped file; write nothing")
    parser.add_argument("--force", action="store_true", help="overwrite --out")
    args = parser.parse_args(argv)

    seed = 0
    started = time.perf_counter()
    train = TemporalBenchmark("train", size=FULL.train_size, frames=KEYS, seed=seed).prerender()
    val = TemporalBenchmark("val", size=FULL.val_size, frames=EVAL_FRAMES, seed=seed).prerender()
    model = train_plain(train, FULL, seed)
    top1 = {t: round(r["top1"], 1) for t, r in evaluate(model, val, EVAL_FRAMES, batch_size=64).items()}
    print(f"plain top-1 by frame count: {top1} ({time.perf_counter() - started:.0f} s)")
    if args.check:
        shipped, _ = load_plain()
        same = same_weights(model, shipped)
        print("the weights equal the shipped checkpoint" if same else "the weights differ from the shipped checkpoint")
        return 0 if same else 1
    digest = save_plain(model, args.out, plain_recipe(FULL, seed), overwrite=args.force)
    print(f"wrote {args.out}\nsha256 {digest}")
    if digest != PLAIN_SHA256:
        print("set PLAIN_SHA256 in fan_convert/train/demo.py to this hash")
    return 0


if __name__ == "__main__":
    sys.exit(main())
