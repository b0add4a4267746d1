"""Do the four frameworks reach the same test accuracy on real data?

For each dataset x architecture x framework, trains over several seeds with the same
config (Adam 1e-3, same initial weights per seed, the shared example order) and prints the
mean +- std of test accuracy and AUC, and the largest gap between frameworks. One worker
process per framework runs all of that framework's jobs (accuracy, not timing, is measured
here, so they may share a process).

    LAB_DATA_PATH=../shared/data python benchmarks/accuracy_agreement.py \
        --epochs 2 --schedule cosine --fashion-train 4000 --fashion-test 5000 --seeds 0,1,2

blood_resnet wants --epochs 5 or more: its BatchNorm uses Keras's momentum 0.99 (the
paper's), and after a few hundred steps the moving statistics still lag the weights, so
test accuracy swings by 10+ points from seed to seed in every framework alike (AUC does
not) and the comparison measures that noise instead of the frameworks.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from engines.frameworks import FRAMEWORKS  # the table imports no framework

# MedMNIST v2, ResNet-18 (28 px): ACC / AUC
BASELINES = {"pneumoniamnist": (0.854, 0.944)}


def _load(name: str, subset: int | None, test_subset: int | None, seed: int):
    sys.path.insert(0, ROOT)
    from engines.datasets import load_dataset
    from engines.datasets.base import Split

    # Fashion-MNIST comes from Debian's dataset-fashion-mnist, PneumoniaMNIST from
    # LAB_DATA_PATH: nothing is downloaded.
    ds = load_dataset(name, 28, seed=seed, download_missing=False)
    # A subset keeps the CPU run short; fixed (seed 1234), the same for all frameworks.
    rng = np.random.default_rng(1234)

    def cut(split, n):
        if n is None or n >= len(split):
            return split
        keep = np.sort(rng.choice(len(split), n, replace=False))
        return Split(split.x[keep], split.y[keep])

    import dataclasses
    return dataclasses.replace(ds, train=cut(ds.train, subset), val=cut(ds.val, test_subset),
                               test=cut(ds.test, test_subset))


def worker(job: dict) -> None:
    os.environ.update(FRAMEWORKS[job["framework"]].environment)  # before the framework's import
    from engines.runs.scenario import run_framework
    from engines.training.config import TrainConfig

    cache = {}
    for ds_name in job["datasets"]:
        if ds_name not in cache:
            cache[ds_name] = _load(ds_name, job["train_subset"].get(ds_name),
                                   job["test_subset"].get(ds_name), 0)
        ds = cache[ds_name]
        for arch in job["archs"]:
            for seed in job["seeds"]:
                cfg = TrainConfig(arch, epochs=job["epochs"], batch_size=job["batch_size"],
                                  optimizer="adam", learning_rate=1e-3, seed=seed,
                                  lr_schedule=job["schedule"], pipeline="device",
                                  precision="fp32", compile=True, log_every_steps=10**6)
                t0 = time.time()
                r = run_framework(job["framework"], ds, cfg)
                ev = r.evaluation
                print("RESULT " + json.dumps({
                    "dataset": ds_name, "arch": arch, "framework": job["framework"],
                    "seed": seed, "status": r.status, "message": r.message,
                    "accuracy": ev.accuracy if ev else None, "auc": ev.auc if ev else None,
                    "train_n": len(ds.train), "test_n": len(ds.test),
                    "wall_s": time.time() - t0}), flush=True)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--datasets", default="pneumoniamnist,fashion_mnist")
    ap.add_argument("--archs", default="blood_resnet,fan_arch1")
    ap.add_argument("--frameworks", default=",".join(FRAMEWORKS))
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--schedule", default="step", choices=["constant", "cosine", "step"])
    ap.add_argument("--fashion-train", type=int, default=10000,
                    help="Fashion-MNIST training subset (0 = all 55,000)")
    ap.add_argument("--fashion-test", type=int, default=0, help="test/val subset (0 = all)")
    ap.add_argument("--parallel", type=int, default=1, help="framework workers at once")
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.worker:
        worker(json.loads(args.worker))
        return 0

    job = {"datasets": args.datasets.split(","), "archs": args.archs.split(","),
           "seeds": [int(s) for s in args.seeds.split(",")], "epochs": args.epochs,
           "batch_size": args.batch_size, "schedule": args.schedule,
           "train_subset": {"fashion_mnist": args.fashion_train or None},
           "test_subset": {"fashion_mnist": args.fashion_test or None}}
    # Each worker adds its framework's own variables (the framework table's), before its import.
    env = {**os.environ, "LAB_DATA_PATH": os.environ.get("LAB_DATA_PATH", "/work/shared/data")}
    rows, procs, pending = [], [], list(args.frameworks.split(","))
    t0 = time.time()
    while pending or procs:
        while pending and len(procs) < args.parallel:
            fw = pending.pop(0)
            procs.append(subprocess.Popen(
                [sys.executable, __file__, "--worker", json.dumps({**job, "framework": fw})],
                stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, cwd=ROOT, env=env))
        p = procs.pop(0)
        for line in p.stdout:
            if line.startswith("RESULT "):
                r = json.loads(line[7:])
                rows.append(r)
                print(f"  {r['dataset']} {r['arch']} {r['framework']} seed {r['seed']}: "
                      f"acc {r['accuracy']} auc {r['auc']} ({r['status']}, {r['wall_s']:.0f}s)"
                      + (f" {r['message']}" if r['message'] else ""), file=sys.stderr, flush=True)
        p.wait()

    print(f"\nTest accuracy over seeds {args.seeds} ({args.epochs} epochs, batch "
          f"{args.batch_size}, Adam 1e-3, lr schedule {args.schedule}, fp32, device "
          f"pipeline; Fashion-MNIST train subset {args.fashion_train or 'all'}; "
          f"wall {time.time() - t0:.0f} s)")
    print(f"{'dataset':15s} {'arch':13s} {'framework':10s} {'n':>5s} {'acc mean±std':>15s} "
          f"{'auc mean±std':>15s}")
    for ds_name in job["datasets"]:
        for arch in job["archs"]:
            means = {}
            for fw in args.frameworks.split(","):
                rs = [r for r in rows if (r["dataset"], r["arch"], r["framework"]) == (ds_name, arch, fw)
                      and r["status"] == "ok"]
                if not rs:
                    print(f"{ds_name:15s} {arch:13s} {fw:10s}   no successful run")
                    continue
                acc = [r["accuracy"] for r in rs]
                auc = [r["auc"] for r in rs if r["auc"] is not None]
                sd = lambda v: statistics.stdev(v) if len(v) > 1 else 0.0
                means[fw] = statistics.mean(acc)
                print(f"{ds_name:15s} {arch:13s} {fw:10s} {len(rs):5d} "
                      f"{statistics.mean(acc):8.4f}±{sd(acc):.4f} "
                      f"{(statistics.mean(auc) if auc else float('nan')):8.4f}±{sd(auc):.4f}")
            if len(means) > 1:
                gap = 100 * (max(means.values()) - min(means.values()))
                print(f"{'':15s} {arch:13s} largest gap between frameworks: {gap:.2f} points "
                      f"({'within' if gap <= 2 else 'OVER'} 2)")
        if ds_name in BASELINES:
            a, u = BASELINES[ds_name]
            print(f"{ds_name:15s} MedMNIST ResNet-18 (100 epochs): ACC {a} AUC {u}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
