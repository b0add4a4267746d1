"""The app's handles on the engines' result store and job queue.

One ResultStore and one JobQueue per cache directory per server process
(``st.cache_resource`` keyed by LAB_CACHE_DIR, so tests that move the cache get their
own). Neither imports a framework.
"""
from __future__ import annotations

import streamlit as st

from engines.paths import cache_dir

ACTIVE = ("queued", "running")


@st.cache_resource(show_spinner=False)
def _store(path: str):
    from engines.runs.store import ResultStore

    return ResultStore()


@st.cache_resource(show_spinner=False)
def _queue(path: str):
    from engines.runs.queue import JobQueue

    return JobQueue(store=_store(path))


@st.cache_resource(show_spinner=False)
def _runner(path: str) -> bool:
    from engines.runs.queue import start_background_runner

    start_background_runner(_queue(path))
    return True


def store():
    """The ResultStore of this cache directory."""
    return _store(str(cache_dir()))


def queue():
    """The JobQueue of this cache directory."""
    return _queue(str(cache_dir()))


def start_runner() -> None:
    """Start the background thread that runs queued jobs in this server (idempotent)."""
    _runner(str(cache_dir()))


def job_status(job_id: str) -> dict | None:
    if not job_id:
        return None
    try:
        return queue().status(job_id)
    except (KeyError, ValueError, LookupError):
        return None


def ensure_app_navigation() -> None:
    """Call first in every page. Streamlit keeps one process-wide flag, set when the app
    folder has a pages/ directory and cleared by the first st.navigation call; until
    then, a session that opens a deep link (``/speed?comparison=...``) runs that page file
    alone, as an old-style multipage app: no app.py, so no wide layout, no sections in
    the sidebar and no job runner. Clearing the flag and rerunning runs app.py, which
    shows the same page through st.navigation."""
    try:
        from streamlit.runtime.pages_manager import PagesManager
    except ImportError:  # a Streamlit without it has no such mode
        return
    if PagesManager.uses_pages_directory:
        PagesManager.uses_pages_directory = False
        # Once per session: a rerun drops the clicks of the run it replaces. (Streamlit's
        # AppTest sets the flag again before every run; there the page goes on as it is.)
        if not st.session_state.get("_lab_navigation_checked"):
            st.session_state["_lab_navigation_checked"] = True
            st.rerun()
