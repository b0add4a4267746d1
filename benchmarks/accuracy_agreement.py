"""Do the frameworks reach the same test accuracy on real data, with dropout on and off?

For each dataset x architecture x dropout setting x arm, trains over several seeds with the
same config (the architecture's paper defaults unless overridden: optimizer, learning
rate, batch size, class weighting; the same initial weights per seed, the shared example
order) and prints, per arm, mean +- sd of test accuracy, AUC and macro-F1 over the seeds,
the per-epoch training loss (mean over seeds), and Welch's test (engines.analysis.stats)
of each arm against each other. An arm is a framework of the framework table, or
"pytorch:eager" (torch.compile off), so the compiler can be told apart from the framework
(issue 20: torch.compile zeroed pathmnist_cnn's convolution gradients in torch 2.13).

One worker process per arm runs all of its jobs (accuracy, not timing, is measured here).
Each finished run is appended to --out as a JSON line at once, so a long grid can be read
while it runs, and a grid cut short resumes there (the runs already in --out are skipped):

    LAB_DATA_PATH=../shared/data LAB_CPU_THREADS=1 python benchmarks/accuracy_agreement.py \\
        --datasets breastmnist --archs pathmnist_cnn --epochs 12 --seeds 0,1,2,3,4 \\
        --arms keras,tensorflow,pytorch,pytorch:eager,jax --dropout on,off --out runs.jsonl
    python benchmarks/accuracy_agreement.py --summarize runs.jsonl

blood_resnet wants --epochs 5 or more: its BatchNorm uses Keras's momentum 0.99 (the
paper's), and after a few hundred steps the moving statistics still lag the weights, so
test accuracy swings by 10+ points from seed to seed in every framework alike (AUC does
not) and the comparison measures that noise instead of the frameworks.
"""
from __future__ import annotations

import argparse
import concurrent.futures
import dataclasses
import json
import os
import statistics
import subprocess
import sys
import threading
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from engines.frameworks import FRAMEWORKS, label  # the table imports no framework

# MedMNIST v2, ResNet-18 (28 px): ACC / AUC
BASELINES = {"pneumoniamnist": (0.854, 0.944)}
EAGER = "eager"  # the arm suffix that switches compile off
# Datasets cut to a fixed subset by default (the others run whole)
SUBSETS = {"fashion_mnist": "fashion"}
METRICS = (("accuracy", "ACC"), ("auc", "AUC"), ("macro_f1", "macro-F1"))
GAP_POINTS = 2.0  # the issue's threshold: a gap over 2 points with p < 0.05 is looked into


def parse_arm(arm: str) -> tuple[str, bool]:
    """'pytorch:eager' -> ('pytorch', False); 'jax' -> ('jax', True). The framework must be
    in the framework table."""
    framework, _, mode = arm.partition(":")
    if framework not in FRAMEWORKS:
        raise SystemExit(f"--arms: unknown framework {framework!r} (the table has "
                         f"{', '.join(FRAMEWORKS)})")
    if mode not in ("", EAGER):
        raise SystemExit(f"--arms: {arm!r}: the only mode is ':{EAGER}' (compile off)")
    return framework, mode != EAGER


def arm_label(arm: str) -> str:
    framework, compiled = parse_arm(arm)
    return label(framework) + ("" if compiled else f" ({EAGER})")


def _load(name: str, subset: int | None, test_subset: int | None):
    from engines.datasets import load_dataset
    from engines.datasets.base import Split

    # Fashion-MNIST comes from Debian's dataset-fashion-mnist, the MedMNIST sets from
    # LAB_DATA_PATH: nothing is downloaded.
    ds = load_dataset(name, 28, seed=0, download_missing=False)
    # A subset keeps the CPU run short; fixed (seed 1234), the same for all frameworks.
    rng = np.random.default_rng(1234)

    def cut(split, n):
        if n is None or n >= len(split):
            return split
        keep = np.sort(rng.choice(len(split), n, replace=False))
        return Split(split.x[keep], split.y[keep])

    return dataclasses.replace(ds, train=cut(ds.train, subset), val=cut(ds.val, test_subset),
                               test=cut(ds.test, test_subset))


def _config(job: dict, arch: str, seed: int, dropout: bool, compiled: bool):
    """The run's TrainConfig: the architecture's paper defaults (models' registry), the
    job's overrides on top."""
    import models
    from engines.training.config import TrainConfig

    d = models.get_architecture(arch).defaults or {}
    pick = lambda key, default: job[key] if job.get(key) is not None else d.get(key, default)
    class_weights = job["class_weights"]
    if class_weights is None:
        class_weights = bool(d.get("class_weighted", False))
    return TrainConfig(arch, epochs=job["epochs"], batch_size=pick("batch_size", 32),
                       optimizer=pick("optimizer", "adam"), learning_rate=pick("learning_rate", 1e-3),
                       seed=seed, lr_schedule=job["schedule"], pipeline="device",
                       precision="fp32", compile=compiled, dropout=dropout,
                       class_weights=class_weights, log_every_steps=10**6)


def worker(job: dict) -> None:
    framework, compiled = parse_arm(job["arm"])
    os.environ.update(FRAMEWORKS[framework].environment)  # before the framework's import
    from engines.runs.scenario import run_framework

    cache = {}
    for ds_name in job["datasets"]:
        if ds_name not in cache:
            cache[ds_name] = _load(ds_name, job["train_subset"].get(ds_name),
                                   job["test_subset"].get(ds_name))
        ds = cache[ds_name]
        for arch in job["archs"]:
            for dropout in job["dropout"]:
                for seed in job["seeds"]:
                    if [ds_name, arch, job["arm"], dropout, seed] in job["done"]:
                        continue
                    cfg = _config(job, arch, seed, dropout, compiled)
                    t0 = time.time()
                    r = run_framework(framework, ds, cfg)
                    ev, tr = r.evaluation, r.train
                    epochs = tr.epochs if tr else []
                    print("RESULT " + json.dumps({
                        "dataset": ds_name, "arch": arch, "arm": job["arm"],
                        "framework": framework, "compile": compiled, "dropout": dropout,
                        "seed": seed, "status": r.status, "message": r.message,
                        "accuracy": ev.accuracy if ev else None, "auc": ev.auc if ev else None,
                        "macro_f1": ev.macro.f1 if ev and ev.macro else None,
                        "loss": [e.loss for e in epochs], "val_accuracy": [e.val_accuracy for e in epochs],
                        "epochs": cfg.epochs, "batch_size": cfg.batch_size,
                        "learning_rate": cfg.learning_rate, "class_weights": cfg.class_weights,
                        "train_n": len(ds.train), "test_n": len(ds.test),
                        "wall_s": time.time() - t0, "loadavg": os.getloadavg()[0]}), flush=True)


# ----------------------------------------------------------------------------- summary
def _sd(v):
    return statistics.stdev(v) if len(v) > 1 else 0.0


def groups(rows: list[dict]) -> dict[tuple, dict[str, list[dict]]]:
    """(dataset, arch, dropout) -> arm -> its successful runs, in the order first seen."""
    out: dict[tuple, dict[str, list[dict]]] = {}
    for r in rows:
        if r["status"] != "ok":
            continue
        out.setdefault((r["dataset"], r["arch"], r["dropout"]), {}).setdefault(r["arm"], []).append(r)
    return out


def lagging(comparisons: list[dict]) -> list[dict]:
    """The Welch comparisons (stats.compare results) where the worse side is more than
    GAP_POINTS points behind on a fraction metric with p < 0.05."""
    return [c for c in comparisons if c.get("significant") and c["difference"] is not None
            and abs(c["difference"]) * 100 > GAP_POINTS]


def summarize(rows: list[dict], out=sys.stdout) -> list[dict]:
    """Prints the tables; returns every flagged comparison (see lagging)."""
    from engines.analysis import stats

    flagged = []
    for (ds_name, arch, dropout), by_arm in groups(rows).items():
        any_r = next(iter(by_arm.values()))[0]
        print(f"\n## {ds_name} ({any_r['train_n']} train / {any_r['test_n']} test), {arch}, "
              f"dropout {'on' if dropout else 'off'}: {any_r['epochs']} epochs, batch "
              f"{any_r['batch_size']}, lr {any_r['learning_rate']}, class weights "
              f"{any_r['class_weights']}", file=out)
        print(f"{'arm':22s} {'n':>3s} " + " ".join(f"{m:>15s}" for _, m in METRICS)
              + "  train loss per epoch (mean over seeds)", file=out)
        for arm, rs in by_arm.items():
            cells = []
            for key, _ in METRICS:
                v = [r[key] for r in rs if r[key] is not None]
                cells.append(f"{statistics.mean(v):7.4f}±{_sd(v):.4f}" if v else f"{'-':>15s}")
            n_ep = min(len(r["loss"]) for r in rs)
            curve = " ".join(f"{statistics.mean(r['loss'][e] for r in rs):.3f}" for e in range(n_ep))
            print(f"{arm_label(arm):22s} {len(rs):3d} " + " ".join(cells) + "  " + curve, file=out)
        for key, name in METRICS:
            values = {arm: [r[key] for r in rs] for arm, rs in by_arm.items()}
            comps = stats.pairwise(values, metric=key, higher_is_better=True, unit="")
            print(f"  Welch {name}: " + "; ".join(
                f"{arm_label(c['framework_a'])} vs {arm_label(c['framework_b'])} "
                f"{100 * (c['difference'] or 0):+.1f} pt, "
                f"{'p ' + format(c['p'], '.3f') if c['p'] is not None else c['reason'] or 'no test'}"
                for c in comps), file=out)
            for c in lagging(comps):
                flagged.append({"dataset": ds_name, "arch": arch, "dropout": dropout,
                                "metric": key, **{k: c[k] for k in
                                                  ("framework_a", "framework_b", "difference", "p")}})
        if ds_name in BASELINES:
            a, u = BASELINES[ds_name]
            print(f"  {ds_name} MedMNIST ResNet-18 (100 epochs): ACC {a} AUC {u}", file=out)
    print(f"\nGaps over {GAP_POINTS:g} points with p < 0.05: "
          + ("; ".join(f"{f['dataset']} {f['arch']} dropout {'on' if f['dropout'] else 'off'} "
                       f"{f['metric']}: {arm_label(f['framework_a'])} vs "
                       f"{arm_label(f['framework_b'])} {100 * f['difference']:+.1f} pt "
                       f"(p {f['p']:.3f})" for f in flagged) or "none"), file=out)
    return flagged


def _key(r: dict) -> list:
    return [r["dataset"], r["arch"], r["arm"], r["dropout"], r["seed"]]


def read_rows(path: str) -> list[dict]:
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--datasets", default="breastmnist")
    ap.add_argument("--archs", default="pathmnist_cnn")
    ap.add_argument("--arms", default=",".join([*FRAMEWORKS, f"pytorch:{EAGER}"]),
                    help=f"frameworks of the table; 'pytorch:{EAGER}' runs with compile off")
    ap.add_argument("--dropout", default="on", help="on, off or on,off")
    ap.add_argument("--seeds", default="0,1,2,3,4")
    ap.add_argument("--epochs", type=int, default=12)
    ap.add_argument("--batch-size", type=int, help="default: the architecture's paper default")
    ap.add_argument("--learning-rate", type=float, help="default: the architecture's paper default")
    ap.add_argument("--optimizer", help="default: the architecture's paper default")
    ap.add_argument("--class-weights", choices=["on", "off"],
                    help="default: the architecture's paper default")
    ap.add_argument("--schedule", default="constant", choices=["constant", "cosine", "step"])
    ap.add_argument("--fashion-train", type=int, default=1200,
                    help="Fashion-MNIST training subset (0 = all 55,000)")
    ap.add_argument("--fashion-test", type=int, default=2000, help="its test/val subset (0 = all)")
    ap.add_argument("--parallel", type=int, default=1, help="arm workers at once")
    ap.add_argument("--out", help="append each run as a JSON line here")
    ap.add_argument("--summarize", metavar="JSONL", help="print the tables of earlier runs and exit")
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.worker:
        worker(json.loads(args.worker))
        return 0
    if args.summarize:
        summarize(read_rows(args.summarize))
        return 0

    arms = args.arms.split(",")
    for arm in arms:
        parse_arm(arm)
    onoff = {"on": True, "off": False}
    job = {"datasets": args.datasets.split(","), "archs": args.archs.split(","),
           "seeds": [int(s) for s in args.seeds.split(",")], "epochs": args.epochs,
           "dropout": [onoff[d] for d in args.dropout.split(",")],
           "batch_size": args.batch_size, "learning_rate": args.learning_rate,
           "optimizer": args.optimizer,
           "class_weights": None if args.class_weights is None else args.class_weights == "on",
           "schedule": args.schedule,
           "train_subset": {"fashion_mnist": args.fashion_train or None},
           "test_subset": {"fashion_mnist": args.fashion_test or None}}
    # Runs already in --out are not repeated: a grid cut short resumes where it stopped.
    done = [_key(r) for r in read_rows(args.out) if r["status"] == "ok"] \
        if args.out and os.path.exists(args.out) else []
    job["done"] = done
    # Each worker adds its framework's own variables (the framework table's), before its import.
    env = {**os.environ, "LAB_DATA_PATH": os.environ.get("LAB_DATA_PATH", "/work/shared/data")}
    rows, lock = [], threading.Lock()

    def run_arm(arm: str) -> None:
        # One thread per running worker, so that a free slot takes the next arm at once.
        p = subprocess.Popen([sys.executable, __file__, "--worker", json.dumps({**job, "arm": arm})],
                             stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                             cwd=ROOT, env=env)
        for line in p.stdout:
            if not line.startswith("RESULT "):
                continue
            r = json.loads(line[7:])
            with lock:
                rows.append(r)
                if args.out:
                    with open(args.out, "a") as sink:
                        sink.write(json.dumps(r) + "\n")
                print(f"  {r['dataset']} {r['arch']} {r['arm']} dropout {r['dropout']} seed "
                      f"{r['seed']}: acc {r['accuracy']} auc {r['auc']} f1 {r['macro_f1']} "
                      f"({r['status']}, {r['wall_s']:.0f}s, load {r['loadavg']:.1f})"
                      + (f" {r['message']}" if r['message'] else ""), file=sys.stderr, flush=True)
        if p.wait():
            print(f"  {arm}: worker exited with {p.returncode}", file=sys.stderr, flush=True)

    t0 = time.time()
    with concurrent.futures.ThreadPoolExecutor(max(1, args.parallel)) as pool:
        list(pool.map(run_arm, arms))
    print(f"\nwall {time.time() - t0:.0f} s, seeds {args.seeds}, lr schedule {args.schedule}, "
          f"fp32, device pipeline; Fashion-MNIST subset {args.fashion_train or 'all'} / "
          f"{args.fashion_test or 'all'}")
    summarize(rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
