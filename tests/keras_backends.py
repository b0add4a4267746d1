"""Keras 3 on JAX and on PyTorch: the same model and the same fit as Keras on TensorFlow.

Each backend is fixed by KERAS_BACKEND when keras is first imported, so every check runs
the backend's framework in its own process, with the environment the framework table
gives its worker, and compares with Keras on TensorFlow (and the PyTorch builder) computed
here:

* the logits of several architectures under the same canonical weights (1e-5 relative,
  fp32, CPU), which between them hold every IR layer type;
* the losses of the first five training steps (1e-3 relative to Keras on TensorFlow);
* the BatchNorm pass's moments on one batch (engines.training.batchnorm: each engine's
  batchnorm_moments) against Keras on TensorFlow's;
* the engine suite of tests/test_engines_frameworks.py (train, evaluate, save/load,
  errors, bf16, inference timing pieces), tests/test_batchnorm_recompute.py's
  per-framework checks (dropout off during the pass) and tests/test_torch_engine_training.py's
  "dropout off means the same in every engine", for that framework alone.

The checks live here; tests/test_keras_backend_jax.py and tests/test_keras_backend_torch.py
run them for one backend each: each backend takes a minute or more, and as two files the
parallel suite (pytest-xdist, a file per worker at a time) runs them side by side.
The Keras-on-TensorFlow references and the builders' logits are computed once per test run
(tests/run_memo.py).
"""
import functools
import json
import os
import subprocess
import sys
from pathlib import Path

os.environ.setdefault("KERAS_BACKEND", "tensorflow")

import numpy as np
import pytest
import run_memo

import models
from benchmarks import backend_agreement as agreement
from engines.frameworks import FRAMEWORKS, get_engine, runnable_here
from engines.training.config import TrainConfig

ROOT = Path(__file__).resolve().parent.parent

BACKENDS = ("keras-jax", "keras-torch")
# Between them every IR node type: convolutions (depthwise too), BatchNorm, both poolings,
# residuals with and without a shortcut, squeeze-excitation, hard-swish/sigmoid, dropout,
# flatten, dense; patches, class token, position embedding, encoder blocks, LayerNorm.
ARCHS = ("fan_arch1", "blood_resnet", "mobilenet_v3_small", "vit_b_16")
needs_keras_tf = pytest.mark.skipif("keras" not in runnable_here(), reason="Keras on TensorFlow is not runnable here")
# The test files of the engine suite, run again in the backend's own process.
ENGINE_SUITE = ("tests/test_engines_frameworks.py", "tests/test_batchnorm_recompute.py",
                "tests/test_torch_engine_training.py")


def backend_process(fw: str, folder: Path) -> dict:
    """The backend's probe (logits, first losses, BatchNorm moments) and its run of the
    engine suite, in one process of its own with the environment the framework table gives
    its worker (tests/keras_backend_process.py): {"probe", "returncode", "stdout", "stderr"}."""
    out = folder / f"{fw}-probe.json"
    env = {**os.environ, **FRAMEWORKS[fw].environment, "LAB_TEST_FRAMEWORKS": fw, "TF_CPP_MIN_LOG_LEVEL": "2"}
    done = subprocess.run([sys.executable, str(ROOT / "tests" / "keras_backend_process.py"), fw, str(out),
                           ",".join(ARCHS), *ENGINE_SUITE],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=1800)
    probe = json.loads(out.read_text()) if out.is_file() else {
        "error": f"the process wrote no probe (exit {done.returncode}): {done.stderr[-3000:]}"}
    return {"probe": probe, "returncode": done.returncode, "stdout": done.stdout, "stderr": done.stderr}


def probe(run: dict) -> dict:
    """The probe's figures from the backend's process; its error, if it failed."""
    if "error" in run["probe"]:
        raise AssertionError(run["probe"]["error"])
    return run["probe"]


def _keras_on_tensorflow(ds, cfg):
    """The reference: Keras on TensorFlow built for the loss check's data and config."""
    arch = cfg.architecture
    engine = get_engine("keras", cfg)
    engine.build(arch, ds.resolution, ds.channels, ds.num_classes,
                 models.init_weights(arch, resolution=ds.resolution, channels=ds.channels,
                                     num_classes=ds.num_classes, seed=cfg.seed))
    return engine


def _reference(kind: str, arch: str, compute):
    """compute(engine, ds, cfg) on Keras on TensorFlow built for the loss check's data and
    config, computed once per test run (tests/run_memo.py): the other Keras backend's file
    and tests/test_engines_frameworks.py need the same figures."""
    ds, cfg = agreement.loss_data(arch), TrainConfig(**agreement.loss_config(arch, "keras"))
    return run_memo.once(run_memo.key(kind, "keras", cfg, ds), lambda: compute(_keras_on_tensorflow(ds, cfg), ds, cfg))


@functools.cache
def _reference_losses(arch: str) -> tuple[float, ...]:
    return tuple(_reference("first_step_losses", arch, lambda engine, ds, cfg: engine.train(ds)["first_step_losses"]))


@functools.cache
def _reference_moments(arch: str) -> dict:
    return _reference("batchnorm_moments", arch,
                      lambda engine, ds, cfg: agreement.batchnorm_moments(engine, ds, cfg.batch_size))


def outputs_agree_with_the_other_builders(fw: str, got: dict) -> None:
    for arch in ARCHS:
        for builder in [b for b in ("keras", "pytorch") if models.is_installed(b)]:
            diff = agreement.relative(got["logits"][arch], run_memo.parity_logits(arch, builder))
            assert diff <= 1e-5, f"{fw} {arch} vs the {builder} builder: {diff:.2e}"


def first_five_losses_agree_with_keras_on_tensorflow(fw: str, got: dict) -> None:
    for arch in agreement.LOSS_ARCHS:
        want = _reference_losses(arch)
        assert len(got["losses"][arch]) == len(want) == 5
        np.testing.assert_allclose(got["losses"][arch], want, rtol=1e-3, err_msg=f"{fw} vs keras on {arch}")
        assert abs(want[-1] - want[0]) > 1e-4  # the steps moved the loss


def batchnorm_pass_sees_what_keras_on_tensorflow_sees(fw: str, got: dict) -> None:
    """Each BatchNorm input's moments on one batch (the pass's forward, keras.ops on every
    backend), named by the IR: the same as Keras on TensorFlow's."""
    for arch in agreement.LOSS_ARCHS:
        want = _reference_moments(arch)
        assert set(got["batchnorm"][arch]) == set(want), arch
        assert agreement.moments_difference(got["batchnorm"][arch], want) <= 1e-4, f"{fw} vs keras on {arch}"
    assert got["batchnorm"]["blood_resnet"], "blood_resnet has BatchNorm: something to compare"


def engine_suite_passes_in_its_own_process(fw: str, run: dict) -> None:
    tail = run["stdout"][-3000:]
    assert run["returncode"] == 0, f"{fw}: " + tail + run["stderr"][-2000:]
    assert " passed" in tail and " failed" not in tail
