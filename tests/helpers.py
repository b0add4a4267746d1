"""Small helpers shared by the tests (and by benchmarks/queue_stress.py through
tests/queue_fakes.py): waiting for another process or thread with a deadline, whether a
process still runs, the skip mark for a test that needs a framework installed, and the
frameworks a test module checks in this process, the Run page as a shared link opens it,
and the Markdown tables a page drew.

Tests import this as `helpers` (pytest puts tests/ on sys.path, as it does for conftest);
it is no test module, so pytest does not collect it.
"""
from __future__ import annotations

import http.server
import re
import threading
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


def markdown_tables(at) -> list[list[dict]]:
    """The Markdown tables an AppTest page drew (labui.text.markdown_table), each as its
    rows of {column: cell}, every cell unescaped: the text a reader sees."""
    tables = []
    for element in at.markdown:
        lines = str(element.value).splitlines()
        if len(lines) < 2 or not lines[0].startswith("| ") or not re.fullmatch(r"\|( --- \|)+", lines[1]):
            continue
        columns, *rows = ([re.sub(r"\\(.)", r"\1", cell.strip()) for cell in re.split(r"(?<!\\)\|", line)[1:-1]]
                          for line in (lines[0], *lines[2:]))
        tables.append([dict(zip(columns, row)) for row in rows])
    return tables


def needs_framework(name: str):
    """Skip mark for a test that runs `name` for real: skipped, with the reason, where that
    framework is not installed (it would otherwise fail on what it cannot run)."""
    import pytest

    from engines.frameworks import FRAMEWORKS, installed

    return pytest.mark.skipif(not installed(name), reason=f"{FRAMEWORKS[name].label} is not installed")


def cheapest_compile(framework: str) -> bool:
    """The `compile` setting under which a few steps of a small model cost least on a CPU,
    for tests whose subject is not compiling (data order, seeding, errors, BatchNorm
    statistics); the agreement and round-trip tests choose theirs on purpose. It is the
    framework's compile_default (engines/frameworks, measured on the default comparison),
    which these tests' own steps agree with:

    On where JAX computes (Flax, Keras on JAX): op-by-op dispatch compiles each op for its
    shapes on first use, so a few eager steps cost more than one jax.jit (cold caches, 2
    cores: Flax's five fan_arch1 steps 11.4 s eager, 4.5 s compiled; Keras on JAX's
    twice-trained PathMNIST-CNN 28.8 s and 14.1 s). Off elsewhere, where compiling is the
    dearer way (Keras on TensorFlow's XLA: the same five steps 5.3 s, 1.4 s as a
    tf.function; torch.compile about a minute)."""
    from engines.frameworks import FRAMEWORKS

    return FRAMEWORKS[framework].compile_default


def frameworks_under_test() -> list[str]:
    """The frameworks a test module runs in this process: those that can run here (Keras
    on JAX or on PyTorch need their own KERAS_BACKEND), narrowed to LAB_TEST_FRAMEWORKS
    where it is set: tests/keras_backends.py runs such modules again in a process
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


def run_page_for(job: str):
    """The Run page as a browser opening a shared link (`?job=`) sees it: a new session on
    the app, the job's id in the address from the first run on. Returns the AppTest."""
    from pathlib import Path

    from streamlit.testing.v1 import AppTest

    at = AppTest.from_file(str(Path(__file__).resolve().parents[1] / "app.py"), default_timeout=90)
    at.query_params["job"] = job
    at.run()
    at.switch_page("pages/run.py")
    at.query_params["job"] = job
    at.run()
    return at


class LocalServer:
    """A server on 127.0.0.1 for the download code (datasets, pretrained weights): serves
    `payload` at any path (`base` + a path, or `url`), counts the requests; `truncate_to`
    makes it promise more than it sends. A context manager."""

    def __init__(self, payload: bytes, truncate_to: int | None = None):
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                outer.requests += 1
                self.send_response(200)
                self.send_header("Content-Length", str(len(outer.payload)))
                self.end_headers()
                body = outer.payload if outer.truncate_to is None else outer.payload[:outer.truncate_to]
                self.wfile.write(body)
                self.wfile.flush()
                self.close_connection = True

            def log_message(self, *args):
                pass

        self.payload, self.truncate_to, self.requests = payload, truncate_to, 0
        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.base = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.url = f"{self.base}/file.npz"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.httpd.shutdown()
        self.httpd.server_close()
