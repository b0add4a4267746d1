"""`./lab app`: Streamlit's own `streamlit run`, with the modules of the home page imported
in a background thread while the server starts and the first browser loads Streamlit's
scripts. Streamlit runs a page's script only when a browser session asks for it, so
without this the first visitor waits for pandas and the lab's modules (0.6-0.8 s of a
2-core machine) after the browser is ready; `streamlit run app.py` still works, without
the head start. Nothing here imports a framework.
"""
from __future__ import annotations

import importlib
import logging
import sys
import threading

# What pages/home.py and app.py import beyond Streamlit itself, heaviest first.
PRELOAD = ("pandas", "engines.runs.store", "engines.runs.queue", "engines.datasets", "engines.machine",
           "labui.backend", "labui.widgets", "labui.doctor", "labui.results")


def preload(names=PRELOAD) -> None:
    """Import `names`; one that fails is logged and left to the page to report."""
    for name in names:
        try:
            importlib.import_module(name)
        except Exception:
            logging.getLogger(__name__).exception("preloading %s", name)


def main(argv: list[str] | None = None) -> None:
    threading.Thread(target=preload, name="lab-preload", daemon=True).start()
    from streamlit.web import cli

    sys.argv = ["streamlit", "run", *(sys.argv[1:] if argv is None else argv)]
    cli.main()


if __name__ == "__main__":
    main()
