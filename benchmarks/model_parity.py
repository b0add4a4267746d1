"""Architecture x framework -> trainable parameters, FLOPs per image, and the largest
relative difference of the logits under the same initial weights (models/parity.py).

Parameters are counted on the built models; FLOPs (2 x multiply-accumulates) come from the
definition, at 224 px for the torchvision models and at the paper's native size for the
papers' CNNs.  The output difference is measured at the small sizes of
models.parity.PARITY_INPUTS, in inference mode and fp32 on this machine.

    python benchmarks/model_parity.py [--archs resnet50,vit_b_16] [--json]
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
os.environ.setdefault("KERAS_BACKEND", "tensorflow")

import models
from models.parity import PARITY_INPUTS, max_relative_differences


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--archs", default=",".join(models.list_architectures()))
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    frameworks = [f for f in models.BUILDERS if models.is_installed(f)]
    rows = []
    t0 = time.time()
    for arch in args.archs.split(","):
        info = models.get_architecture(arch)
        res, ch, k = info.native if info.native[0] < 224 else (224, 3, 1000)
        table, _ = models.parameter_table(res, ch, k, frameworks=frameworks, architectures=[arch])
        diffs = max_relative_differences(arch, frameworks)
        for r in table:
            rows.append({"architecture": arch, "framework": r["framework"],
                         "input": f"{res}x{res}x{ch}/{k}", "parameters": r["parameters"],
                         "gflops_per_image": r["flops_per_image"] / 1e9,
                         "parity_input": "{0}x{0}x{1}/{2}".format(*PARITY_INPUTS[arch]),
                         "max_rel_diff_vs_" + frameworks[0]: diffs[r["framework"]]})
    if args.json:
        print(json.dumps(rows, indent=1))
        return 0
    ref = "max_rel_diff_vs_" + frameworks[0]
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores; "
          f"{time.time() - t0:.0f} s")
    print(f"{'architecture':<20}{'framework':<10}{'input':<16}{'parameters':>13}{'GFLOPs':>10}"
          f"  {'parity input':<14}{'max rel diff vs ' + frameworks[0]:>24}")
    for r in rows:
        print(f"{r['architecture']:<20}{r['framework']:<10}{r['input']:<16}{r['parameters']:>13,}"
              f"{r['gflops_per_image']:>10.4f}  {r['parity_input']:<14}{r[ref]:>24.2e}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
