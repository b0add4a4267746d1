"""Do the six frameworks compute the same function and take the same first steps?

Each framework runs in its own process with its environment from the framework table
(Keras on JAX and on PyTorch need KERAS_BACKEND set before keras is first imported), and
reports, as JSON:

* the logits of every architecture under the same canonical weights on the same batch
  (models.parity's weights and inputs: running statistics moved off 0/1, zero arrays
  filled), in inference mode and fp32, built by the framework's builder;
* the losses of the first five training steps of fan_arch1 and blood_resnet, through the
  framework's engine (get_engine -> build with the canonical draw -> train), with the
  configuration of tests/test_engines_frameworks.py's agreement test;
* before that training, the BatchNorm pass's per-channel moments of each BatchNorm input
  on the first training batch (Engine.batchnorm_moments, what engines.training.batchnorm
  combines over the split), for the loss architectures that have BatchNorm.

The parent prints the largest relative difference of the logits from Keras on TensorFlow
and from PyTorch (max |a - b| / max |b|), each step's relative loss difference from
Keras on TensorFlow, and the moments' largest relative difference from Keras on TensorFlow.

    python benchmarks/backend_agreement.py [--frameworks keras,keras-jax,...] [--archs ...] [--json]

tests/keras_backends.py runs `probe` for the Keras backends on a few architectures, in each
backend's own process (tests/keras_backend_process.py), before the engine suite there.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from engines.frameworks import FRAMEWORKS, installed

LOSS_ARCHS = ("fan_arch1", "blood_resnet")


def compiles_on_a_cpu(framework: str) -> bool:
    """Whether the agreement checks compile the framework: everywhere but where PyTorch
    computes (PyTorch, Keras on PyTorch), whose torch.compile costs about a minute per
    model on a CPU. The engine tests use the same rule, so that both compute the same
    Keras-on-TensorFlow reference (tests/run_memo.py keys it by the configuration)."""
    return FRAMEWORKS[framework].runtime != "torch"


def loss_config(arch: str, framework: str) -> dict:
    """The agreement test's configuration (lr 1e-4: see its comment), compiled where
    compiling is cheap on a CPU (compiles_on_a_cpu)."""
    return dict(architecture=arch, epochs=1, batch_size=16, learning_rate=1e-4, dropout=False, seed=3,
                pipeline="device", precision="fp32", compile=compiles_on_a_cpu(framework),
                log_every_steps=2, class_weights=True)


def loss_data(arch: str):
    from engines.datasets.synthetic import make_synthetic

    return make_synthetic(28, channels=3 if arch == "blood_resnet" else 1, classes=4, seed=0, train=80,
                          val=32, test=40)


def probe(framework: str, archs, loss_archs) -> dict:
    """In this process (whose environment is the framework's): logits per architecture
    and the first five losses per loss architecture, as lists."""
    import models
    from engines.frameworks import engine_class, get_engine
    from engines.training.config import TrainConfig
    from models.parity import parity_logits

    engine_class(framework)  # the framework imported first as its worker imports it (import_without)
    builder = FRAMEWORKS[framework].builder
    out = {"framework": framework, "logits": {}, "losses": {}, "batchnorm": {}, "seconds": {}}
    for arch in archs:
        t0 = time.perf_counter()
        out["logits"][arch] = parity_logits(arch, builder).tolist()
        out["seconds"][arch] = time.perf_counter() - t0
    for arch in loss_archs:
        ds = loss_data(arch)
        cfg = TrainConfig(**loss_config(arch, framework))
        engine = get_engine(framework, cfg)
        engine.build(arch, ds.resolution, ds.channels, ds.num_classes,
                     models.init_weights(arch, resolution=ds.resolution, channels=ds.channels,
                                         num_classes=ds.num_classes, seed=cfg.seed))
        out["batchnorm"][arch] = batchnorm_moments(engine, ds, cfg.batch_size)
        out["losses"][arch] = list(engine.train(ds)["first_step_losses"])
    return out


def batchnorm_moments(engine, ds, batch_size: int) -> dict:
    """IR layer name -> [mean, variance, count] of its input on the first training batch
    (lists; empty where the architecture has no BatchNorm). Training-mode statistics, so
    the losses that follow are unaffected."""
    from engines.training import batchnorm

    if not batchnorm.has_batchnorm(engine.architecture, ds.resolution, ds.channels, ds.num_classes):
        return {}
    got = engine.batchnorm_moments(ds.train.x[:batch_size])
    return {name: [np.asarray(m).tolist(), np.asarray(v).tolist(), int(n)] for name, (m, v, n) in got.items()}


def moments_difference(got: dict, want: dict) -> float:
    """The largest relative difference of two probes' moments (max over layers of
    max |a - b| / max |b|, means and variances apart); inf if the layers differ."""
    if set(got) != set(want):
        return float("inf")
    return max((relative(got[k][i], want[k][i]) for k in want for i in (0, 1)), default=0.0)


def probe_in_worker(framework: str, archs=(), loss_archs=LOSS_ARCHS, timeout: float = 900) -> dict:
    """`probe` in a fresh interpreter with the framework's environment from the table."""
    env = {**os.environ, **FRAMEWORKS[framework].environment, "TF_CPP_MIN_LOG_LEVEL": "2"}
    request = json.dumps({"framework": framework, "archs": list(archs), "loss_archs": list(loss_archs)})
    done = subprocess.run([sys.executable, os.path.abspath(__file__), "--probe", request], env=env, cwd=ROOT,
                          capture_output=True, text=True, timeout=timeout)
    lines = [ln for ln in done.stdout.splitlines() if ln.startswith("PROBE ")]
    if done.returncode != 0 or not lines:
        raise RuntimeError(f"{framework} probe failed (exit {done.returncode}): {done.stderr[-3000:]}")
    return json.loads(lines[-1][len("PROBE "):])


def relative(a, b) -> float:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.abs(a - b).max() / np.abs(b).max())


def tables(results: dict[str, dict]) -> str:
    lines = []
    archs = next(iter(results.values()))["logits"].keys()
    refs = [r for r in ("keras", "pytorch") if r in results]
    lines.append("Logits under the same weights: max |a - b| / max |b| (fp32, inference mode)")
    lines.append(f"{'architecture':<20}{'framework':<13}" + "".join(f"{'vs ' + r:>14}" for r in refs)
                 + f"{'build+infer s':>15}")
    for arch in archs:
        for fw, r in results.items():
            cells = "".join(f"{relative(r['logits'][arch], results[ref]['logits'][arch]):>14.2e}" for ref in refs)
            lines.append(f"{arch:<20}{fw:<13}{cells}{r['seconds'][arch]:>15.1f}")
    if "keras" in results:
        lines.append("")
        lines.append("First five training losses: |l - l_keras| / |l_keras| per step (Keras on TensorFlow = reference)")
        for arch in next(iter(results.values()))["losses"]:
            ref = np.asarray(results["keras"]["losses"][arch])
            lines.append(f"{arch}   keras losses: " + " ".join(f"{v:.6f}" for v in ref))
            for fw, r in results.items():
                d = np.abs(np.asarray(r["losses"][arch]) - ref) / np.abs(ref)
                lines.append(f"  {fw:<13}" + " ".join(f"{v:10.2e}" for v in d))
        with_bn = [a for a, m in results["keras"].get("batchnorm", {}).items() if m]
        if with_bn:
            lines.append("")
            lines.append("BatchNorm pass, moments of every BatchNorm input on one batch: max relative difference "
                         "from Keras on TensorFlow")
            for arch in with_bn:
                ref = results["keras"]["batchnorm"][arch]
                cells = "  ".join(f"{fw} {moments_difference(r['batchnorm'][arch], ref):.2e}"
                                  for fw, r in results.items() if fw != "keras")
                lines.append(f"{arch:<20}{cells}")
    return "\n".join(lines)


def main(argv=None) -> int:
    import models

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--frameworks", default=",".join(FRAMEWORKS))
    ap.add_argument("--archs", default=",".join(models.list_architectures()))
    ap.add_argument("--loss-archs", default=",".join(LOSS_ARCHS))
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--probe", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.probe:
        req = json.loads(args.probe)
        print("PROBE " + json.dumps(probe(req["framework"], req["archs"], req["loss_archs"])), flush=True)
        return 0
    frameworks = [f for f in args.frameworks.split(",") if installed(f)]
    archs = [a for a in args.archs.split(",") if a]
    loss_archs = [a for a in args.loss_archs.split(",") if a]
    t0 = time.time()
    results = {}
    for fw in frameworks:
        results[fw] = probe_in_worker(fw, archs, loss_archs, timeout=3600)
        print(f"  {fw}: done ({time.time() - t0:.0f} s)", file=sys.stderr, flush=True)
    if args.json:
        print(json.dumps(results))
    else:
        print(f"{os.cpu_count()} cores, load {os.getloadavg()[0]:.1f}; {time.time() - t0:.0f} s")
        print(tables(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
