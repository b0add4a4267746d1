"""`./lab app`: Streamlit's own `streamlit run`, with the modules of the home page imported
in a background thread once the server listens, while the first browser loads Streamlit's
scripts (not before: the server's own start would wait for them). Streamlit runs a page's
script only when a browser session asks for it, so without this the first visitor waits
for the lab's modules (0.3-0.6 s of a 2-core machine) after the browser is ready;
`streamlit run app.py` still works, without the head start (and without the cap on
malloc's arenas below). Nothing here imports a framework.
"""
from __future__ import annotations

import ctypes
import importlib
import logging
import sys
import threading
import time

# What app.py and pages/home.py import beyond Streamlit itself, in the order they need it:
# the first page's script waits on any module this thread is still importing. No pandas:
# the home page draws without it.
PRELOAD = ("labui.backend", "engines.runs.store", "engines.runs.queue", "labui.widgets", "labui.doctor",
           "engines.datasets", "engines.machine")


# glibc's mallopt parameter for the most arenas malloc may create (malloc.h: M_ARENA_MAX).
M_ARENA_MAX = -8
UI_ARENAS = 2


def cap_malloc_arenas(arenas: int = UI_ARENAS) -> bool:
    """Let this process's threads share `arenas` malloc arenas instead of glibc's default of
    eight per core. Streamlit runs every browser session's script in a thread of its own,
    and each new thread's first allocations open an arena that keeps its freed pages: with
    1,000 results in the store and every page opened, the UI process held 225-249 MB
    resident with the default and 212-214 MB with two (benchmarks/app_latency.py, four
    runs back to back). The UI's threads run Python under one lock, so they had nothing
    to gain from arenas of their own. Only this process: the workers it starts inherit its
    environment, not this setting, and keep their frameworks' default. False where the C
    library has no mallopt (not glibc) or refuses the value."""
    try:
        libc = ctypes.CDLL(None)
        return bool(libc.mallopt(M_ARENA_MAX, arenas))
    except (OSError, AttributeError):
        return False


def server_started(timeout_s: float = 60.0) -> bool:
    """Wait until Streamlit's runtime has started (its server listens)."""
    from streamlit.runtime import Runtime, RuntimeState

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if Runtime.exists() and Runtime.instance().state != RuntimeState.INITIAL:
            return True
        time.sleep(0.05)
    return False


def preload(names=PRELOAD, after=None) -> None:
    """Import `names` (once `after()` returns, if given); one that fails is logged and left
    to the page to report."""
    if after is not None:
        after()
    for name in names:
        try:
            importlib.import_module(name)
        except Exception:
            logging.getLogger(__name__).exception("preloading %s", name)


def main(argv: list[str] | None = None) -> None:
    cap_malloc_arenas()  # before any thread of Streamlit's or ours allocates
    threading.Thread(target=preload, kwargs={"after": server_started}, name="lab-preload", daemon=True).start()
    from streamlit.web import cli

    sys.argv = ["streamlit", "run", *(sys.argv[1:] if argv is None else argv)]
    cli.main()


if __name__ == "__main__":
    main()
