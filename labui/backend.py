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
def _queue(path: str, executor: str = "local", address: str | None = None):
    """The queue whose jobs this server submits and runs: this machine's (one task per
    GPU), or a Ray cluster's (LAB_EXECUTOR=ray; ray is imported only then, in the runner
    thread that first counts the cluster's GPUs)."""
    from engines.runs.queue import JobQueue

    if executor == "ray":
        from engines.runs.rayexec import RayExecutor

        return JobQueue(store=_store(path), executor=RayExecutor(address))
    return JobQueue(store=_store(path))


@st.cache_resource(show_spinner=False)
def _runner(path: str, executor: str = "local", address: str | None = None) -> bool:
    from engines.runs.queue import start_background_runner

    start_background_runner(_queue(path, executor, address))
    return True


def _where() -> tuple[str, str, str | None]:
    """(cache folder, executor, Ray address): the app's setting (LAB_EXECUTOR, LAB_RAY_ADDRESS)."""
    from engines import settings

    return str(cache_dir()), settings.executor(), settings.ray_address()


def store():
    """The ResultStore of this cache directory."""
    return _store(str(cache_dir()))


def queue():
    """The JobQueue of this cache directory and executor setting."""
    return _queue(*_where())


def start_runner() -> None:
    """Start the background threads that run queued jobs in this server (idempotent)."""
    _runner(*_where())


def where_jobs_run() -> str:
    """One sentence for the Run page: where a queued job runs and how many at once."""
    _, executor, address = _where()
    if executor == "ray":
        cluster = f"the Ray cluster at {address}" if address else "a Ray instance on this machine"
        return f"on {cluster}, one task per GPU it has (LAB_EXECUTOR=ray)"
    gpus = [lane.gpu for lane in queue().lanes if lane.gpu is not None]
    if len(gpus) > 1:
        return f"on this machine's GPUs {', '.join(gpus)}, one task on each at once (LAB_GPUS)"
    return "on this machine, one task at a time"


def job_status(job_id: str) -> dict | None:
    if not job_id:
        return None
    try:
        return queue().status(job_id)
    except (KeyError, ValueError, LookupError):
        return None


# -- this browser session as a follower of its jobs (engines.runs.followers) -------------------
TOKEN_KEY = "_lab_follower_token"


def session_token() -> str:
    """This session's follower token: made once, kept in st.session_state (never shown,
    never in the URL), so that only this session can cancel what it submitted."""
    import uuid

    if TOKEN_KEY not in st.session_state:
        st.session_state[TOKEN_KEY] = uuid.uuid4().hex
    return st.session_state[TOKEN_KEY]


def submitter() -> str:
    """Whom this session's jobs count against (the per-submitter cap, the round robin): its
    computer's address when the app is open to a network, else the session itself."""
    try:
        address = st.context.ip_address
    except Exception:  # noqa: BLE001 - no request context (a test harness)
        address = None
    if isinstance(address, str) and address:
        return f"browser {address}"
    return f"browser session {session_token()[:8]}"


def session_follower():
    from engines import settings
    from engines.runs.followers import Follower

    return Follower.browser(session_token(), submitter(), settings.browser_lease_s())


def submit(spec, *, force: bool = False) -> str:
    """Queue `spec` for this session (its owner); the session renews its interest from
    now on (renew_leases). Raises SpecError or QueueFull, whose messages the page shows."""
    import time

    job_id = queue().submit(spec, force=force, follower=session_follower())
    st.session_state.setdefault("_lab_looked_at", {})[job_id] = ("owner", time.monotonic())
    return job_id


def check_cache() -> str | None:
    """None when the cache folder can be used; else the one-line reason (a read-only or
    full folder, a file where it should be), for the app to show instead of a traceback."""
    import sqlite3

    try:
        store()
        queue()
    except (OSError, sqlite3.Error) as e:
        return (f"The lab cannot use its cache folder {cache_dir()}: {e}. It needs a writable folder with free "
                "space (set LAB_CACHE_DIR to another one and restart the app).")
    return None


RENEW_EVERY_S = 10.0  # a page polls every second or two; its lease needs renewing far less often


def look_at(job_id: str) -> str | None:
    """Renew this session's interest in a job it shows (at most every RENEW_EVERY_S):
    "owner" (it may cancel), "watcher" (a link from someone else, or this page after a
    reload: progress only), None (an ended job this session did not follow)."""
    import time

    seen = st.session_state.setdefault("_lab_looked_at", {})
    role, when = seen.get(job_id, (None, 0.0))
    if role is None or time.monotonic() - when >= RENEW_EVERY_S:
        try:
            role = queue().follow(job_id, session_follower())
        except (KeyError, ValueError, LookupError):
            role = None
        seen[job_id] = (role, time.monotonic())
    return role


def renew_leases() -> int:
    """Renew this session's interest in every job it has followed that has not ended
    (the app calls this on every page, so looking at results keeps a queued job alive);
    returns how many are still active."""
    active = 0
    for job_id in list(st.session_state.get("_lab_looked_at", {})):
        s = job_status(job_id)
        if s is not None and s["state"] in ACTIVE:
            look_at(job_id)
            active += 1
    return active


def cancel(job_id: str) -> bool:
    return queue().cancel(job_id, session_follower())


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
