"""Test set-up: every test gets its own cache and data root, and sees the real data
files in ../shared/data (when that folder exists) as a read-only extra data folder."""
import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
SHARED_DATA = REPO.parent / "shared" / "data"
DEBIAN_FASHION = Path("/usr/share/datasets/fashion-mnist")

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# The home page would start every framework in a background probe (labui.doctor) in each
# test and in the browser test's server; the tests of that page turn it on with a fake.
os.environ.setdefault("LAB_PROBE_ON_HOME", "0")


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path, monkeypatch):
    cache = tmp_path / "lab-cache"
    monkeypatch.setenv("LAB_CACHE_DIR", str(cache))
    monkeypatch.delenv("LAB_DATA_ROOT", raising=False)
    monkeypatch.setenv("LAB_DATA_PATH", str(SHARED_DATA) if SHARED_DATA.is_dir() else "")


def need_shared(name: str) -> Path:
    path = SHARED_DATA / name
    if not path.is_file():
        pytest.skip(f"{path} is absent (the real data files live in ../shared/data)")
    return path


def need_debian_fashion() -> Path:
    if not (DEBIAN_FASHION / "train-images-idx3-ubyte.gz").is_file():
        pytest.skip("Debian's dataset-fashion-mnist is not installed (apt-get install dataset-fashion-mnist)")
    return DEBIAN_FASHION


def pytest_collection_modifyitems(config, items):
    """The Ray tests run last (in a process of their own: tests/test_ray.py). A local Ray
    instance's raylet and workers outlive ray.shutdown for a while: in a full run the
    interrupt tests that followed it (Ctrl-C of one of two CLIs) missed their deadlines,
    while each passes alone."""
    ray_tests = [item for item in items if item.nodeid.startswith("tests/test_ray.py")]
    if ray_tests:
        items[:] = [item for item in items if item not in ray_tests] + ray_tests
