"""What recomputing the BatchNorm statistics does to short runs, in every framework.

For each dataset x framework x epoch count: train the architecture with the lab's
defaults (RunSpec's: Adam at the architecture's learning rate, its batch size, the
shared initial weights and example order), evaluate the test split with the running
statistics training left, then recompute them over the training split
(engines.training.batchnorm, what a run does by default) and evaluate the same weights
again. Both figures come from one training, so the difference is the statistics alone.
One worker process per framework, its environment set from the framework table before
the framework is imported.

    LAB_DATA_PATH=../shared/data nice -n 10 python benchmarks/batchnorm_recompute.py \\
        --datasets breastmnist,pneumoniamnist --epochs 5 --json /tmp/bn.json

Prints a markdown table beside MedMNIST v2's ResNet-18 (28 px) baselines.
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

from engines.frameworks import FRAMEWORKS, label

# MedMNIST v2, ResNet-18 (28 px), 100 epochs: AUC / ACC (DESIGN.md)
BASELINES = {"pathmnist": (0.983, 0.907), "bloodmnist": (0.998, 0.958),
             "pneumoniamnist": (0.944, 0.854), "breastmnist": (0.901, 0.863)}


def worker(job: dict) -> None:
    from engines.runs import workerenv
    from engines.runs.spec import RunSpec

    base = RunSpec(dataset=job["datasets"][0], resolution=job["size"], architecture=job["arch"],
                   frameworks=(job["framework"],), seed=job["seed"], recompute_batchnorm=False)
    workerenv.apply(base.as_job())  # before the framework's first import

    from engines.datasets import load_dataset
    from engines.frameworks import get_engine
    from engines.runs.scenario import build
    from engines.training import batchnorm

    for ds_name in job["datasets"]:
        ds = load_dataset(ds_name, job["size"], seed=job["seed"], download_missing=False)
        for epochs in job["epochs"]:
            spec = base.replace(dataset=ds_name, epochs=epochs)
            config = spec.train_config().replace(log_every_steps=10**6)
            engine = get_engine(job["framework"], config)
            build(engine, config, ds, canonical=True)
            t0 = time.time()
            train = engine.train(ds)
            train_s = time.time() - t0
            without = engine.evaluate(ds)
            last = train["epochs"][-1]
            bn = batchnorm.recompute(engine, ds, config, (last["val_loss"], last["val_accuracy"]))
            with_ = engine.evaluate(ds)
            print("RESULT " + json.dumps({
                "dataset": ds_name, "framework": job["framework"], "epochs": epochs, "seed": job["seed"],
                "train_accuracy": last["accuracy"], "val_accuracy_before": bn.val_accuracy_before,
                "val_accuracy_after": bn.val_accuracy_after,
                "auc_without": without["auc"], "acc_without": without["accuracy"],
                "auc_with": with_["auc"], "acc_with": with_["accuracy"],
                "train_s": train_s, "recompute_s": bn.time_s, "device": engine.device()}), flush=True)


def table(rows: list[dict]) -> str:
    lines = ["| dataset | epochs | framework | test AUC without | test AUC with | test ACC without | "
             "test ACC with | val ACC before → after | MedMNIST v2 AUC / ACC |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in sorted(rows, key=lambda r: (r["dataset"], r["epochs"], list(FRAMEWORKS).index(r["framework"]))):
        auc, acc = BASELINES.get(r["dataset"], (None, None))
        base = f"{auc} / {acc}" if auc else "—"
        lines.append(f"| {r['dataset']} | {r['epochs']} | {label(r['framework'])} | {r['auc_without']:.3f} | "
                     f"**{r['auc_with']:.3f}** | {r['acc_without']:.3f} | **{r['acc_with']:.3f}** | "
                     f"{r['val_accuracy_before']:.3f} → {r['val_accuracy_after']:.3f} | {base} |")
    return "\n".join(lines)


def spread(rows: list[dict]) -> str:
    """Per dataset and epochs: the lowest AUC with recomputed statistics and the largest gap
    between frameworks (the goal: >= 0.85 and within 0.03)."""
    out = []
    for key in sorted({(r["dataset"], r["epochs"]) for r in rows}):
        aucs = [r["auc_with"] for r in rows if (r["dataset"], r["epochs"]) == key]
        out.append(f"{key[0]}, {key[1]} epochs: AUC with recomputed statistics {min(aucs):.3f}..{max(aucs):.3f} "
                   f"(gap {max(aucs) - min(aucs):.3f}) over {len(aucs)} frameworks")
    return "\n".join(out)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--datasets", default="breastmnist,pneumoniamnist")
    ap.add_argument("--frameworks", default=",".join(FRAMEWORKS))
    ap.add_argument("--arch", default="blood_resnet")
    ap.add_argument("--size", type=int, default=28)
    ap.add_argument("--epochs", default="5", help="comma-separated epoch counts, each a training of its own")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", help="write the rows here")
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        worker(json.loads(args.worker))
        return 0
    rows = []
    for fw in args.frameworks.split(","):
        job = {"framework": fw, "datasets": args.datasets.split(","), "arch": args.arch, "size": args.size,
               "epochs": [int(e) for e in args.epochs.split(",")], "seed": args.seed}
        t0 = time.time()
        proc = subprocess.run([sys.executable, __file__, "--worker", json.dumps(job)], capture_output=True,
                              text=True, cwd=ROOT)
        got = [json.loads(line[7:]) for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
        if proc.returncode != 0 or not got:
            print(f"{fw}: worker failed ({proc.returncode}):\n{proc.stderr[-3000:]}", file=sys.stderr)
        rows += got
        print(f"{fw}: {len(got)} row(s) in {time.time() - t0:.0f} s", file=sys.stderr)
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump(rows, f, indent=1)
    print(table(rows))
    print()
    print(spread(rows))
    return 0 if rows else 1


if __name__ == "__main__":
    sys.exit(main())
