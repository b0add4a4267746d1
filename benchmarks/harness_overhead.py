"""What the harness costs: its throughput against a bare hand-written loop (a benchmark).

The same built model, the same device-resident input batches, the same process: the
harness (trackers.timing.measure on engine.inference_fn: per-call synchronization and
clock reads, input rotation)
against the loop a user would write (no per-call sync, one clock read around the whole
loop, one sync at the end). Rounds alternate between the two so that drift on a shared
machine hits both; the best round of each is compared. The harness passes at ≥ 0.97.

    python benchmarks/harness_overhead.py                        # GPU: resnet50 @224, batch 128
    python benchmarks/harness_overhead.py --framework jax        # CPU: cifar_cnn @32, batch 32
    python benchmarks/harness_overhead.py --framework pytorch --no-compile
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
PASS_RATIO = 0.97
IMAGENET_ARCHS = ("resnet50", "mobilenet_v3_small", "efficientnet_b0", "vit_b_16")

from benchmarks.bare_loops import bare_loop  # one bare loop per framework, shared
from engines.frameworks import FRAMEWORKS  # the table imports no framework
from engines.training.config import PRECISIONS


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--framework", default="pytorch", choices=list(FRAMEWORKS))
    ap.add_argument("--arch", help="default: resnet50 on a GPU, cifar_cnn on the CPU")
    ap.add_argument("--resolution", type=int, help="default: 224 on a GPU, 32 on the CPU")
    ap.add_argument("--batch-size", type=int, help="default: 128 on a GPU, 32 on the CPU")
    ap.add_argument("--iters", type=int, default=30, help="measured calls per round")
    ap.add_argument("--warmup", type=int, default=10)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--precision", default="fp32", choices=PRECISIONS)
    ap.add_argument("--no-compile", dest="compile", action="store_false")
    args = ap.parse_args(argv)

    from engines.runs import workerenv as harness_env

    job = {"frameworks": [args.framework], "precision": args.precision, "compile": args.compile,
           "xla_autotune": None}
    harness_env.apply(job)  # as a worker would, before the framework import
    from engines import machine as environment
    from engines.frameworks import get_engine
    from engines.trackers.timing import measure
    from engines.training.config import TrainConfig

    gpu = environment.fingerprint()["gpu"]
    arch = args.arch or ("resnet50" if gpu else "cifar_cnn")
    res = args.resolution or (224 if gpu else 32)
    bs = args.batch_size or (128 if gpu else 32)
    classes = 1000 if arch in IMAGENET_ARCHS else 10
    engine = get_engine(args.framework, TrainConfig(arch, precision=args.precision, compile=args.compile))
    engine.build(arch, res, 3, classes)  # the framework's own initial weights: timing does not care
    call = engine.inference_fn()
    inputs = engine.inference_inputs(bs)
    bare = bare_loop(engine, inputs)
    measure(call, engine.sync, inputs, batch_size=bs, warmup=args.warmup, iters=3)  # compile the harness's callable

    harness_tp, bare_tp = [], []
    for _ in range(args.rounds):
        m = measure(call, engine.sync, inputs, batch_size=bs, warmup=args.warmup, iters=args.iters)
        harness_tp.append(m.throughput_images_per_s)
        bare_tp.append(bs * args.iters / bare(args.iters))
    ratio = max(harness_tp) / max(bare_tp)
    print(f"harness overhead: {args.framework} {arch} @{res}px batch {bs}, {args.precision}, "
          f"compile {'on' if args.compile else 'off'}, device {engine.device()}, "
          f"{args.rounds} alternating rounds x {args.iters} calls")
    print(f"{'loop':<10} {'best img/s':>12} {'median img/s':>13}")
    print(f"{'bare':<10} {max(bare_tp):>12.1f} {statistics.median(bare_tp):>13.1f}")
    print(f"{'harness':<10} {max(harness_tp):>12.1f} {statistics.median(harness_tp):>13.1f}")
    verdict = "PASS" if ratio >= PASS_RATIO else "FAIL"
    print(f"ratio harness/bare (best rounds): {ratio:.3f}  [{verdict}: needs >= {PASS_RATIO}]")
    return 0 if ratio >= PASS_RATIO else 1


if __name__ == "__main__":
    sys.exit(main())
