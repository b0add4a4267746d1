"""Inference across frameworks: framework × architecture × precision × batch size ->
img/s, p50/p95 latency, peak memory, J/1000 images (a benchmark, not a test).

Every (framework, architecture, precision) is one inference-only job through the real
harness (engines.runs.launcher.run_job): a fresh worker with its environment, canonical
initial weights, the sizes in increasing order, OOM a data point. Inputs are synthetic
RGB images; 1000 classes as in ImageNet.

    python benchmarks/inference_sweep.py                     # the issue's grid (for a GPU)
    python benchmarks/inference_sweep.py --resolution 64 --batch-sizes 1,8 --iters 10 \\
        --archs mobilenet_v3_small,resnet50 --frameworks pytorch,jax --precisions fp32
"""
from __future__ import annotations

import argparse
import json
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
ARCHS = ("resnet50", "mobilenet_v3_small", "efficientnet_b0", "vit_b_16")


def _csv(text, cast=str):
    return tuple(cast(x.strip()) for x in text.split(",") if x.strip())


def _fmt(v, spec, scale=1.0):
    return "-" if v is None else format(v * scale, spec)


def main(argv=None) -> int:
    from engines.training.config import PRECISIONS, XLA_AUTOTUNE_LEVELS

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--frameworks", default="pytorch,jax")
    ap.add_argument("--archs", default=",".join(ARCHS))
    ap.add_argument("--precisions", default=",".join(PRECISIONS))
    ap.add_argument("--batch-sizes", default="1,8,32,128")
    ap.add_argument("--resolution", type=int, default=224)
    ap.add_argument("--warmup", type=int, default=20)
    ap.add_argument("--iters", type=int, default=100)
    ap.add_argument("--no-compile", dest="compile", action="store_false")
    ap.add_argument("--xla-autotune", type=int, choices=XLA_AUTOTUNE_LEVELS, default=None)
    ap.add_argument("--timeout", type=float, default=1800, help="seconds per job")
    ap.add_argument("--json", help="also write every result to this file")
    args = ap.parse_args(argv)

    from engines.runs.launcher import run_job
    from engines.runs.result import clean
    from engines.runs.spec import RunSpec

    sizes = _csv(args.batch_sizes, int)
    rows, results = [], []
    for arch in _csv(args.archs):
        for precision in _csv(args.precisions):
            # One request; each framework's job keeps only the toggles that apply to it.
            request = RunSpec(dataset="synthetic", resolution=args.resolution, architecture=arch,
                              frameworks=_csv(args.frameworks), batch_sizes=sizes, epochs=0, inference_only=True,
                              precision=precision, compile=args.compile, xla_autotune=args.xla_autotune,
                              warmup_iters=args.warmup, measure_iters=args.iters,
                              dataset_options={"train": 8, "val": 8, "test": 64, "classes": 1000, "channels": 3})
            for fw in request.frameworks:
                result = run_job(request.job(fw, 0), timeout_s=args.timeout)
                results.append(result)
                r = result.to_dict()
                print(f"# {fw} {arch} {precision}: {r['status']}"
                      + (f" ({r['message'].splitlines()[0]})" if r["message"] else ""), file=sys.stderr)
                device = (r.get("environment") or {}).get("device", "?")
                for e in r["inference"] or [{"batch_size": "-", "status": r["status"]}]:
                    rows.append((fw, arch, precision, e["batch_size"], e["status"],
                                 _fmt(e.get("throughput_images_per_s"), ",.1f"),
                                 _fmt((e.get("latency_ms") or {}).get("p50"), ".2f"),
                                 _fmt((e.get("latency_ms") or {}).get("p95"), ".2f"),
                                 _fmt(e.get("peak_memory_bytes"), ",.0f", 2**-20),
                                 _fmt(e.get("energy_j_per_1000_images"), ".1f"),
                                 _fmt(e.get("first_call_s"), ".2f"), device))
    head = ("framework", "arch", "precision", "batch", "status", "img/s", "p50 ms", "p95 ms",
            "peak MiB", "J/1000", "first s", "device")
    widths = [max(len(str(x)) for x in col) for col in zip(head, *rows)]
    for row in (head, *rows):
        print("  ".join(str(x).rjust(w) if i >= 3 else str(x).ljust(w) for i, (x, w) in enumerate(zip(row, widths))))
    print("peak MiB: framework allocator peak on a GPU, process peak RSS on the CPU; "
          "J/1000: NVML energy counter ('-': not measured)")
    if args.json:
        with open(args.json, "w") as f:
            json.dump([clean(r.to_dict()) for r in results], f, indent=1)
    return 0 if all(r.status == "ok" for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
