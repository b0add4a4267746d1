"""Fine-tune every framework from one pretrained weights file, end to end on this machine.

Makes a weights file in torchvision's format (random weights with torchvision's names
and shapes for the architecture, saved with torch.save of a plain state dict: what a
user would copy from a machine with internet) in the data root's pretrained/ folder
unless it is there, then runs the lab's own command line on it:

    python -m engines run --dataset D --size PX --arch A --frameworks ... --pretrained pretrained/FILE --json

so the path is the one users take (queue, a worker per framework, the file read by a
PyTorch process with torch.load(weights_only=True), mapped into canonical weights, a new
classifier drawn from the seed) and prints, per framework, the initial weights' origin,
the fine-tuning time and throughput, test accuracy and AUC, and inference throughput.

    LAB_DATA_PATH=../shared/data python benchmarks/finetune_pretrained.py \\
        --dataset breastmnist --size 64 --source 28 --arch mobilenet_v3_small --epochs 3
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

from engines.frameworks import FRAMEWORKS, installed
from engines.paths import data_root


def make_file(arch: str, path: str, seed: int) -> None:
    """torch.save of a plain state dict with torchvision's names and shapes (random
    weights drawn with the architecture's initializers; BatchNorm step counters too)."""
    import torch

    import models
    from models import pretrained as mapping

    w = mapping.published(arch)
    weights = models.init_weights(arch, resolution=w.resolution, channels=w.channels, num_classes=w.classes,
                                  seed=seed)
    state = {k: torch.from_numpy(v) for k, v in mapping.to_torchvision(arch, weights).items()}
    for key in [k for k in state if k.endswith(".running_var")]:
        state[key.replace(".running_var", ".num_batches_tracked")] = torch.tensor(0)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    torch.save(state, path)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dataset", default="breastmnist")
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--source", type=int, help="the native size to upsample from (the dataset option source)")
    ap.add_argument("--arch", default="mobilenet_v3_small")
    ap.add_argument("--frameworks", default=",".join(FRAMEWORKS))
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--batch-sizes", default="32")
    ap.add_argument("--extra", default="", help="more `engines run` arguments, space-separated")
    args = ap.parse_args(argv)
    name = f"pretrained/random_{args.arch}_torchvision_format.pth"
    path = os.path.join(str(data_root()), name)
    if not os.path.isfile(path):
        make_file(args.arch, path, seed=1234)
    frameworks = [f for f in args.frameworks.split(",") if installed(f)]
    cmd = [sys.executable, "-m", "engines", "run", "--dataset", args.dataset, "--size", str(args.size),
           "--arch", args.arch, "--frameworks", ",".join(frameworks), "--epochs", str(args.epochs),
           "--seed", str(args.seed), "--batch-sizes", args.batch_sizes, "--pretrained", name, "--json",
           *(["--dataset-option", f"source={args.source}"] if args.source else []), *args.extra.split()]
    t0 = time.time()
    load0 = os.getloadavg()[0]
    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    if not done.stdout.strip():
        print(done.stderr[-3000:], file=sys.stderr)
        return 1
    results = json.loads(done.stdout)
    print(f"{' '.join(cmd[2:])}\nwall {time.time() - t0:.0f} s; load {load0:.1f} -> {os.getloadavg()[0]:.1f} "
          f"on {os.cpu_count()} cores")
    origins = {(r.get("model") or {}).get("initial_weights") for r in results}
    print("initial weights:", " | ".join(sorted(o for o in origins if o)) or "none recorded")
    print(f"{'framework':<13}{'status':<8}{'compile s':>10}{'train s':>9}{'img/s':>8}"
          f"{'val acc/epoch':>26}{'test acc':>10}{'AUC':>8}{'infer img/s':>13}")
    for r in results:
        t, ev = r.get("train") or {}, r.get("evaluation") or {}
        val = " ".join(f"{e['val_accuracy']:.3f}" for e in t.get("epochs", []))
        inf = "/".join(f"{p['throughput_images_per_s']:.0f}" for p in r.get("inference") or []
                       if p.get("throughput_images_per_s"))
        print(f"{r['framework']:<13}{r['status']:<8}{t.get('compile_time_s', float('nan')):>10.1f}"
              f"{t.get('total_time_s', float('nan')):>9.1f}{t.get('images_per_s', float('nan')):>8.0f}"
              f"{val:>26}{ev.get('accuracy', float('nan')):>10.4f}{ev.get('auc') or float('nan'):>8.4f}{inf:>13}"
              + (f"  {r['message']}" if r.get("message") else ""))
    return 0 if all(r["status"] == "ok" for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
