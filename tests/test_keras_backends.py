"""Keras 3 on JAX and on PyTorch beside Keras on TensorFlow in one process: what the table
gives each backend's worker, and the refusal to run a backend that is not this process's.
The agreement checks, one file per backend: tests/keras_backends.py."""
import os

os.environ.setdefault("KERAS_BACKEND", "tensorflow")

import pytest
from keras_backends import BACKENDS

from engines.frameworks import conflict, get_engine, runnable_here
from engines.training.config import TrainConfig
from engines.training.engine import FrameworkMissing


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
