"""A result that several processes of one test run compute the same way, computed once.

Keras on TensorFlow's first five training losses on the agreement check's data are the
reference of three test files: tests/test_engines_frameworks.py compares every engine
with them, and tests/test_keras_backend_jax.py and _torch.py compare Keras on JAX and on
PyTorch with them. The three run in different processes of the parallel suite, and each
spent 20-45 s of a 2-core machine tracing and compiling the same Keras model for the
same five steps. The builders' logits under the parity weights are the same case: the
models' parity test and both Keras backends' files compare them. Here the first process
to need a value computes it and leaves it in the run's folder; the others wait for it and
read it.

The key is the computation's whole input: what is computed, the framework, every field
of the training configuration and the bytes of the training split, so two tests share a
value only where they would have computed the same one. The folder lives as long as the
run (conftest.py makes it), so nothing outlasts a change of the code.

Tests import this as `run_memo` (pytest puts tests/ on sys.path); it is no test module.
"""
from __future__ import annotations

import fcntl
import hashlib
import json
import os
from pathlib import Path

import numpy as np

RUN_DIR_VARIABLE = "LAB_TEST_RUN_DIR"


def key(kind: str, framework: str, config, dataset) -> str:
    """The computation's input as a name: kind, framework, config fields, training split."""
    h = hashlib.sha256(json.dumps([kind, framework, config.to_dict()], sort_keys=True, default=str).encode())
    for array in (dataset.train.x, dataset.train.y):
        h.update(str((array.dtype, array.shape)).encode())
        h.update(np.ascontiguousarray(array).tobytes())
    return f"{kind}-{framework}-{h.hexdigest()[:24]}"


def once(name: str, compute, *args):
    """compute(*args)'s value (JSON-able), computed by the first process of this run that asks
    for `name`; the others block until it is written, then read it. Where no run set the
    folder (a benchmark importing a test module), computed here every time."""
    folder = os.environ.get(RUN_DIR_VARIABLE)
    if not folder:
        return compute(*args)
    path = Path(folder) / f"{name}.json"
    with open(path.with_suffix(".lock"), "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes, by a crash too
        if path.is_file():
            return json.loads(path.read_text())
        value = compute(*args)
        partial = path.with_suffix(".partial")
        partial.write_text(json.dumps(value))
        partial.replace(path)
        return json.loads(path.read_text())  # what the others read, here too


def parity_logits(arch: str, builder: str):
    """models.parity.parity_logits at the architecture's parity input, once per run: the
    models' parity test (tests/test_models.py) and the Keras backends' (tests/keras_backends.py)
    compare the same builds on the same batch. The name holds the whole input, fixed by
    the code (PARITY_INPUTS, the parity weights' and batch's seed 7, a batch of 3)."""
    from models import framework_name
    from models.parity import PARITY_INPUTS
    from models.parity import parity_logits as compute

    builder = framework_name(builder)
    res, ch, k = PARITY_INPUTS[arch]
    name = f"parity-logits-{arch}-{builder}-{res}x{res}x{ch}-{k}-rng7-batch3"
    return np.asarray(once(name, lambda: compute(arch, builder).tolist()), dtype=np.float32)
