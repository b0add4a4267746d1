"""`./lab doctor`'s report for the home page: probed once per server, in the background.

A probe starts every framework in its own worker process (seconds to a minute of CPU),
so the server runs it once, in a thread, and keeps the report (engines.doctor); the page
shows "probing" until it is there, and "Probe again" starts a fresh one (after an install,
say). A job that starts meanwhile stops the probe (its imports would share the cores with
the job's timings); it probes again once the queue is idle. LAB_PROBE_ON_HOME=0 leaves the
probe to `./lab doctor` (the tests set it; a page that cannot afford the CPU may too).
Imports no framework: the probes are processes.
"""
from __future__ import annotations

import threading
import time

import streamlit as st

from engines import doctor, settings

IDLE_POLL_S = 2.0  # how often a probe that a job stopped looks whether the queue is idle again


class Probing:
    """One background probe of every framework, and its report when done."""

    def __init__(self, busy=lambda: False):
        self.busy = busy  # whether the lab's queue has work: a probe a job stopped waits for it
        self.report: dict | None = None
        self.error: str | None = None
        self.started = time.time()
        self.finished: float | None = None
        self._thread = threading.Thread(target=self._run, name="lab-doctor-probe", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            # Looked up when it runs, so that a test's canned probe is the one used.
            probes = doctor.probe_all(idle=True)  # on idle CPU only: the pages come first
            while any(p.error == doctor.PROBE_STOPPED for p in probes):  # a job needed the cores
                while self.busy():
                    time.sleep(IDLE_POLL_S)
                probes = doctor.probe_all(idle=True)
            self.report = doctor.report(doctor.machine_report(), probes)
        except Exception as e:  # noqa: BLE001 - shown on the page instead of a report
            self.error = f"{type(e).__name__}: {e}"
        self.finished = time.time()

    @property
    def done(self) -> bool:
        return self.finished is not None


@st.cache_resource(show_spinner=False)
def _probing() -> Probing:
    from labui import backend

    return Probing(busy=backend.queue().busy)


def probing() -> Probing | None:
    """The server's probe (started on first call), or None where probing is switched off."""
    return _probing() if settings.probe_on_home() else None


def forget() -> None:
    """Drop the kept report: the next page run probes again."""
    _probing.clear()


def by_framework(report: dict | None) -> dict[str, dict]:
    """framework -> its row of the report (empty while probing)."""
    return {r["framework"]: r for r in (report or {}).get("frameworks", [])}


def framework_rows(versions: dict, installed: dict[str, bool], report: dict | None, state: str) -> list[dict]:
    """The home page's table: each framework, installed, its versions, what to install when
    it is not, and from the probe its build, the device it computes on and the verdict
    (`state` while there is none)."""
    from engines.frameworks import FRAMEWORKS

    found = by_framework(report)
    rows = []
    for fw, f in FRAMEWORKS.items():
        probe = found.get(fw, {})
        rows.append({"framework": fw, "installed": "yes" if installed[fw] else "no",
                     "versions": ", ".join(f"{d} {versions.get(d) or '—'}" for d in f.distributions),
                     "to install": "" if installed[fw] else f.install_hint,
                     "build": probe.get("build") or "",
                     "computes on": probe.get("device") or (state if installed[fw] else ""),
                     "verdict": probe.get("verdict") or ""})
    return rows
