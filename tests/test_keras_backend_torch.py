"""Keras 3 on PyTorch: the checks of tests/keras_backends.py (logits, first losses and the
BatchNorm pass against Keras on TensorFlow; the engine suite in the backend's own process)."""
import keras_backends as checks
import pytest
from helpers import needs_framework

FW = "keras-torch"
pytestmark = [needs_framework(FW), pytest.mark.heavy(seconds=85)]  # wall time in the parallel suite: conftest.py


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """The backend's probe and engine suite, in its one process of its own."""
    return checks.backend_process(FW, tmp_path_factory.mktemp(FW))


@pytest.fixture(scope="module")
def probe(run):
    return checks.probe(run)


@checks.needs_keras_tf
def test_outputs_under_the_same_weights_agree_with_the_other_builders(probe):
    checks.outputs_agree_with_the_other_builders(FW, probe)


@checks.needs_keras_tf
def test_first_five_losses_agree_with_keras_on_tensorflow(probe):
    checks.first_five_losses_agree_with_keras_on_tensorflow(FW, probe)


@checks.needs_keras_tf
def test_the_batchnorm_pass_sees_what_keras_on_tensorflow_sees(probe):
    checks.batchnorm_pass_sees_what_keras_on_tensorflow_sees(FW, probe)


def test_the_engine_suite_passes_in_the_backends_own_process(run):
    checks.engine_suite_passes_in_its_own_process(FW, run)
