"""The all-frame-counts artifact against specialized ones: export ok?, file size, latency per T.

For each model: the FAN (keys 4/8/16, every key's norms and scales perturbed as if fine-tuned) is
exported once with a dynamic frame axis (``fan_convert.export``, .pt2 and .onnx, verified at
every key and untrained T) and once per T specialized (``export_verified``); then, in one process,
each artifact's latency at each T is timed in interleaved rounds (dynamic and specialized in turn,
same clip), medians reported with their ratio. onnxruntime CPU and torch (``torch.export.load``),
one thread each unless --threads.

    python bench/dynamic_export.py timm:resnet18 --temporal tsm --size 64 --json out.json
    python bench/dynamic_export.py torchvision:r3d_18 --size 64 --latency-frames 4 8 16 6
    python bench/dynamic_export.py hf:videomae --catalog --size 32
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path

import torch

import fan_convert
from fan_convert.deploy import export_verified, interleaved_ms, make_clip
from fan_convert.deploy.dynamic import export as export_dynamic
from fan_convert.testing import as_if_fine_tuned
from fan_convert.zoo import build
from fan_convert.zoo.catalog import ZOO


def perturbed_fan(spec: str, keys, temporal: str | None, num_classes: int, catalog: bool = False):
    """The FAN of ``spec`` with every key's norms and scales perturbed; ``catalog``: built as the
    zoo catalog builds it (its kwargs, e.g. a tiny transformers config, and its training T)."""
    torch.manual_seed(0)
    kwargs = {"num_classes": num_classes} | ({"temporal": temporal} if temporal else {})
    trained_at = None
    if catalog:
        entry = next(e for e in ZOO if e.spec == spec)
        kwargs, trained_at = entry.kwargs, entry.trained_at
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fan = fan_convert.adapt(build(spec, **kwargs).eval(), frames=keys, trained_at=trained_at).eval()
    return as_if_fine_tuned(fan, std=0.05, statistics=0.3)


def runner(path: Path, threads: int):
    if path.suffix == ".onnx":
        import onnxruntime

        opts = onnxruntime.SessionOptions()
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
        session = onnxruntime.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
        name = session.get_inputs()[0].name
        return lambda x: session.run(None, {name: x.numpy()})
    module = torch.export.load(str(path)).module()
    return lambda x: module(x)


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("spec")
    ap.add_argument("--temporal", default=None)
    ap.add_argument("--catalog", action="store_true", help="build SPEC as the zoo catalog does (e.g. hf:videomae's tiny config)")
    ap.add_argument("--keys", type=int, nargs="+", default=[4, 8, 16])
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--classes", type=int, default=10)
    ap.add_argument("--formats", nargs="+", default=["onnx", "pt2"])
    ap.add_argument("--latency-frames", type=int, nargs="*", default=None, help="default: the keys and 6")
    ap.add_argument("--rounds", type=int, default=15)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    fan = perturbed_fan(args.spec, tuple(args.keys), args.temporal, args.classes, args.catalog)
    lat_ts = args.latency_frames if args.latency_frames is not None else sorted(set(args.keys) | {6})
    report = {"model": args.spec + (f" ({args.temporal})" if args.temporal else ""), "keys": args.keys, "size": args.size,
              "threads": args.threads, "torch": torch.__version__, "formats": {}}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        for fmt in args.formats:
            row: dict = {}
            report["formats"][fmt] = row
            started = time.perf_counter()
            try:
                dyn = export_dynamic(fan, tmp / f"all.{fmt}", input_size=args.size)
            except Exception as err:  # a bench row, not a crash: record why
                row["ok"] = False
                row["error"] = f"{type(err).__name__}: {str(err).splitlines()[0][:300]}"
                print(f"{fmt}: {row['error']}", flush=True)
                continue
            row.update(ok=True, bytes=dyn.bytes, max_diff=dyn.max_diff, checked=sorted(dyn.checked), skipped=dyn.skipped,
                       export_s=round(time.perf_counter() - started, 1))
            special = {}
            for t in sorted(set(args.keys) | set(lat_ts)):
                special[t] = export_verified(fan, t, tmp / f"t{t}.{fmt}", input_size=args.size)
            one = special[args.keys[-1]].bytes
            row.update(specialized_bytes=one, size_ratio=dyn.bytes / one,
                       sum_of_keys_bytes=sum(special[k].bytes for k in args.keys))
            print(f"{fmt}: one artifact {dyn.bytes:,} B = {dyn.bytes / one:.4f} x one specialized ({one:,} B), "
                  f"vs {row['sum_of_keys_bytes']:,} B for {len(args.keys)} files; checked at T={row['checked']} "
                  f"max |diff| {dyn.max_diff:.1e}", flush=True)
            dyn_run = runner(dyn.path, args.threads)
            latency = {}
            for t in lat_ts:
                x = make_clip(fan, t, args.size, seed=100 + t)
                spec_run = runner(special[t].path, args.threads)
                with torch.inference_mode():
                    times = interleaved_ms({"dynamic": lambda d=dyn_run, x=x: d(x), "specialized": lambda s=spec_run, x=x: s(x)},
                                           rounds=args.rounds, warmup=2)
                d, s = statistics.median(times["dynamic"]), statistics.median(times["specialized"])
                latency[t] = {"dynamic_ms": round(d, 2), "specialized_ms": round(s, 2), "ratio": round(d / s, 3)}
                print(f"  {fmt} T={t}: dynamic {d:.1f} ms, specialized {s:.1f} ms, ratio {d / s:.3f}", flush=True)
            row["latency"] = latency
    if args.json:
        args.json.write_text(json.dumps(report, indent=2) + "\n")
    return report


if __name__ == "__main__":
    main(sys.argv[1:])
