"""Training throughput per framework and input pipeline (a benchmark, not a test).

Each (architecture, batch, framework, pipeline) trains in its own fresh interpreter, so no
two frameworks share a process (thread pools, allocators, XLA flags). Steady-state images/s
leaves the first step (trace + compile) and validation out; compile time is printed apart.

    python benchmarks/train_throughput.py                   # the issue's two cases
    python benchmarks/train_throughput.py --samples 1024 --epochs 2 --frameworks jax,pytorch
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
CASES = [("pathmnist_cnn", 32), ("blood_resnet", 128)]

from engines.frameworks import FRAMEWORKS  # the table imports no framework
from engines.training.config import PRECISIONS


def worker(job: dict) -> dict:
    os.environ.update(FRAMEWORKS[job["framework"]].environment)  # before the framework's import
    from engines.datasets.synthetic import make_synthetic
    from engines.runs.scenario import run_framework
    from engines.training.config import TrainConfig

    # PathMNIST's shape: 28x28 RGB, 9 classes.
    ds = make_synthetic(28, channels=3, classes=9, seed=0, train=job["samples"],
                        val=max(job["batch_size"], 64), test=64)
    cfg = TrainConfig(job["arch"], epochs=job["epochs"], batch_size=job["batch_size"],
                      pipeline=job["pipeline"], compile=job["compile"],
                      precision=job["precision"], seed=0, log_every_steps=10**6)
    r = run_framework(job["framework"], ds, cfg, evaluate=False)
    t = r.train
    return {**job, "status": r.status, "message": r.message,
            "images_per_s": t.images_per_s if t else None, "compile_time_s": t.compile_time_s if t else None,
            "input_pipeline": t.input_pipeline if t else None, "versions": r.environment.versions}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--samples", type=int, default=2048, help="training images per epoch")
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--frameworks", default=",".join(FRAMEWORKS))
    ap.add_argument("--pipelines", default="idiomatic,device")
    ap.add_argument("--cases", default=",".join(f"{a}:{b}" for a, b in CASES),
                    help="arch:batch,... (default: pathmnist_cnn:32,blood_resnet:128)")
    ap.add_argument("--precision", default="fp32", choices=PRECISIONS)
    ap.add_argument("--no-compile", dest="compile", action="store_false")
    ap.add_argument("--json", action="store_true", help="print the rows as JSON")
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.worker:
        print("RESULT " + json.dumps(worker(json.loads(args.worker))), flush=True)
        return 0

    rows = []
    for case in args.cases.split(","):
        arch, batch = case.split(":")
        for fw in args.frameworks.split(","):
            for pipe in args.pipelines.split(","):
                job = {"arch": arch, "batch_size": int(batch), "framework": fw,
                       "pipeline": pipe, "samples": args.samples, "epochs": args.epochs,
                       "compile": args.compile, "precision": args.precision}
                t0 = time.time()
                p = subprocess.run([sys.executable, __file__, "--worker", json.dumps(job)],
                                   capture_output=True, text=True, cwd=ROOT)
                line = [out for out in p.stdout.splitlines() if out.startswith("RESULT ")]
                row = json.loads(line[-1][7:]) if line else {
                    **job, "status": "crashed", "images_per_s": None, "compile_time_s": None,
                    "message": (p.stderr.strip().splitlines() or ["no output"])[-1]}
                row["wall_s"] = time.time() - t0
                rows.append(row)
                print(f"  {arch} b{batch} {fw:10s} {pipe:9s} -> "
                      f"{row['images_per_s'] or float('nan'):8.1f} img/s "
                      f"({row['status']}{': ' + row['message'] if row.get('message') else ''})",
                      file=sys.stderr, flush=True)
    if args.json:
        print(json.dumps(rows, indent=1))
        return 0
    print(f"\nTraining throughput, 28x28x3 synthetic ({args.samples} images/epoch, "
          f"{args.epochs} epochs, precision {args.precision}, compile {args.compile})")
    print(f"{'arch':14s} {'batch':>5s} {'framework':10s} {'pipeline':9s} {'img/s':>9s} "
          f"{'compile s':>9s} {'vs best':>7s}")
    for case in args.cases.split(","):
        arch, batch = case.split(":")
        sub = [r for r in rows if r["arch"] == arch and r["batch_size"] == int(batch)]
        best = max((r["images_per_s"] or 0) for r in sub) or None
        for r in sub:
            ips = r["images_per_s"]
            ratio = f"{ips / best:7.2f}" if ips and best else "      -"
            comp = f"{r['compile_time_s']:9.2f}" if r.get("compile_time_s") is not None else "        -"
            print(f"{arch:14s} {int(batch):5d} {r['framework']:10s} {r['pipeline']:9s} "
                  f"{(f'{ips:9.1f}' if ips else '        -')} {comp} {ratio}"
                  + ("" if r["status"] == "ok" else f"  [{r['status']}: {r.get('message')}]"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
