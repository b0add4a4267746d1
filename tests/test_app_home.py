"""The home page renders on a machine without a GPU and never imports a framework."""
import subprocess
import sys

from conftest import REPO
from helpers import markdown_tables
from streamlit.testing.v1 import AppTest

from engines.frameworks import FRAMEWORKS


def test_home_page_renders_machine_and_datasets():
    at = AppTest.from_file(str(REPO / "app.py"), default_timeout=60).run()
    assert not at.exception
    assert at.title[0].value == "Framework comparison lab"
    headers = [h.value for h in at.header]
    assert "This machine" in headers and "Datasets here" in headers
    frameworks, datasets = markdown_tables(at)
    assert [row["framework"] for row in frameworks] == list(FRAMEWORKS)  # every row of the table, in its order
    assert "digits" in {row["name"] for row in datasets}
    assert [row["state"] for row in datasets if row["name"] == "chestmnist"] == ["unsupported"]


def test_ui_modules_import_no_framework():
    code = ("import sys, runpy; sys.argv=['x']; import engines.datasets, engines.machine, engines.cli; "
            "bad=[m for m in ('torch','tensorflow','jax','keras') if m in sys.modules]; "
            "print(bad); sys.exit(1 if bad else 0)")
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_app_preloads_the_home_pages_modules_and_nothing_heavier(caplog):
    """./lab app (labui.serve) imports the home page's modules while the first browser
    loads: none of them is a framework, pandas, SciPy's statistics or Altair, and a module that
    fails to import is logged for the page to report, never fatal to the server."""
    from labui import serve

    code = ("import sys; from labui.serve import preload, PRELOAD; preload(); "
            "assert all(m in sys.modules for m in PRELOAD); "
            "print([m for m in ('torch', 'tensorflow', 'jax', 'keras', 'pandas', 'scipy.stats', 'altair') "
            "if m in sys.modules])")
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.strip().splitlines()[-1] == "[]", result.stdout
    serve.preload(("labui.no_such_module",))
    assert "preloading labui.no_such_module" in caplog.text


_ARENAS_IN_USE = """
import ctypes, sys, threading
from labui import serve
if sys.argv[1] == "cap":
    assert serve.cap_malloc_arenas()
barrier = threading.Barrier(9)
def session():  # as a script thread: allocations above pymalloc's 512 bytes reach malloc
    held = [bytearray(2000) for _ in range(200)]
    barrier.wait()
    barrier.wait()
threads = [threading.Thread(target=session) for _ in range(8)]
for t in threads:
    t.start()
barrier.wait()  # all eight allocated and alive
libc = ctypes.CDLL(None)
libc.fdopen.restype = ctypes.c_void_p
out = libc.fdopen(1, b"w")
libc.malloc_info(0, ctypes.c_void_p(out))
libc.fflush(ctypes.c_void_p(out))
barrier.wait()
"""


def test_the_ui_process_caps_mallocs_arenas_for_its_session_threads():
    """./lab app's process (labui.serve) lets Streamlit's session threads share two malloc
    arenas instead of opening one each (the UI's resident memory, issue 16): eight live
    threads that allocate end with two arenas, where the same threads without the cap
    open more (glibc's malloc_info counts them)."""
    from labui import serve

    def arenas(mode: str) -> int:
        done = subprocess.run([sys.executable, "-c", _ARENAS_IN_USE, mode], cwd=REPO, capture_output=True,
                              text=True, timeout=60)
        assert done.returncode == 0, done.stderr
        return done.stdout.count("<heap nr=")

    capped, default = arenas("cap"), arenas("default")
    assert capped <= serve.UI_ARENAS and default > capped, (capped, default)


def test_the_home_page_renders_without_pandas_scipy_or_altair():
    """The first page a visitor sees imports neither SciPy's statistics nor Altair (a
    third and a sixth of the UI's import time, issue 16): they are imported where an
    interval or a test is computed and where a chart is drawn. Nor pandas and pyarrow:
    its tables are Markdown (with them the first page took 0.7 s longer in Chromium)."""
    code = ("import sys; from streamlit.testing.v1 import AppTest; "
            "at = AppTest.from_file('app.py', default_timeout=60).run(); "
            "assert not at.exception, at.exception; "
            "assert at.title[0].value == 'Framework comparison lab'; "
            "print([m for m in ('pandas', 'pyarrow', 'scipy.stats', 'altair') if m in sys.modules])")
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.strip().splitlines()[-1] == "[]", result.stdout
