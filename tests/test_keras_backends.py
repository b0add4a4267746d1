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
"""
import os
import subprocess
import sys
from pathlib import Path

os.environ.setdefault("KERAS_BACKEND", "tensorflow")

import numpy as np
import pytest

import models
from benchmarks import backend_agreement as agreement
from engines.frameworks import FRAMEWORKS, conflict, get_engine, installed, runnable_here
from engines.training.config import TrainConfig
from engines.training.engine import FrameworkMissing
from models.parity import PARITY_INPUTS, parity_weights

ROOT = Path(__file__).resolve().parent.parent

BACKENDS = ["keras-jax", "keras-torch"]
# Between them every IR node type: convolutions (depthwise too), BatchNorm, both poolings,
# residuals with and without a shortcut, squeeze-excitation, hard-swish/sigmoid, dropout,
# flatten, dense; patches, class token, position embedding, encoder blocks, LayerNorm.
ARCHS = ("fan_arch1", "blood_resnet", "mobilenet_v3_small", "vit_b_16")
needs_keras_tf = pytest.mark.skipif("keras" not in runnable_here(), reason="Keras on TensorFlow is not runnable here")


def _needs(fw):
    if not installed(fw):
        pytest.skip(f"{fw} is not installed")


@pytest.fixture(scope="module")
def probes():
    """framework -> its probe (logits and first losses), each from its own process."""
    cache = {}

    def get(fw):
        if fw not in cache:
            cache[fw] = agreement.probe_in_worker(fw, ARCHS, agreement.LOSS_ARCHS)
        return cache[fw]
    return get


def _logits_here(arch, builder):
    res, ch, k = PARITY_INPUTS[arch]
    x = np.random.default_rng(7).random((3, res, res, ch), dtype=np.float32)
    model = models.build_model(arch, builder, resolution=res, channels=ch, num_classes=k,
                               weights=parity_weights(arch, res, ch, k))
    return models.infer(builder, model, x)


@needs_keras_tf
@pytest.mark.parametrize("fw", BACKENDS)
def test_outputs_under_the_same_weights_agree_with_the_other_builders(fw, probes):
    _needs(fw)
    got = probes(fw)["logits"]
    for arch in ARCHS:
        for builder in [b for b in ("keras", "pytorch") if models.is_installed(b)]:
            diff = agreement.relative(got[arch], _logits_here(arch, builder))
            assert diff <= 1e-5, f"{fw} {arch} vs the {builder} builder: {diff:.2e}"


def _keras_on_tensorflow(arch: str):
    """The reference: Keras on TensorFlow built for the loss check's data and config."""
    ds = agreement.loss_data(arch)
    cfg = TrainConfig(**agreement.loss_config(arch, "keras"))
    engine = get_engine("keras", cfg)
    engine.build(arch, ds.resolution, ds.channels, ds.num_classes,
                 models.init_weights(arch, resolution=ds.resolution, channels=ds.channels,
                                     num_classes=ds.num_classes, seed=cfg.seed))
    return engine, ds, cfg


@needs_keras_tf
@pytest.mark.parametrize("fw", BACKENDS)
def test_first_five_losses_agree_with_keras_on_tensorflow(fw, probes):
    _needs(fw)
    got = probes(fw)["losses"]
    for arch in agreement.LOSS_ARCHS:
        engine, ds, cfg = _keras_on_tensorflow(arch)
        want = engine.train(ds)["first_step_losses"]
        assert len(got[arch]) == len(want) == 5
        np.testing.assert_allclose(got[arch], want, rtol=1e-3, err_msg=f"{fw} vs keras on {arch}")
        assert abs(want[-1] - want[0]) > 1e-4  # the steps moved the loss


@needs_keras_tf
@pytest.mark.parametrize("fw", BACKENDS)
def test_the_batchnorm_pass_sees_what_keras_on_tensorflow_sees(fw, probes):
    """Each BatchNorm input's moments on one batch (the pass's forward, keras.ops on every
    backend), named by the IR: the same as Keras on TensorFlow's."""
    _needs(fw)
    got = probes(fw)["batchnorm"]
    for arch in agreement.LOSS_ARCHS:
        engine, ds, cfg = _keras_on_tensorflow(arch)
        want = agreement.batchnorm_moments(engine, ds, cfg.batch_size)
        assert set(got[arch]) == set(want), arch
        assert agreement.moments_difference(got[arch], want) <= 1e-4, f"{fw} vs keras on {arch}"
    assert got["blood_resnet"], "blood_resnet has BatchNorm: something to compare"


@pytest.mark.parametrize("fw", BACKENDS)
def test_the_engine_suite_passes_in_the_backends_own_process(fw):
    _needs(fw)
    env = {**os.environ, **FRAMEWORKS[fw].environment, "LAB_TEST_FRAMEWORKS": fw}
    suites = ["tests/test_engines_frameworks.py", "tests/test_batchnorm_recompute.py",
              "tests/test_torch_engine_training.py"]
    done = subprocess.run([sys.executable, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider", *suites],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=1200)
    tail = done.stdout[-3000:]
    assert done.returncode == 0, tail + done.stderr[-2000:]
    assert " passed" in tail and " failed" not in tail


def test_a_backend_that_is_not_this_processs_is_refused_by_name():
    """KERAS_BACKEND is tensorflow here: the other Keras backends cannot run in this
    process, and say so instead of running on the wrong backend."""
    for fw in BACKENDS:
        assert fw not in runnable_here()
        assert "KERAS_BACKEND=" in conflict(fw)
        with pytest.raises(FrameworkMissing, match="cannot run in this process"):
            get_engine(fw, TrainConfig("fan_arch1"))


def test_the_table_gives_each_keras_backend_its_worker_environment():
    from engines.runs.spec import RunSpec
    from engines.runs.workerenv import worker_env

    request = RunSpec(dataset="synthetic", resolution=28, frameworks=("keras", *BACKENDS), xla_autotune=2,
                      cudnn_benchmark=True)
    backends = {fw: worker_env(request.job(fw), {})["KERAS_BACKEND"] for fw in ("keras", *BACKENDS)}
    assert backends == {"keras": "tensorflow", "keras-jax": "jax", "keras-torch": "torch"}
    # XLA's autotuning applies to Keras on JAX; cuDNN benchmark to Keras on PyTorch
    assert request.job("keras-jax").xla_autotune == 2 and not request.job("keras-jax").cudnn_benchmark
    assert request.job("keras-torch").cudnn_benchmark and request.job("keras-torch").xla_autotune is None
    assert "XLA_FLAGS" not in worker_env(request.job("keras-torch"), {})
