"""Small helpers shared by the tests (and by benchmarks/queue_stress.py through
tests/queue_fakes.py): waiting for another process or thread with a deadline, whether a
process still runs, the skip mark for a test that needs a framework installed, and the
frameworks a test module checks in this process.

Tests import this as `helpers` (pytest puts tests/ on sys.path, as it does for conftest);
it is no test module, so pytest does not collect it.
"""
from __future__ import annotations

import time


def wait_for(predicate, timeout_s: float = 20.0, every_s: float = 0.05):
    """The predicate's first truthy value, polled until a deadline: for a state that
    another process or thread reaches in its own time. Raises TimeoutError past the
    deadline, so a test never passes by waiting "long enough"."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(every_s)
    raise TimeoutError(f"condition not reached in {timeout_s:g} s")


def alive(pid: int) -> bool:
    """Whether the process runs; a zombie (exited, not yet reaped) counts as dead."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def needs_framework(name: str):
    """Skip mark for a test that runs `name` for real: skipped, with the reason, where that
    framework is not installed (it would otherwise fail on what it cannot run)."""
    import pytest

    from engines.frameworks import FRAMEWORKS, installed

    return pytest.mark.skipif(not installed(name), reason=f"{FRAMEWORKS[name].label} is not installed")


def frameworks_under_test() -> list[str]:
    """The frameworks a test module runs in this process: those that can run here (Keras
    on JAX or on PyTorch need their own KERAS_BACKEND), narrowed to LAB_TEST_FRAMEWORKS
    where it is set: tests/test_keras_backends.py runs such modules again in a process
    per Keras backend, with that backend named there."""
    import os

    from engines.frameworks import runnable_here

    wanted = os.environ.get("LAB_TEST_FRAMEWORKS")
    return [f for f in runnable_here() if not wanted or f in wanted.split(",")]


def unreachable_medmnist(monkeypatch, name: str = "lostmnist") -> str:
    """A MedMNIST-shaped catalog entry whose file is at an address nothing answers (port 9):
    a machine without a network. Returns its name."""
    import importlib

    catalog = importlib.import_module("engines.datasets.catalog")
    meta = {"python_class": "LostMNIST", "description": "test", "task": "multi-class",
            "label": {"0": "a", "1": "b"}, "n_channels": 1, "n_samples": {"train": 1200, "val": 400, "test": 600},
            "license": "test"}
    for size in (28, 64, 128, 224):
        suffix = "" if size == 28 else f"_{size}"
        meta[f"url{suffix}"] = f"http://127.0.0.1:9/{name}{suffix}.npz"
        meta[f"MD5{suffix}"] = "0" * 32
    monkeypatch.setattr(catalog, "medmnist_info", lambda: {name: meta})
    return name
