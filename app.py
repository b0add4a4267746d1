"""The framework comparison lab: `streamlit run app.py`.

This entry point sets the page up, registers the pages (one file each under pages/)
and starts the background runner that executes queued jobs, one at a time, in worker
processes. UI only: no framework is imported by the app; the workers import them.
"""
import streamlit as st

from labui import backend

st.set_page_config(page_title="Framework comparison lab", page_icon="⚖️", layout="wide")

PAGES = {
    "Lab": [
        st.Page("pages/home.py", title="Home", icon=":material/home:", default=True),
        st.Page("pages/run.py", title="Run", icon=":material/play_circle:"),
    ],
    "Results": [
        st.Page("pages/speed.py", title="Speed", icon=":material/speed:"),
        st.Page("pages/energy_memory.py", title="Energy & memory", icon=":material/bolt:"),
        st.Page("pages/accuracy.py", title="Accuracy", icon=":material/target:"),
        st.Page("pages/papers.py", title="Papers", icon=":material/article:"),
        st.Page("pages/runs.py", title="Runs", icon=":material/table_view:"),
    ],
}

page = st.navigation(PAGES)
problem = backend.check_cache()
if problem:
    st.error(problem, icon=":material/folder_off:")
    st.stop()
backend.start_runner()


@st.fragment(run_every=backend.RENEW_EVERY_S * 3)
def _keep_following() -> None:
    """While this session has a job queued or running, renew its interest in it on every
    page (a job that nobody follows any more is cancelled, not run: engines.runs.followers)."""
    backend.renew_leases()


if st.session_state.get("_lab_looked_at"):
    with st.sidebar:
        _keep_following()
page.run()
