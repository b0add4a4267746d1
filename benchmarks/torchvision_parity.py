"""Do the lab's models compute what torchvision's compute, from one torchvision state dict?

For each architecture the lab defines from torchvision (resnet50, mobilenet_v3_small,
efficientnet_b0, vit_b_16): torchvision's own model is built (weights=None), its state
dict randomized (running statistics moved off 0/1, zero arrays such as ViT's head
filled) and loaded back into it; the same state dict is mapped into canonical weights
(models.pretrained.from_torchvision) and loaded into the lab's PyTorch, Keras (on this
process's KERAS_BACKEND) and Flax models. All of them compute logits for one random batch
at 224 px in inference mode and fp32 (TF32 off everywhere); the largest relative
difference from torchvision's, max |a - b| / max |b|, must be at most 1e-4. The mapping
back (to_torchvision) must also load into torchvision's model with nothing unexpected and
nothing missing but BatchNorm's step counters.

Needs torchvision, which cannot be imported on the lab's CPU machine; there the script
says so and exits 0 (skipped). The GPU machine's image has torchvision 0.26:

    python benchmarks/torchvision_parity.py [--archs resnet50,vit_b_16] [--batch 2] [--device cuda] [--json]
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import os
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
# Strict fp32 in every framework, set before any of them starts.
os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ["NVIDIA_TF32_OVERRIDE"] = "0"
os.environ["JAX_DEFAULT_MATMUL_PRECISION"] = "float32"
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np

from models import pretrained as mapping

TOLERANCE = 1e-4
SKIP_MESSAGE = ("skipped: torchvision is not importable here, and this check compares with torchvision's own "
                "models (pip install torchvision, or run it on a machine that has it: the GPU machine's image "
                "has torchvision 0.26)")


def randomized_state(model, seed: int) -> dict:
    """The model's state dict with every array exercised: running means and variances
    away from 0 and 1, arrays that start at zero filled (step counters kept)."""
    import torch

    g = torch.Generator().manual_seed(seed)
    state = {}
    for key, value in model.state_dict().items():
        if key.endswith("num_batches_tracked"):
            state[key] = value
        elif key.endswith("running_mean"):
            state[key] = torch.randn(value.shape, generator=g) * 0.1
        elif key.endswith("running_var"):
            state[key] = torch.rand(value.shape, generator=g) + 0.5
        elif not value.any():
            state[key] = torch.randn(value.shape, generator=g) * 0.05
        else:
            state[key] = value.clone()
    return state


def compare(arch: str, *, batch: int, device: str, seed: int = 0) -> dict:
    import torch
    import torchvision

    import models

    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    torch.manual_seed(seed)
    tv = getattr(torchvision.models, arch)(weights=None).eval()
    state = randomized_state(tv, seed)
    tv.load_state_dict(state)
    numpy_state = {k: v.numpy() for k, v in state.items()}
    weights = mapping.from_torchvision(arch, numpy_state)
    back = {k: torch.from_numpy(v) for k, v in mapping.to_torchvision(arch, weights).items()}
    missing, unexpected = getattr(torchvision.models, arch)(weights=None).load_state_dict(back, strict=False)
    w = mapping.published(arch)
    x = np.random.default_rng(seed).random((batch, w.resolution, w.resolution, w.channels), dtype=np.float32)
    with torch.no_grad():
        ref = tv.to(device)(torch.from_numpy(x).permute(0, 3, 1, 2).contiguous().to(device)).cpu().numpy()
    row = {"architecture": arch, "torchvision": torchvision.__version__, "input": list(x.shape),
           "reverse_mapping_missing": [k for k in missing if not k.endswith("num_batches_tracked")],
           "reverse_mapping_unexpected": list(unexpected), "max_rel_diff": {}, "seconds": {}}
    for builder in models.BUILDERS:
        if not models.is_installed(builder):
            continue
        t0 = time.perf_counter()
        model = models.build_model(arch, builder, resolution=w.resolution, channels=w.channels,
                                   num_classes=w.classes, weights=weights)
        got = models.infer(builder, model, x)
        name = f"keras ({os.environ['KERAS_BACKEND']})" if builder == "keras" else builder
        row["max_rel_diff"][name] = float(np.abs(got - ref).max() / np.abs(ref).max())
        row["seconds"][name] = time.perf_counter() - t0
        del model
    row["ok"] = (max(row["max_rel_diff"].values()) <= TOLERANCE and not row["reverse_mapping_missing"]
                 and not row["reverse_mapping_unexpected"])
    return row


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--archs", default=",".join(mapping.TORCHVISION))
    ap.add_argument("--batch", type=int, default=2)
    ap.add_argument("--device", default="cpu", help="where torchvision's model runs (cpu or cuda)")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    if importlib.util.find_spec("torchvision") is None:
        print(SKIP_MESSAGE)
        return 0
    rows = [compare(a, batch=args.batch, device=args.device) for a in args.archs.split(",")]
    if args.json:
        print(json.dumps(rows, indent=1))
    else:
        print(f"torchvision {rows[0]['torchvision']}; logits at 224 px, fp32, inference mode; "
              f"max |lab - torchvision| / max |torchvision| (limit {TOLERANCE:g})")
        for r in rows:
            cells = "  ".join(f"{k} {v:.2e}" for k, v in r["max_rel_diff"].items())
            print(f"{r['architecture']:<20} {cells}  reverse mapping: "
                  f"{'loads' if not (r['reverse_mapping_missing'] or r['reverse_mapping_unexpected']) else r}"
                  f"  {'OK' if r['ok'] else 'FAIL'}")
    return 0 if all(r["ok"] for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
