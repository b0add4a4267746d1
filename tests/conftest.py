"""Test set-up: every test gets its own cache and data root, and sees the real data
files in ../shared/data (when that folder exists) as a read-only extra data folder."""
import os
import shutil
import signal
import sys
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
# Every page test starts the app's runner, whose idle passes would keep a worker of every
# framework waiting (runs.spares); tests/test_spares.py turns them on where it checks them.
os.environ.setdefault("LAB_WARM_WORKERS", "0")


def pytest_configure(config):
    """Ctrl-C reaches the suite's child processes as it reaches a user's. A shell without job
    control (`./lab test &`, nohup, a CI step in the background) starts the suite with SIGINT
    and SIGQUIT ignored, every child inherits that, and the tests that press Ctrl-C on a real
    CLI would wait for an interrupt that never arrives."""
    if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)
    if signal.getsignal(signal.SIGQUIT) is signal.SIG_IGN:
        signal.signal(signal.SIGQUIT, signal.SIG_DFL)
    _share_compiled_programs()
    _make_run_folder(config)


def _make_run_folder(config) -> None:
    """The folder of the results computed once per run (tests/run_memo.py): made by the
    first process of the run (the controller of a parallel run), inherited by every
    process it starts, removed when that process ends."""
    import tempfile

    import run_memo

    if not os.environ.get(run_memo.RUN_DIR_VARIABLE):
        folder = tempfile.mkdtemp(prefix="lab-test-run-")
        os.environ[run_memo.RUN_DIR_VARIABLE] = folder
        config.add_cleanup(lambda: shutil.rmtree(folder, ignore_errors=True))


def _compile_cache_dir() -> Path:
    """Where the suite keeps XLA's and torch.compile's compiled programs:
    LAB_TEST_COMPILE_CACHE, else a folder of the user's in the temporary directory."""
    import tempfile

    chosen = os.environ.get("LAB_TEST_COMPILE_CACHE")
    return Path(chosen) if chosen else Path(tempfile.gettempdir()) / f"lab-test-compile-{os.getuid()}"


def _share_compiled_programs() -> None:
    """The suite compiles the same small programs again and again: the same model at the
    same shapes in every worker process that a queue, harness, spare or CLI test starts,
    and in each Keras backend's own run of the engine suite. JAX's and TensorFlow's XLA
    persistent caches and torch.compile's (TorchInductor's) let every process after the
    first load the executable instead of compiling it again: on this 2-core machine a JAX
    worker's three smoke variants took 27 s with a cold cache and 13 s with a warm one,
    Keras on TensorFlow's five Blood-ResNet steps 38 s and 22 s.

    For the tests only, never in the lab: a cached executable is what XLA compiles from the
    same program and flags (both in the key), so no number a test checks changes, but a run
    of the lab reports its compile time, which a cache hit would hide. Set here, before
    any framework is imported, in the controller and in every process it starts (xdist's
    workers, the workers the tests launch, the suites run again in their own process)."""
    if os.environ.get("LAB_TEST_COMPILE_CACHE") == "off":
        return
    root = _compile_cache_dir()
    os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", str(root / "jax"))
    os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")  # every program: they are small
    os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES", "-1")
    # torch.compile's: a worker of the lab compiles in a fresh folder of its own
    # (workerenv.fresh_compile_cache) unless this variable names one, as here.
    os.environ.setdefault("TORCHINDUCTOR_CACHE_DIR", str(root / "torchinductor"))
    flag = "--tf_xla_persistent_cache_directory"
    tf_flags = os.environ.get("TF_XLA_FLAGS", "")
    if flag not in tf_flags:
        os.environ["TF_XLA_FLAGS"] = f"{tf_flags} {flag}={root / 'tensorflow'}".strip()


def pytest_collection_modifyitems(config, items):
    """The files marked `heavy(seconds=N)` first, the longest first, then the others in
    their order (a stable sort: a file's tests keep their order). The parallel ./lab test
    (pytest-xdist, a file per process at a time, in this order with --no-loadscope-reorder)
    then starts the files that take minutes at once and fills the processes with the short
    ones, instead of ending on a long file alone while the other processes have nothing left
    to run: the longest-first rule for a schedule's length. N is the file's wall time in
    the parallel suite on a 2-core machine, measured; it orders, it limits nothing. The Ray
    cases, which spend two minutes mostly waiting on Ray's processes, started last of the
    heavy files in alphabetical order and ended the run."""
    def order(item):
        heavy = item.get_closest_marker("heavy")
        return (0, -heavy.kwargs.get("seconds", 60)) if heavy else (1, 0)

    items.sort(key=order)


@pytest.fixture(autouse=True)
def _app_scripts_end_as_in_the_ui(monkeypatch):
    """After every script run Streamlit clears Keras' session when Keras is imported
    (`_clean_problem_modules`: keras.backend.clear_session(), a full garbage collection).
    The UI process never imports a framework, so in the app nothing is cleared; a test
    process that earlier tests filled with every framework's objects spent 5-10 s on it per
    AppTest run (the app's tests took 4 min instead of 1), and it reset Keras' global state
    between two Keras tests. The other module Streamlit cleans, matplotlib's pyplot,
    is not the UI's either."""
    if "keras" in sys.modules:
        from streamlit.runtime.scriptrunner import script_runner

        monkeypatch.setattr(script_runner, "_clean_problem_modules", lambda: None)


_SCANNED_COMPONENTS: list = []


@pytest.fixture(autouse=True)
def _installed_components_scanned_once(monkeypatch):
    """Every AppTest scans every installed distribution's metadata for Streamlit
    components (`scan_component_manifests`, called per AppTest object: about 0.3 s of CPU
    for this venv's ~140 packages, 65 times in the app's tests). Nothing is installed
    during a run, so the first scan's answer is the answer of every later one: kept per
    process. The app itself scans once, when its server starts."""
    if "streamlit.testing.v1" not in sys.modules:
        return
    from streamlit.components.v2 import manifest_scanner

    scan = manifest_scanner.scan_component_manifests

    def scanned_once(*args, **kwargs):
        if not _SCANNED_COMPONENTS:
            _SCANNED_COMPONENTS.append(scan(*args, **kwargs))
        return list(_SCANNED_COMPONENTS[0])

    monkeypatch.setattr(manifest_scanner, "scan_component_manifests", scanned_once)


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
