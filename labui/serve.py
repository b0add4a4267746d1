"""`./lab app`: Streamlit's own `streamlit run`, with the modules of the home page imported
in a background thread once the server listens, while the first browser loads Streamlit's
scripts (not before: the server's own start would wait for them). Streamlit runs a page's
script only when a browser session asks for it, so without this the first visitor waits
for the lab's modules (0.3-0.6 s of a 2-core machine) after the browser is ready;
`streamlit run app.py` still works, without the head start. Nothing here imports a
framework.
"""
from __future__ import annotations

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
    threading.Thread(target=preload, kwargs={"after": server_started}, name="lab-preload", daemon=True).start()
    from streamlit.web import cli

    sys.argv = ["streamlit", "run", *(sys.argv[1:] if argv is None else argv)]
    cli.main()


if __name__ == "__main__":
    main()
