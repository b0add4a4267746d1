"""Workers started ahead of their task: a worker process that has already imported its
framework and waits for one job on its stdin (`python -m engines.runs.worker --spare`).

Why: a task's worker spends its first seconds starting an interpreter and importing its
framework (TensorFlow alone takes 8 s on a 2-core machine), and a queue that starts one
worker after the other pays that for every task, in front of a class. Two remedies, both
keeping one fresh process per task (a spare serves exactly one task, then exits):

- prepare(jobs, gpu): when a job starts, the workers of its frameworks start together, so
  their imports overlap, and the job waits until every one of them has imported before its
  first task runs: no import ever overlaps a task's timing window.
- keep_warm(jobs, gpu): while no task runs anywhere on this queue (the app's runner is
  idle), one spare per installed framework with the default request's environment, started
  one at a time and importing on idle CPU only (the pages opened meanwhile come first); the
  default comparison then starts with its frameworks already imported.

A spare is taken only by a task whose complete worker environment (runs.workerenv) equals
the one it was started with, GPU included; any other task starts a fresh worker as before.
The launcher (runs.launcher.run_job) takes them; LAB_WARM_WORKERS=0 turns both off.
"""
from __future__ import annotations

import atexit
import contextlib
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field

from engines import settings
from engines.paths import REPO_ROOT
from engines.runs.workerenv import with_lab_path, worker_env

log = logging.getLogger(__name__)

READY_TIMEOUT_S = 600.0  # a spare that has not imported by then is stopped; its task starts fresh


_background = threading.Condition()
_stoppers: list = []  # one `stop` per background_imports block running in this process


@contextlib.contextmanager
def background_imports(stop):
    """Marks framework imports that this process runs in the background for another purpose
    (the home page's device probe: engines.doctor.probe_all). A job about to run its first
    task calls `stop` (stop_background_imports) and waits for the block to end: on a 2-core
    machine PyTorch's training ran 8x slower beside the probe, and waiting for it instead
    cost the teacher's first click 26 s; the probe's owner probes again once the queue is idle."""
    with _background:
        _stoppers.append(stop)
    try:
        yield
    finally:
        with _background:
            _stoppers.remove(stop)
            _background.notify_all()


def stop_background_imports(timeout_s: float = 60.0) -> bool:
    """Stop every background_imports block of this process and wait until they have ended;
    False on the timeout."""
    with _background:
        for stop in list(_stoppers):
            stop()
        return _background.wait_for(lambda: not _stoppers, timeout_s)


@dataclass(eq=False)
class Spare:
    """One worker started ahead: its framework, the environment it was started with (the
    one a task must have to take it), its process and the folder of its stderr file."""
    framework: str
    env: dict
    proc: subprocess.Popen
    folder: str
    kept_warm: bool = False  # started by keep_warm (for no job yet), not by a job's prepare
    ready: threading.Event = field(default_factory=threading.Event)

    @property
    def stderr_path(self) -> str:
        return os.path.join(self.folder, "stderr.txt")

    def alive(self) -> bool:
        return self.proc.poll() is None

    def matches(self, framework: str, env: dict) -> bool:
        return self.framework == framework and self.env == env

    def hand_over(self, arguments: dict) -> None:
        """Give the spare its one job (the worker's arguments); its stdin then closes."""
        self.proc.stdin.write((json.dumps(arguments) + "\n").encode())
        self.proc.stdin.close()

    def stop(self) -> None:
        """Stop it (and anything it started) and remove its folder."""
        with contextlib.suppress(OSError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        with contextlib.suppress(OSError, subprocess.TimeoutExpired):
            self.proc.wait(timeout=10)
        for pipe in (self.proc.stdin, self.proc.stdout):
            with contextlib.suppress(OSError):
                pipe.close()
        shutil.rmtree(self.folder, ignore_errors=True)


def start_spare(framework: str, env: dict, idle: bool = False) -> Spare:
    """A spare worker for `framework` in `env`, in its own process group (a cancel kills
    everything it started), watched until it says it is ready or exits. `idle`: it imports
    on idle CPU only (runs.worker.on_idle_cpu), for a spare that no job waits for yet."""
    folder = tempfile.mkdtemp(prefix="lab-spare-")
    with open(os.path.join(folder, "stderr.txt"), "wb") as stderr_file:
        proc = subprocess.Popen([sys.executable, "-m", "engines.runs.worker", "--spare", framework,
                                 *(["--idle"] if idle else [])],
                                cwd=str(REPO_ROOT), env=with_lab_path(env), stdin=subprocess.PIPE,
                                stdout=subprocess.PIPE, stderr=stderr_file, start_new_session=True)
    spare = Spare(framework, env, proc, folder)
    threading.Thread(target=_watch_ready, args=(spare,), name=f"lab-spare-{proc.pid}", daemon=True).start()
    return spare


def _watch_ready(spare: Spare) -> None:
    """Read the spare's events up to its "spare_ready" (then stop reading: the launcher
    reads the rest) or the end of its output (it died: `ready` stays unset)."""
    for raw in iter(spare.proc.stdout.readline, b""):
        try:
            event = json.loads(raw)
        except ValueError:
            continue
        if isinstance(event, dict) and event.get("event") == "spare_ready":
            spare.ready.set()
            return


class SparePool:
    """This process's spares. Thread-safe: each of a queue's lanes runs tasks in a thread."""

    def __init__(self, start=start_spare):
        self._start = start
        self._spares: list[Spare] = []
        self._lock = threading.Lock()

    def __len__(self) -> int:
        with self._lock:
            return len(self._spares)

    def take(self, framework: str, env: dict, timeout_s: float = READY_TIMEOUT_S) -> Spare | None:
        """The spare for a task of `framework` in `env`, out of the pool (used once), once
        it has imported; None when there is none, or it died or never got ready (stopped)."""
        if not settings.warm_workers():
            return None
        with self._lock:
            spare = next((s for s in self._spares if s.matches(framework, env)), None)
            if spare is None:
                return None
            self._spares.remove(spare)
        if spare.ready.wait(timeout_s) and spare.alive():
            return spare
        log.warning("the spare %s worker (pid %s) did not get ready; the task starts a fresh one",
                    framework, spare.proc.pid)
        spare.stop()
        return None

    def prepare(self, jobs, gpu=None, timeout_s: float = READY_TIMEOUT_S) -> list[Spare]:
        """Workers for a job's tasks (one per framework: its first task), started together,
        and waited for until each has imported (or died). Spares that keep_warm started and
        that are still importing are stopped first: one that no task here wants would import
        while the job's tasks are timed, and one that a task wants imports on idle CPU only,
        which a job must not wait on (on a busy machine it may get none); a fresh one starts
        in its place (another lane's job keeps its own). Returns the spares started here
        (for release)."""
        if not settings.warm_workers():
            return []
        wanted = self._wanted(jobs, gpu)
        started: list[Spare] = []
        with self._lock:
            self._drop(lambda s: s.kept_warm and not s.ready.is_set())
            for framework, env in wanted:
                if not any(s.matches(framework, env) for s in self._spares):
                    spare = self._start(framework, env)
                    self._spares.append(spare)
                    started.append(spare)
            waiting = [s for s in self._spares if any(s.matches(*w) for w in wanted)]
        deadline = time.monotonic() + timeout_s
        for spare in waiting:
            while not spare.ready.wait(0.2) and spare.alive() and time.monotonic() < deadline:
                pass
        return started

    def release(self, spares: list[Spare]) -> None:
        """Stop the spares of a finished job that no task took."""
        with self._lock:
            self._drop(lambda s: s in spares)

    def keep_warm(self, jobs, gpu=None) -> Spare | None:
        """One step towards a spare for each of `jobs` (the default request's, one per
        installed framework): start the first one missing, unless one is still starting
        (one import at a time, so a page being drawn keeps a core). Spares of other
        environments are left alone. Returns the spare started, if any."""
        if not settings.warm_workers():
            return None
        wanted = self._wanted(jobs, gpu)
        with self._lock:
            self._drop(lambda s: not s.alive())
            if any(not s.ready.is_set() for s in self._spares):
                return None
            for framework, env in wanted:
                if not any(s.matches(framework, env) for s in self._spares):
                    spare = self._start(framework, env, idle=True)  # no job waits for it: the pages come first
                    spare.kept_warm = True
                    self._spares.append(spare)
                    return spare
        return None

    def close(self) -> None:
        with self._lock:
            self._drop(lambda s: True)

    @staticmethod
    def _wanted(jobs, gpu) -> list[tuple[str, dict]]:
        wanted: list[tuple[str, dict]] = []
        for job in jobs:
            pair = (job.framework, worker_env(job, gpu=gpu))  # what the task's launcher compares
            if pair not in wanted:
                wanted.append(pair)
        return wanted

    def _drop(self, which) -> None:
        """Stop and forget the spares `which` selects (the lock is held)."""
        for spare in [s for s in self._spares if which(s)]:
            self._spares.remove(spare)
            spare.stop()


SPARES = SparePool()
atexit.register(SPARES.close)
