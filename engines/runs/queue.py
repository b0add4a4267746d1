"""The job queue shared by every Streamlit session and CLI process on this machine.

Why it looks like this:
- State lives in SQLite (WAL mode) under `cache_dir()/queue`, so every process reads the
  same jobs, positions and progress; a submit is one IMMEDIATE transaction, which makes
  "is an identical job already queued?" and "queue it" atomic across processes.
- One task per lane at a time (runs.lanes): a lane is a GPU of this machine (LAB_GPUS), the
  CPU on a machine without one, or a slot of a Ray cluster (runs.rayexec). A runner holds
  its lane's `fcntl.flock` for the whole job and writes a heartbeat beside it; the kernel
  drops the lock when its holder dies, however it dies, so a crashed runner cannot keep
  a GPU. Jobs run side by side, one per lane; a running job takes more free lanes for its
  other tasks while no other job waits. With one lane (a CPU-only machine, one GPU) this
  is one task at a time, as timings need. A task whose key another lane is computing
  waits for it and is then served from the cache.
- Executors: a job records where it runs ("local" or "ray"); a queue serves the jobs of
  its executor's kind, so a CLI sending a sweep to a Ray cluster and the app's local
  queue share one database without running each other's jobs.
- No daemon needed: `wait` runs queued jobs itself whenever it can take the lock, and the
  Streamlit server starts one background runner thread (`start_background_runner`). A
  waiter that sees its running job's runner gone (dead, or no heartbeat for
  LAB_RUNNER_STALE_S) takes the lock and recovers the job: the interrupted task is run
  again (once; a second loss marks it "crashed") for whoever still follows the job.
- Followers (runs.followers): every CLI process and browser session that waits for a job
  or looks at it is a row with a token; a job nobody follows any more is cancelled rather
  than run (its submitter's process was killed while it waited, say). Cancel removes the
  caller's interest only; the job is cancelled when no owner is left.
- Fair share (engines.settings): at most LAB_MAX_QUEUED_JOBS queued jobs per submitter
  and LAB_MAX_TASKS tasks per request, refused at submit; the next job is taken round
  robin between submitters (the one served longest ago first), so one user's hundred jobs
  do not stand in front of another user's one; every task has a time limit
  (LAB_TASK_TIMEOUT_S: its worker's process group is killed, the task is "timed_out").
- Results go to the ResultStore by task key (one key per framework x seed, from that job
  alone), so the same task is never computed twice, across jobs, requests and processes;
  `force` recomputes. Each result is recorded as a member of the request's comparison.

Job states: queued -> running -> done | failed | cancelled (running -> queued when a
recovered job is run again). A task records the lane it ran on.
Task states: queued | cached | running | ok | oom | error | crashed | timed_out | cancelled.
"""
from __future__ import annotations

import collections
import contextlib
import json
import logging
import os
import signal
import sqlite3
import threading
import time
import traceback
import uuid
from collections.abc import Callable
from pathlib import Path

from engines import devices, settings
from engines.paths import cache_dir
from engines.runs import lanes as lanes_
from engines.runs.followers import (
    HOST,
    OWNER,
    WATCHER,
    Follower,
    identity_alive,
    pid_alive,
    process_identity,
    row_alive,
)
from engines.runs.result import CACHEABLE_STATUSES, RESULT_STATUSES, RunResult
from engines.runs.spec import RunSpec, SpecError, environment_fingerprint
from engines.runs.store import CorruptEntry, ResultStore, connect, damaged_database, set_aside, transaction

log = logging.getLogger(__name__)

FINISHED = ("done", "failed", "cancelled")
FAILED_TASK_STATES = ("error", "crashed", "timed_out")
PROGRESS_INTERVAL_S = 0.5  # step events arrive many times a second; the UI polls at ~1 Hz
CANCEL_POLL_S = 0.5
HEARTBEAT_S = 2.0  # how often a runner says it is alive (LAB_RUNNER_STALE_S says when it is not)
REAP_EVERY_S = 5.0  # how often a waiter cancels queued jobs that nobody follows any more
LANE_POLL_S = 0.5  # how often a running job looks for a free lane for its other tasks
MAX_ATTEMPTS = 2  # a task whose runner died is run again once; the second loss is "crashed"
JOB_ID_LENGTH = 12  # hex digits (the app accepts nothing else in ?job=)
ABANDONED = ("cancelled before it started: nobody follows it any more (its submitter's process ended, or its "
             "browser session closed)")

Executor = Callable[..., RunResult]  # engines.runs.launcher.run_job's signature

_SCHEMA_SQL = """
CREATE TABLE IF NOT EXISTS jobs (
    id TEXT PRIMARY KEY, request_key TEXT NOT NULL, force INTEGER NOT NULL, spec TEXT NOT NULL,
    state TEXT NOT NULL, submitter TEXT, followers INTEGER NOT NULL DEFAULT 1,
    submitted_at REAL NOT NULL, started_at REAL, finished_at REAL, message TEXT,
    runner_pid INTEGER, runner_host TEXT, cancel_requested INTEGER NOT NULL DEFAULT 0,
    runner TEXT, heartbeat_at REAL, executor TEXT NOT NULL DEFAULT 'local', lane TEXT);
CREATE INDEX IF NOT EXISTS jobs_state ON jobs(state, submitted_at);
CREATE INDEX IF NOT EXISTS jobs_request ON jobs(request_key, state);
CREATE TABLE IF NOT EXISTS tasks (
    job_id TEXT NOT NULL, idx INTEGER NOT NULL, framework TEXT NOT NULL, seed INTEGER NOT NULL,
    key TEXT NOT NULL, state TEXT NOT NULL, progress TEXT, history TEXT, message TEXT,
    result TEXT, worker TEXT, started_at REAL, finished_at REAL, attempts INTEGER NOT NULL DEFAULT 0,
    lane TEXT, train_key TEXT, PRIMARY KEY (job_id, idx));
CREATE INDEX IF NOT EXISTS tasks_state ON tasks(state, key);
CREATE TABLE IF NOT EXISTS followers (
    job_id TEXT NOT NULL, token TEXT NOT NULL, role TEXT NOT NULL, kind TEXT NOT NULL,
    process TEXT, host TEXT, lease_until REAL, seen_at REAL NOT NULL, since REAL NOT NULL,
    PRIMARY KEY (job_id, token));
"""
# Columns added after the first version: a queue database made by it gains them.
_ADDED_COLUMNS = {"jobs": {"runner": "TEXT", "heartbeat_at": "REAL", "executor": "TEXT NOT NULL DEFAULT 'local'",
                           "lane": "TEXT"},
                  "tasks": {"attempts": "INTEGER NOT NULL DEFAULT 0", "lane": "TEXT", "train_key": "TEXT"}}


class QueueFull(Exception):
    """A submitter already has as many queued jobs as LAB_MAX_QUEUED_JOBS allows."""


class LocalExecutor:
    """The real executor: a fresh worker process per task (engines.runs.launcher), started
    ahead where that saves time without touching a measurement (engines.runs.spares)."""
    kind = "local"

    def __call__(self, job: RunSpec, **kwargs) -> RunResult:
        from engines.runs.launcher import run_job

        return run_job(job, **kwargs)

    @staticmethod
    def prepare(jobs: list[RunSpec], gpu=None):
        """A job's workers started together, each past its framework import, before the
        job's first task; returns what `release` takes at the job's end."""
        from engines.runs.spares import SPARES

        return SPARES.prepare(jobs, gpu)

    @staticmethod
    def release(prepared) -> None:
        from engines.runs.spares import SPARES

        SPARES.release(prepared)

    @staticmethod
    def keep_warm(gpu=None) -> None:
        """With the queue idle: towards one waiting worker per installed framework, with the
        default request's environment (the default comparison's tasks take them)."""
        from engines.runs.spares import SPARES

        jobs = default_jobs()
        if jobs:
            SPARES.keep_warm(list(jobs), gpu)


DEFAULT_JOBS_TTL_S = 60.0  # how long default_jobs' answer is kept
_default_jobs: tuple[float, tuple[RunSpec, ...]] = (float("-inf"), ())


def default_jobs(now: float | None = None) -> tuple[RunSpec, ...]:
    """The default request's job for each installed framework, built at most once a
    minute. The idle runner asks every second in the app's process: finding the installed
    frameworks (package metadata) and building six jobs took 25 ms of the server's Python
    each time, beside the pages being drawn. A framework installed while the app runs is
    seen within the minute."""
    global _default_jobs
    from engines.frameworks import FRAMEWORKS, installed

    now = time.monotonic() if now is None else now
    built_at, jobs = _default_jobs
    if now - built_at < DEFAULT_JOBS_TTL_S:
        return jobs
    frameworks = tuple(fw for fw in FRAMEWORKS if installed(fw))
    jobs: tuple[RunSpec, ...] = ()
    if frameworks:
        request = RunSpec(frameworks=frameworks)
        jobs = tuple(request.job(fw, 0) for fw in frameworks)
    _default_jobs = (now, jobs)
    return jobs


default_executor = LocalExecutor()


def executor_kind(executor) -> str:
    """Where an executor runs tasks: "ray" for runs.rayexec's, "local" for the launcher
    (and for a test's fake, which stands in for it)."""
    return getattr(executor, "kind", "local")


def request_key(spec: RunSpec, task_keys: list[str]) -> str:
    """Identical requests (the same request, the same jobs on this machine) share a job."""
    import hashlib

    text = json.dumps({"request": spec.to_dict(), "tasks": task_keys}, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def _empty_progress() -> dict:
    return {"stage": None, "epoch": None, "epochs": None, "step": None, "steps": None, "loss": None}


_process_identity = process_identity  # the name the tests and benchmarks use


def valid_job_id(text) -> bool:
    """A job id as submit makes them: JOB_ID_LENGTH lowercase hex digits."""
    return (isinstance(text, str) and len(text) == JOB_ID_LENGTH
            and all(c in "0123456789abcdef" for c in text))


class JobQueue:
    def __init__(self, path=None, store: ResultStore | None = None, executor: Executor | None = None):
        self.path = Path(path) if path is not None else cache_dir() / "queue"
        self.path.mkdir(parents=True, exist_ok=True)
        self.db_path = self.path / "queue.sqlite3"
        self.store = store if store is not None else ResultStore()
        self.executor = executor or default_executor
        self.kind = executor_kind(self.executor)
        self._lanes: list[lanes_.Lane] | None = None
        self._runners: dict[threading.Thread, str | None] = {}  # this process's runner threads -> their job
        self._runners_guard = threading.Lock()
        self._init_db()

    @property
    def lanes(self) -> list[lanes_.Lane]:
        """Where this queue runs tasks: the executor's lanes (a Ray cluster's), else this
        machine's (runs.lanes.local_lanes). Read once: the GPUs do not change under it."""
        if self._lanes is None:
            own = getattr(self.executor, "lanes", None)
            self._lanes = list(own()) if callable(own) else lanes_.local_lanes()
        return self._lanes

    # -- database -----------------------------------------------------------------------
    def _connect(self) -> sqlite3.Connection:
        return connect(self.db_path)

    def _tx(self, write: bool = True):
        """One transaction; IMMEDIATE for writes so that read-then-write is atomic."""
        return transaction(self.db_path, write)

    def _init_db(self) -> None:
        # Several processes may create the queue at once; WAL lets readers go on while
        # the runner writes progress. Switching to WAL can meet a busy database: retry.
        for attempt in range(50):
            try:
                con = self._connect()
                try:
                    con.execute("PRAGMA journal_mode=WAL")
                    con.executescript(_SCHEMA_SQL)
                    for table, columns in _ADDED_COLUMNS.items():
                        have = {row[1] for row in con.execute(f"PRAGMA table_info({table})")}
                        for name, kind in columns.items():
                            if name not in have:
                                with contextlib.suppress(sqlite3.OperationalError):  # another process did it
                                    con.execute(f"ALTER TABLE {table} ADD COLUMN {name} {kind}")
                finally:
                    con.close()
                return
            except sqlite3.DatabaseError as e:
                if damaged_database(e):  # the jobs it held are lost with it; the queue must go on
                    set_aside(self.db_path, e)
                    continue
                if "locked" not in str(e) or attempt == 49:
                    raise
                time.sleep(0.1)

    # -- submitting and reading ---------------------------------------------------------
    def submit(self, spec: RunSpec, *, force: bool = False, submitter: str | None = None,
               follower: Follower | None = None) -> str:
        """Queue `spec` for `follower` (default: this process) and return the job id. An
        identical request already queued or running returns that job's id, with the
        follower added as one more owner; tasks whose result is cached are "cached" at once.
        Refused before anything is queued: SpecError for a request over the limits or for
        data that is not here (the field named), QueueFull when the submitter (default:
        the follower's) already has LAB_MAX_QUEUED_JOBS queued jobs."""
        follower = follower or Follower.this_process()
        submitter = submitter or follower.submitter
        admit(spec)
        tasks = [(fw, seed, spec.job(fw, seed).job_key(environment_fingerprint(fw))) for fw, seed in spec.tasks()]
        request = request_key(spec, [key for _, _, key in tasks])
        # Read the cache outside the transaction: it may be slow and must not hold the queue.
        cached = {} if force else {key: r for _, _, key in tasks if _serves(spec, r := self.store.get(key))}
        for key in cached:  # a cached result answers this request's comparison too
            self.store.add_to_comparison(spec, key)
        now = time.time()
        all_cached = len(cached) == len(tasks)
        with self._tx() as con:
            row = con.execute("SELECT id FROM jobs WHERE request_key=? AND force=? AND executor=? "
                              "AND state IN ('queued','running') ORDER BY rowid LIMIT 1",
                              (request, int(force), self.kind)).fetchone()
            if row is not None:
                self._add_follower(con, row["id"], follower, OWNER, now)
                return row["id"]
            if not all_cached:
                self._check_room(con, submitter)
            job_id = uuid.uuid4().hex[:JOB_ID_LENGTH]
            con.execute("INSERT INTO jobs (id, request_key, force, spec, state, submitter, submitted_at, started_at, "
                        "finished_at, message, executor) VALUES (?,?,?,?,?,?,?,?,?,?,?)",
                        (job_id, request, int(force), json.dumps(spec.to_dict()), "done" if all_cached else "queued",
                         submitter, now, now if all_cached else None, now if all_cached else None,
                         f"all {len(tasks)} results came from the cache" if all_cached else None, self.kind))
            for idx, (fw, seed, key) in enumerate(tasks):
                hit = cached.get(key)
                con.execute("INSERT INTO tasks (job_id, idx, framework, seed, key, state, progress, history, message, "
                            "result) VALUES (?,?,?,?,?,?,?,?,?,?)",
                            (job_id, idx, fw, seed, key, "cached" if hit else "queued", json.dumps(_empty_progress()),
                             json.dumps(_history(hit)), "from the cache" if hit else None,
                             hit.to_json() if hit else None))
            self._add_follower(con, job_id, follower, OWNER, now)
        return job_id

    @staticmethod
    def _check_room(con, submitter: str) -> None:
        limit = settings.max_queued_jobs()
        queued = con.execute("SELECT COUNT(*) FROM jobs WHERE state='queued' AND submitter=?",
                             (submitter,)).fetchone()[0]
        if queued >= limit:
            raise QueueFull(f"{submitter} already has {queued} job(s) waiting in the queue, the most one submitter "
                            f"may have (LAB_MAX_QUEUED_JOBS={limit}): wait until one of them starts, or cancel one")

    @staticmethod
    def _add_follower(con, job_id: str, follower: Follower, role: str, now: float) -> None:
        """Add (or renew) a follower; an owner stays an owner when it looks again."""
        con.execute("INSERT INTO followers (job_id, token, role, kind, process, host, lease_until, seen_at, since) "
                    "VALUES (?,?,?,?,?,?,?,?,?) ON CONFLICT(job_id, token) DO UPDATE SET "
                    "role=CASE WHEN followers.role='owner' THEN 'owner' ELSE excluded.role END, "
                    "process=excluded.process, host=excluded.host, lease_until=excluded.lease_until, "
                    "seen_at=excluded.seen_at",
                    (job_id, follower.token, role, follower.kind, follower.process, HOST,
                     follower.lease_until(now), now, now))

    def follow(self, job_id: str, follower: Follower | None = None, *, role: str = WATCHER) -> str | None:
        """Renew `follower`'s interest in a job that has not ended (a watcher is added if it
        did not follow it yet): the page calls this while it shows the job, a waiter while it
        waits. Returns its role ("owner" or "watcher"), or None for an unknown or ended job."""
        follower = follower or Follower.this_process()
        now = time.time()
        with self._tx() as con:
            job = con.execute("SELECT state FROM jobs WHERE id=?", (job_id,)).fetchone()
            if job is None:
                return None
            if job["state"] in FINISHED:
                row = con.execute("SELECT role FROM followers WHERE job_id=? AND token=?",
                                  (job_id, follower.token)).fetchone()
                return row["role"] if row else None
            self._add_follower(con, job_id, follower, role, now)
            return con.execute("SELECT role FROM followers WHERE job_id=? AND token=?",
                               (job_id, follower.token)).fetchone()["role"]

    def role(self, job_id: str, token: str) -> str | None:
        """"owner", "watcher" or None: what the holder of `token` may do with the job."""
        with self._tx(write=False) as con:
            row = con.execute("SELECT role FROM followers WHERE job_id=? AND token=?", (job_id, token)).fetchone()
        return row["role"] if row else None

    def status(self, job_id: str) -> dict:
        with self._tx(write=False) as con:
            job = con.execute("SELECT rowid, * FROM jobs WHERE id=?", (job_id,)).fetchone()
            if job is None:
                raise KeyError(f"no job {job_id!r} in {self.db_path}")
            return self._status(con, job, {})

    def jobs(self, states=None, limit: int = 50) -> list[dict]:
        """Jobs newest first, optionally only those in `states`."""
        with self._tx(write=False) as con:
            orders: dict[str, list[str]] = {}
            if states:
                states = [states] if isinstance(states, str) else list(states)
                rows = con.execute(f"SELECT rowid, * FROM jobs WHERE state IN ({','.join('?' * len(states))}) "
                                   "ORDER BY submitted_at DESC, rowid DESC LIMIT ?", (*states, limit)).fetchall()
            else:
                rows = con.execute("SELECT rowid, * FROM jobs ORDER BY submitted_at DESC, rowid DESC LIMIT ?",
                                   (limit,)).fetchall()
            return [self._status(con, r, orders) for r in rows]

    def _status(self, con, job, orders: dict[str, list[str]]) -> dict:
        # position: 0 while running, 1 for the next job to run, ...; None once finished.
        # ahead: how many jobs run before this one starts (the running ones included),
        # among the jobs of its executor (a Ray job does not wait for this machine's GPUs).
        position = ahead = None
        kind = job["executor"] or "local"
        order = orders[kind] if kind in orders else orders.setdefault(kind, _queue_order(con, kind))
        running = con.execute("SELECT COUNT(*) FROM jobs WHERE state='running' AND executor=?", (kind,)).fetchone()[0]
        if job["state"] == "running":
            position, ahead = 0, 0
        elif job["state"] == "queued" and job["id"] in order:
            position = 1 + order.index(job["id"])
            ahead = position - 1 + running
        tasks = con.execute("SELECT * FROM tasks WHERE job_id=? ORDER BY idx", (job["id"],)).fetchall()
        now, stale_s = time.time(), settings.runner_stale_s()
        rows = con.execute("SELECT * FROM followers WHERE job_id=?", (job["id"],)).fetchall()
        live = [r for r in rows if row_alive(r, now, stale_s)]
        return {
            "id": job["id"], "state": job["state"], "spec": json.loads(job["spec"]), "position": position,
            "ahead": ahead, "submitted_at": job["submitted_at"], "started_at": job["started_at"],
            "finished_at": job["finished_at"], "message": job["message"], "submitter": job["submitter"],
            "followers": len(live), "owners": sum(r["role"] == OWNER for r in live), "force": bool(job["force"]),
            "cancel_requested": bool(job["cancel_requested"]), "runner_pid": job["runner_pid"],
            "runner": job["runner"], "runner_host": job["runner_host"], "heartbeat_at": job["heartbeat_at"],
            "executor": kind, "lane": job["lane"],
            "tasks": [{"framework": t["framework"], "seed": t["seed"], "key": t["key"], "state": t["state"],
                       "progress": json.loads(t["progress"] or "null") or _empty_progress(),
                       "history": json.loads(t["history"] or "[]"), "message": t["message"],
                       "attempts": t["attempts"], "started_at": t["started_at"],
                       "finished_at": t["finished_at"], "lane": t["lane"]} for t in tasks],
        }

    def results(self, job_id: str) -> list[RunResult]:
        """One RunResult per task, in task order; a task that produced none (queued,
        cancelled before it ran) gets a result with its state as status and no figures."""
        with self._tx(write=False) as con:
            job = con.execute("SELECT spec FROM jobs WHERE id=?", (job_id,)).fetchone()
            if job is None:
                raise KeyError(f"no job {job_id!r} in {self.db_path}")
            spec_dict = json.loads(job["spec"])
            tasks = con.execute("SELECT * FROM tasks WHERE job_id=? ORDER BY idx", (job_id,)).fetchall()
        out = []
        for t in tasks:
            if t["result"]:
                out.append(RunResult.from_dict(json.loads(t["result"])))
            else:
                out.append(RunResult.failed(_task_job(spec_dict, t["framework"], t["seed"]), t["state"],
                                            t["message"] or f"not run ({t['state']})", key=t["key"]))
        return out

    def cancel(self, job_id: str, follower: Follower | None = None) -> bool:
        """Withdraw `follower`'s (default: this process's) interest in the job. When no
        other owner still follows it, the job is cancelled: a queued one at once, a running
        one is asked to stop (its runner kills the worker and marks it cancelled). False
        when the job had already ended, or `follower` does not own it (a watcher)."""
        token = (follower or Follower.this_process()).token
        now = time.time()
        with self._tx() as con:
            job = con.execute("SELECT state FROM jobs WHERE id=?", (job_id,)).fetchone()
            if job is None or job["state"] in FINISHED:
                return False
            gone = con.execute("DELETE FROM followers WHERE job_id=? AND token=? AND role='owner'",
                               (job_id, token)).rowcount
            if not gone:
                return False
            if self._live_followers(con, job_id, roles=(OWNER,)):
                return True  # the job goes on for its other owners
            self._cancel(con, job_id, job["state"], "cancelled before it started", now)
        return True

    @staticmethod
    def _cancel(con, job_id: str, state: str, why: str, now: float) -> None:
        """A queued job ends now with `why` as its message; a running one is asked to stop."""
        if state == "queued":
            con.execute("UPDATE jobs SET state='cancelled', finished_at=?, message=? WHERE id=?",
                        (now, why, job_id))
            con.execute("UPDATE tasks SET state='cancelled', message='cancelled' WHERE job_id=? AND state='queued'",
                        (job_id,))
        else:
            con.execute("UPDATE jobs SET cancel_requested=1 WHERE id=?", (job_id,))

    @staticmethod
    def _live_followers(con, job_id: str, roles=(OWNER, WATCHER)) -> int:
        now, stale_s = time.time(), settings.runner_stale_s()
        rows = con.execute(f"SELECT * FROM followers WHERE job_id=? AND role IN ({','.join('?' * len(roles))})",
                           (job_id, *roles)).fetchall()
        return sum(row_alive(r, now, stale_s) for r in rows)

    def reap_abandoned(self) -> list[str]:
        """Cancel every queued job that nobody follows any more (its submitter's process
        was killed while it waited, its browser tab closed): it is never run for no one.
        Returns their ids."""
        now = time.time()
        with self._tx() as con:
            queued = [r["id"] for r in con.execute("SELECT id FROM jobs WHERE state='queued'").fetchall()]
            gone = [j for j in queued if not self._live_followers(con, j)]
            for job_id in gone:
                self._cancel(con, job_id, "queued", ABANDONED, now)
        for job_id in gone:
            log.warning("job %s: nobody follows it any more; cancelled", job_id)
        return gone

    # -- the lanes (runs.lanes) ---------------------------------------------------------
    def lock_free(self) -> bool:
        """Whether no runner holds any of this queue's lanes."""
        return all(lanes_.is_free(lane, self.path) for lane in self.lanes)

    def _lane(self, name: str | None) -> lanes_.Lane:
        """A job's lane by name; a job claimed before lanes existed ran under the single
        lock, which is the CPU lane's file."""
        for lane in self.lanes:
            if lane.name == name:
                return lane
        return lanes_.Lane(name or "cpu", lanes_.CPU_LOCK if not name or name == "cpu" else f"{name}.lock")

    # -- running ------------------------------------------------------------------------
    def run_next(self) -> bool:
        """Run the next queued job if this process gets a free lane; False when there is
        nothing to do or every lane is held."""
        return self._run_next()

    def _run_next(self, until: str | None = None, owner: str | None = None) -> bool:
        """`until`: claim a job only while that job is still queued (so it is that job or
        one ahead of it), or one that `owner` (a follower token) owns: a waiter runs what
        stands before its own job and its own later jobs (a sweep's), never others' after it."""
        held = lanes_.take_any(self.lanes, self.path)
        if held is None:
            return False
        me = threading.current_thread()
        try:
            self._recover_stale(held.lane)
            job_id = self._claim_next(until, owner, held.lane)
            if job_id is None:
                return False
            with self._runners_guard:
                if me in self._runners:
                    self._runners[me] = job_id
            try:
                self._run_job(job_id, held)
            except Exception as e:  # a bug here must not leave the job "running"
                log.exception("job %s failed in the runner", job_id)
                self._finish_job(job_id, error=f"the runner failed: {type(e).__name__}: {e}")
            return True
        finally:
            held.release()

    def _claim_next(self, until: str | None, owner: str | None, lane: lanes_.Lane) -> str | None:
        self.reap_abandoned()
        with self._tx() as con:
            order = _queue_order(con, self.kind)
            if not order:
                return None
            if until is not None and con.execute("SELECT 1 FROM jobs WHERE id=? AND state='queued'",
                                                 (until,)).fetchone() is None:
                mine = owner is not None and con.execute(
                    "SELECT 1 FROM followers WHERE job_id=? AND token=? AND role=?",
                    (order[0], owner, OWNER)).fetchone()
                if not mine:
                    return None
            now = time.time()
            con.execute("UPDATE jobs SET state='running', started_at=?, runner_pid=?, runner_host=?, runner=?, "
                        "heartbeat_at=?, lane=? WHERE id=?",
                        (now, os.getpid(), HOST, process_identity(os.getpid()), now, lane.name, order[0]))
            return order[0]

    def _recover_stale(self, mine: lanes_.Lane) -> None:
        """Called with lane `mine` held: a job still "running" on it lost its runner, and
        so did one on a lane nobody holds (a live runner holds its job's lane to the end).
        Its orphaned worker is killed; for whoever still follows the job, the interrupted
        task is queued again (once: a task that loses its runner twice is "crashed") and
        the job goes back to the queue; a job that nobody follows any more is cancelled."""
        now = time.time()
        with self._tx(write=False) as con:
            running = con.execute("SELECT id, lane FROM jobs WHERE state='running' AND executor=?",
                                  (self.kind,)).fetchall()
        stranded = [(r["id"], r["lane"]) for r in running
                    if self._lane(r["lane"]).lock_name == mine.lock_name
                    or lanes_.is_free(self._lane(r["lane"]), self.path)]
        if not stranded:
            return
        with self._tx() as con:
            jobs = [con.execute("SELECT id, runner_pid FROM jobs WHERE id=? AND state='running' AND lane IS ?",
                                (job_id, lane)).fetchone() for job_id, lane in stranded]
            for job in filter(None, jobs):
                pid = job["runner_pid"]
                gone = "is gone" if not pid_alive(pid) or pid == os.getpid() else "no longer holds its lane"
                followed = self._live_followers(con, job["id"]) > 0
                for t in con.execute("SELECT idx, worker, attempts FROM tasks WHERE job_id=? AND state='running'",
                                     (job["id"],)).fetchall():
                    note = self._kill_orphan(t["worker"])
                    attempts = t["attempts"] + 1
                    if followed and attempts < MAX_ATTEMPTS:
                        con.execute("UPDATE tasks SET state='queued', attempts=?, worker=NULL, started_at=NULL, "
                                    "progress=?, history='[]', message=? WHERE job_id=? AND idx=?",
                                    (attempts, json.dumps(_empty_progress()),
                                     f"run again: its runner process (pid {pid}) died while it ran{note}",
                                     job["id"], t["idx"]))
                    else:
                        why = (f"the runner process (pid {pid}) died while this task ran{note}" +
                               ("; it had died once already, so it is not run a third time" if followed else ""))
                        con.execute("UPDATE tasks SET state=?, attempts=?, finished_at=?, message=? "
                                    "WHERE job_id=? AND idx=?",
                                    ("crashed" if followed else "cancelled", attempts, now, why, job["id"], t["idx"]))
                if followed:
                    con.execute("UPDATE jobs SET state='queued', started_at=NULL, runner_pid=NULL, runner=NULL, "
                                "heartbeat_at=NULL, lane=NULL, message=? WHERE id=?",
                                (f"its runner process (pid {pid}) {gone}; queued again for its followers",
                                 job["id"]))
                    log.warning("job %s: runner pid %s %s; queued again", job["id"], pid, gone)
                else:
                    con.execute("UPDATE tasks SET state='cancelled', message='not run: the job''s runner died' "
                                "WHERE job_id=? AND state='queued'", (job["id"],))
                    con.execute("UPDATE jobs SET state='cancelled', finished_at=?, message=? WHERE id=?",
                                (now, f"cancelled: its runner process (pid {pid}) {gone} and nobody follows it "
                                      "any more", job["id"]))
                    log.warning("job %s: runner pid %s %s and nobody follows it; cancelled", job["id"], pid, gone)

    @staticmethod
    def _kill_orphan(worker: str | None) -> str:
        """A worker whose runner died may still be using the GPU: stop it, but only if
        it is the same process (pid and start time), not a later one with its pid."""
        if not worker:
            return ""
        pid = int(worker.split(":")[0])
        if _process_identity(pid) != worker:
            return ""
        try:
            # The launcher starts each worker as a process-group leader, so that compiler
            # processes it started go with it; a fake worker may not be one.
            if os.getpgid(pid) == pid:
                os.killpg(pid, signal.SIGKILL)
            else:
                os.kill(pid, signal.SIGKILL)
            return f"; its orphaned worker (pid {pid}) was killed"
        except OSError:
            return ""

    def _run_job(self, job_id: str, held: lanes_.HeldLane) -> None:
        """The job's tasks in order, on its lane and on any other lane that is free while no
        other job of this queue waits for one (a queued job gets the next free lane first)."""
        with self._tx(write=False) as con:
            job = con.execute("SELECT spec, force FROM jobs WHERE id=?", (job_id,)).fetchone()
            tasks = con.execute("SELECT idx, framework, seed, key, attempts FROM tasks WHERE job_id=? "
                                "AND state='queued' ORDER BY idx", (job_id,)).fetchall()
        spec = RunSpec.from_dict(json.loads(job["spec"]))
        if tasks and not self._fetch_data(job_id, spec):  # once, before any worker on any lane
            return
        work = _JobWork(self, job_id, spec, bool(job["force"]), tasks)
        prepared = self._prepare_workers(job_id, spec, tasks, held.lane, bool(job["force"]))
        try:
            if len(self.lanes) == 1 or len(tasks) < 2:
                work.run_on(held.lane)
            else:
                self._spread(work, held)
        finally:
            if prepared:
                self.executor.release(prepared)
        self._finish_job(job_id)

    def _prepare_workers(self, job_id: str, spec: RunSpec, tasks, lane: lanes_.Lane, force: bool):
        """The workers of the job's tasks on `lane` started together before its first task
        runs, when the executor can (the local one: runs.spares), so that their framework
        imports overlap each other and never a task's timing; none for a task the cache
        serves. Imports this process runs in the background for another purpose (the home
        page's device probe) are stopped first, with workers started ahead or not. What the
        executor's `release` takes when the job ends."""
        prepare = getattr(self.executor, "prepare", None)
        if prepare is None:
            return None
        todo = [t for t in tasks if force or not _serves(spec, self.store.get(t["key"]))]
        if not todo:
            return None
        from engines.runs.spares import stop_background_imports

        stop_background_imports()  # the home page's device probe, if it is still importing
        if not settings.warm_workers():
            return None
        self._note_queued(job_id, todo, "its worker is starting, with the job's other frameworks")
        try:
            return prepare([spec.job(t["framework"], t["seed"]) for t in todo], gpu=lane.gpu)
        finally:
            self._note_queued(job_id, todo, None)  # started (or not): the task waits for its turn

    def _note_queued(self, job_id: str, tasks, message: str | None) -> None:
        with self._tx() as con:
            con.executemany("UPDATE tasks SET message=? WHERE job_id=? AND idx=? AND state='queued'",
                            [(message, job_id, t["idx"]) for t in tasks])

    def idle(self) -> None:
        """Called by a runner that found nothing to do: with no task running or queued on
        this queue, let the executor keep workers waiting for the next job (runs.spares)."""
        keep_warm = getattr(self.executor, "keep_warm", None)
        if keep_warm is not None and settings.warm_workers() and not self.busy():
            keep_warm(self.lanes[0].gpu)

    def busy(self) -> bool:
        """Whether a task of this queue is queued or running (in any process)."""
        with self._tx(write=False) as con:
            row = con.execute("SELECT 1 FROM tasks WHERE state IN ('queued', 'running') LIMIT 1").fetchone()
        return row is not None

    def _spread(self, work: _JobWork, held: lanes_.HeldLane) -> None:
        """Run `work` on its own lane in a thread, and start one more thread for each lane
        that becomes free while tasks are left and no other job is queued. An extra lane is
        given back as soon as its thread finds a job waiting."""
        threads = [threading.Thread(target=work.run_on, args=(held.lane,), name=f"lab-task-{held.lane.name}",
                                    daemon=True)]
        threads[0].start()
        while alive := [t for t in threads if t.is_alive()]:
            if work.tasks_left() and not self._jobs_waiting():
                extra = lanes_.take_any(self.lanes, self.path)
                if extra is not None:
                    thread = threading.Thread(target=work.run_on, args=(extra.lane, extra),
                                              name=f"lab-task-{extra.lane.name}", daemon=True)
                    threads.append(thread)
                    thread.start()
            alive[0].join(LANE_POLL_S)
        for thread in threads:
            thread.join()

    def _jobs_waiting(self) -> bool:
        with self._tx(write=False) as con:
            return con.execute("SELECT 1 FROM jobs WHERE state='queued' AND executor=? LIMIT 1",
                               (self.kind,)).fetchone() is not None

    def _abandoned(self, job_id: str) -> bool:
        """Between tasks: a job whose followers are all gone stops (the task that ran is
        kept; the others are cancelled) instead of holding the GPU for no one."""
        with self._tx() as con:
            if self._live_followers(con, job_id):
                return False
            con.execute("UPDATE jobs SET cancel_requested=1 WHERE id=?", (job_id,))
        log.warning("job %s: nobody follows it any more; its remaining tasks are cancelled", job_id)
        return True

    def _fetch_data(self, job_id: str, spec: RunSpec) -> bool:
        """The job's dataset made local once, before any worker starts. A dataset that
        cannot be had (no network, say) fails the job with one sentence, its tasks not run,
        instead of every worker trying and failing in its own words."""
        from engines.datasets import DatasetError, fetch

        try:
            fetch(spec.dataset, spec.resolution, **dict(spec.dataset_options))
        except DatasetError as e:
            with self._tx() as con:
                con.execute("UPDATE tasks SET state='error', finished_at=?, message=? "
                            "WHERE job_id=? AND state='queued'",
                            (time.time(), f"not run: {spec.dataset} is not available here (see the job's message)",
                             job_id))
            self._finish_job(job_id, error=str(e))
            return False
        return True

    def _cancel_requested(self, job_id: str) -> bool:
        with self._tx(write=False) as con:
            return bool(con.execute("SELECT cancel_requested FROM jobs WHERE id=?", (job_id,)).fetchone()[0])

    def _run_task(self, job_id, idx, spec: RunSpec, framework, seed, key, force, rerun: bool = False,
                  lane: lanes_.Lane | None = None) -> str:
        """Run one task on `lane`; its final state, or "busy" (not run) while another lane
        computes the same key or trains the same weights."""
        job = spec.job(framework, seed)
        tkey = job.train_key(environment_fingerprint(framework))
        if not self._claim_task(job_id, idx, key, tkey, lane):
            return "busy"
        if not force:  # another job may have computed this task since this one was queued
            hit = self.store.get(key)
            if _serves(spec, hit):
                self.store.add_to_comparison(spec, key)
                self._update_task(job_id, idx, state="cached", message="from the cache",
                                  result=hit.to_json(), history=json.dumps(_history(hit)))
                return "cached"
        training, dropped = (None, None) if force else self.store.get_training(tkey)
        progress = _ProgressWriter(self, job_id, idx, epochs=None if job.inference_only else job.epochs)
        if training:
            self._update_task(job_id, idx, message="loading trained weights")
        gpu = lane.gpu if lane is not None else None
        result = self._execute(job_id, job, key, progress, *self._weights(job, tkey, framework, training), gpu=gpu)
        if training and result.weights_rejected:
            # Weights that match their SHA-256 but do not load (saved broken): dropped and
            # trained again, once, and the result says so.
            dropped = self.store.drop_training(tkey, framework, CorruptEntry(
                f"they do not load: {result.weights_rejected}"))
            training = None
            result = self._execute(job_id, job, key, progress, *self._weights(job, tkey, framework, None), gpu=gpu)
        key = self._stored_key(key, result)
        result.key, result.framework = key, result.framework or framework
        if training and result.status in CACHEABLE_STATUSES:
            result.train = training.train
            result.train_reused_from = training.result_key
            result.message = _join(result.message, f"trained weights reused from result {training.result_key} "
                                                   "(its train section is copied)")
        if dropped:
            result.message = _join(result.message, dropped)
        if rerun:
            result.message = _join(result.message, "run a second time: the runner of its first run died")
        state = result.status if result.status in RESULT_STATUSES else "error"
        if state in CACHEABLE_STATUSES:
            try:
                result = self.store.put(key, result, comparison=spec)
                if result.train is not None and not training and result.weights_file:
                    self.store.put_training(tkey, framework=framework, weights_file=result.weights_file,
                                            train=result.train, result_key=key)
            except ValueError as e:  # the worker's result does not validate: show it, do not cache it
                state, result.status, result.message = "error", "error", f"invalid result: {e}"
        self._update_task(job_id, idx, state=state, finished_at=time.time(), message=result.message,
                          result=result.to_json())
        return state

    def _claim_task(self, job_id: str, idx: int, key: str, tkey: str, lane: lanes_.Lane | None) -> bool:
        """Mark the task running on `lane`, unless a task with its key or its training is
        running (in any job, on any lane): the same thing is never computed twice at once,
        nor two workers writing one weight file."""
        with self._tx() as con:
            busy = con.execute("SELECT 1 FROM tasks WHERE state='running' AND (key=? OR train_key=?) "
                               "AND NOT (job_id=? AND idx=?) LIMIT 1", (key, tkey, job_id, idx)).fetchone()
            if busy:
                return False
            con.execute("UPDATE tasks SET state='running', started_at=?, lane=?, train_key=?, message=NULL "
                        "WHERE job_id=? AND idx=?", (time.time(), lane.name if lane else None, tkey, job_id, idx))
            return True

    def _stored_key(self, key: str, result: RunResult) -> str:
        """The key the result is stored under: the task's, unless an executor that may
        (`rekeys`: runs.rayexec's) ran it on a machine of another kind (a Ray node with
        another GPU, driver or versions) and keyed it with that machine's fingerprint."""
        if getattr(self.executor, "rekeys", False) and isinstance(result.key, str) and result.key:
            return result.key
        return key

    def _weights(self, job: RunSpec, tkey: str, framework: str, training) -> tuple[str | None, str | None]:
        """(weights to load, where to save the trained ones). Only a task that trains saves
        weights: an untrained model must never be reused as trained."""
        weights_in = training.weights_file if training else None
        weights_out = None if (training or job.inference_only) else self.store.weights_path(tkey, framework)
        return weights_in, weights_out

    def _execute(self, job_id, job: RunSpec, key, progress, weights_in, weights_out,
                 gpu: str | None = None) -> RunResult:
        """The executor's result, or an error result when it broke its contract; meanwhile
        the job's cancel flag is watched (passed on as an Event) and its heartbeat written.
        The task has LAB_TASK_TIMEOUT_S to finish; `gpu` (a GPU lane's) pins its worker."""
        cancel = threading.Event()
        stop_watch = threading.Event()
        watcher = threading.Thread(target=self._watch, args=(job_id, cancel, stop_watch), daemon=True)
        watcher.start()
        pinned = {} if gpu is None else {"gpu": gpu}  # the single-lane queue's executors need not know lanes
        try:
            result = self.executor(job, key=key, on_event=progress, timeout_s=settings.task_timeout_s(),
                                   weights_in=weights_in, weights_out=weights_out, cancel=cancel, **pinned)
            if not isinstance(result, RunResult):
                raise TypeError(f"the executor returned {type(result).__name__}, not a RunResult")
            return result
        except Exception as e:  # run_job never raises; a fake or a bug might
            log.exception("task %s/%s seed %s", job_id, job.framework, job.seed)
            return RunResult.failed(job, "error", f"{type(e).__name__}: {e}\n{traceback.format_exc(limit=3)}", key=key)
        finally:
            stop_watch.set()
            watcher.join()
            progress.flush()

    def _watch(self, job_id: str, cancel: threading.Event, stop: threading.Event) -> None:
        """The runner's second thread while a task runs: the cancel flag, and a heartbeat
        every HEARTBEAT_S that tells waiters this runner is alive."""
        last_beat = 0.0
        while not stop.wait(CANCEL_POLL_S):
            try:
                if time.monotonic() - last_beat >= HEARTBEAT_S:
                    with self._tx() as con:
                        con.execute("UPDATE jobs SET heartbeat_at=? WHERE id=?", (time.time(), job_id))
                    last_beat = time.monotonic()
                if self._cancel_requested(job_id):
                    cancel.set()
                    return
            except sqlite3.Error:
                log.exception("watching job %s", job_id)

    def _update_task(self, job_id: str, idx: int, **fields) -> None:
        cols = ", ".join(f"{k}=?" for k in fields)
        with self._tx() as con:
            con.execute(f"UPDATE tasks SET {cols} WHERE job_id=? AND idx=?", (*fields.values(), job_id, idx))

    def _finish_job(self, job_id: str, error: str | None = None) -> None:
        now = time.time()
        with self._tx() as con:
            cancelled = bool(con.execute("SELECT cancel_requested FROM jobs WHERE id=?", (job_id,)).fetchone()[0])
            con.execute("UPDATE tasks SET state='cancelled', message='cancelled' WHERE job_id=? AND state='queued'"
                        if cancelled else
                        "UPDATE tasks SET state='error', message='not run: the runner failed' "
                        "WHERE job_id=? AND state IN ('queued','running')", (job_id,))
            tasks = con.execute("SELECT framework, seed, state, message FROM tasks WHERE job_id=? ORDER BY idx",
                                (job_id,)).fetchall()
            failed = [t for t in tasks if t["state"] in FAILED_TASK_STATES]
            if cancelled:
                state = "cancelled"
                message = ("cancelled while running" if self._live_followers(con, job_id)
                           else "cancelled while running: nobody follows it any more")
            elif failed or error:
                state = "failed"
                message = error or "; ".join(f"{t['framework']} seed {t['seed']}: {t['state']}"
                                             + (f" ({(t['message'] or '').splitlines()[0]})" if t["message"] else "")
                                             for t in failed)
            else:
                state, message = "done", None
            con.execute("UPDATE jobs SET state=?, finished_at=?, message=? WHERE id=?", (state, now, message, job_id))

    # -- waiting ------------------------------------------------------------------------
    def wait(self, job_id: str, on_update: Callable[[dict], None] | None = None, poll_s: float = 0.5,
             follower: Follower | None = None) -> dict:
        """Block until the job ends and return its status, following it meanwhile (as
        `follower`, default this process). Whenever a lane is free, threads of this process
        run queued jobs (this one, those ahead of it, and the follower's own later jobs: a
        sweep's run side by side, one per lane), so a CLI needs no daemon; when the job's
        runner is gone, such a thread recovers the job. Meanwhile this thread reports
        progress through `on_update`."""
        follower = follower or Follower.this_process()
        last = None
        last_reap = last_follow = float("-inf")
        while True:
            if time.monotonic() - last_follow >= REAP_EVERY_S:  # a process follower needs no lease: renewals are rare
                self.follow(job_id, follower)
                last_follow = time.monotonic()
            st = self.status(job_id)
            if on_update is not None and st != last:
                on_update(st)
                last = st
            if st["state"] in FINISHED:
                self._join_runners(follower.token)
                return st
            if st["state"] == "queued" or runner_gone(st) or self._owns_queued(follower.token):
                self._add_runner(job_id, follower.token)
            if time.monotonic() - last_reap >= REAP_EVERY_S:
                self.reap_abandoned()
                last_reap = time.monotonic()
            time.sleep(poll_s)

    def _add_runner(self, until: str, owner: str) -> None:
        """One more runner thread of this process, while it has fewer than lanes."""
        with self._runners_guard:
            self._runners = {t: j for t, j in self._runners.items() if t.is_alive()}
            if len(self._runners) >= len(self.lanes):
                return
            thread = threading.Thread(target=self._run_next_logged, args=(until, owner), name="lab-job-wait-runner",
                                      daemon=True)
            self._runners[thread] = None
        thread.start()

    def _join_runners(self, owner: str) -> None:
        """Before a waiter returns: wait for this process's runner threads, except those
        running another job of `owner` (its next wait takes them over). A job of someone
        else that this process runs must not die with it."""
        while True:
            with self._runners_guard:
                threads = [(t, j) for t, j in self._runners.items() if t.is_alive()]
            others = [t for t, j in threads if not (j and self._owner_waits(j, owner))]
            if not others:
                return
            others[0].join(0.2)  # it may claim one of the owner's jobs meanwhile: look again

    def _owner_waits(self, job_id: str, owner: str) -> bool:
        """Whether `owner` owns this unfinished job (it will wait for it)."""
        with self._tx(write=False) as con:
            return con.execute("SELECT 1 FROM jobs j JOIN followers f ON f.job_id=j.id WHERE j.id=? AND f.token=? "
                               "AND f.role=? AND j.state NOT IN ('done','failed','cancelled')",
                               (job_id, owner, OWNER)).fetchone() is not None

    def _owns_queued(self, owner: str) -> bool:
        with self._tx(write=False) as con:
            return con.execute("SELECT 1 FROM jobs j JOIN followers f ON f.job_id=j.id WHERE j.state='queued' "
                               "AND j.executor=? AND f.token=? AND f.role=? LIMIT 1",
                               (self.kind, owner, OWNER)).fetchone() is not None

    def _run_next_logged(self, until: str, owner: str | None = None) -> None:
        try:
            self._run_next(until, owner)
        except Exception:  # reported; the job is recovered by the next runner
            log.exception("running the next job")


def runner_gone(st: dict) -> bool:
    """Whether a running job's runner is gone: its process dead (this host), or no
    heartbeat for LAB_RUNNER_STALE_S. The lock still decides who may recover it."""
    if st["state"] != "running":
        return False
    alive = identity_alive(st.get("runner"), st.get("runner_host"))
    if alive is False:
        return True
    beat = st.get("heartbeat_at") or st.get("started_at")
    return beat is not None and time.time() - beat > settings.runner_stale_s()


def admit(spec: RunSpec) -> None:
    """What a request must pass before it is queued, besides RunSpec's own validation:
    the limits of a shared machine and data that is here. Raises SpecError naming the field."""
    from engines.datasets import dataset_state, get_info

    problems = {}
    tasks, limit = len(spec.tasks()), settings.max_tasks()
    if tasks > limit:
        problems["repeats"] = (f"{len(spec.frameworks)} framework(s) x {spec.repeats} repeat(s) = {tasks} tasks, more "
                               f"than one request may hold (LAB_MAX_TASKS={limit}): fewer repeats or frameworks")
    state = dataset_state(get_info(spec.dataset), spec.resolution, dict(spec.dataset_options).get("path"))
    if state.state == "unsupported":
        problems["dataset"] = f"{spec.dataset} cannot be used here: {state.reason}"
    elif state.state == "needs_folder":
        problems["dataset_options.path"] = f"{spec.dataset}: {state.reason}"
    if problems:
        raise SpecError(problems)


def _queue_order(con, executor: str = "local") -> list[str]:
    """The queued jobs of an executor in the order they will run: round robin between
    submitters, the one served longest ago (or never) first, each submitter's own jobs
    oldest first."""
    import heapq

    pending: dict[str, list] = {}
    for row in con.execute("SELECT id, submitter, submitted_at, rowid FROM jobs WHERE state='queued' AND executor=? "
                           "ORDER BY submitted_at, rowid", (executor,)):
        pending.setdefault(row["submitter"] or "", []).append(row)
    if not pending:
        return []
    served = dict(con.execute("SELECT COALESCE(submitter, ''), MAX(started_at) FROM jobs "
                              "WHERE started_at IS NOT NULL GROUP BY COALESCE(submitter, '')").fetchall())
    # (round, last served, oldest waiting job): round 0 = its turn from history, then 1, 2, ...
    heap = [(0, served.get(who) or float("-inf"), rows[0]["submitted_at"], rows[0]["rowid"], who)
            for who, rows in pending.items()]
    heapq.heapify(heap)
    order, turn = [], 0
    while heap:
        _, _, _, _, who = heapq.heappop(heap)
        rows = pending[who]
        order.append(rows.pop(0)["id"])
        if rows:
            turn += 1
            heapq.heappush(heap, (1, turn, rows[0]["submitted_at"], rows[0]["rowid"], who))
    return order


def _task_job(spec: dict, framework: str, seed: int):
    """The job of one task, for a result that has none; the request's dict narrowed by
    hand when it no longer validates (a data folder since removed from LAB_DATA_PATH)."""
    try:
        return RunSpec.from_dict(spec).job(framework, seed)
    except (SpecError, TypeError):
        return {**spec, "frameworks": [framework], "seed": seed, "repeats": 1}


def _serves(spec: RunSpec, cached: RunResult | None) -> bool:
    """Whether a cached result answers the request: not when the request requires the GPU
    and the result was computed on the CPU of a machine with a GPU (the task runs again,
    and its worker refuses: a comparison must not mix devices silently)."""
    if cached is None:
        return False
    env = cached.environment
    return not (spec.require_gpu and env is not None and env.gpu and devices.on_cpu(env.device))


def _history(result: RunResult | None) -> list:
    train = result.train if result is not None else None
    return [e.to_dict() for e in train.epochs] if train is not None else []


def _join(message: str | None, note: str) -> str:
    return f"{message}; {note}" if message else note


class _JobWork:
    """A running job's queued tasks, taken one at a time, in order, by the threads that run
    them (one per lane); a cancel, or nobody following the job any more, stops them all."""

    def __init__(self, queue: JobQueue, job_id: str, spec: RunSpec, force: bool, tasks):
        self.queue, self.job_id, self.spec, self.force = queue, job_id, spec, force
        self._pending = collections.deque(tasks)
        self._guard = threading.Lock()
        self._stopped = False

    def tasks_left(self) -> bool:
        with self._guard:
            return bool(self._pending) and not self._stopped

    def _take(self):
        with self._guard:
            return None if self._stopped or not self._pending else self._pending.popleft()

    def _put_back(self, task) -> int:
        with self._guard:
            self._pending.append(task)
            return len(self._pending)

    def _stop(self) -> None:
        with self._guard:
            self._stopped = True

    def run_on(self, lane: lanes_.Lane, extra: lanes_.HeldLane | None = None) -> None:
        """Run tasks on `lane` until none is left. `extra`: a lane this job took besides its
        own, released here, and given back early when another job waits for a lane."""
        q = self.queue
        try:
            while True:
                if q._cancel_requested(self.job_id) or q._abandoned(self.job_id):
                    self._stop()
                    return
                t = self._take()
                if t is None:
                    return
                state = q._run_task(self.job_id, t["idx"], self.spec, t["framework"], t["seed"], t["key"],
                                    self.force, rerun=t["attempts"] > 0, lane=lane)
                if state == "busy":  # another lane computes the same: this one comes after it
                    if self._put_back(t) == 1:
                        time.sleep(LANE_POLL_S)
                    continue
                if state == "cancelled":
                    self._stop()
                    return
                if extra is not None and q._jobs_waiting():
                    return
        except Exception:  # reported; _finish_job marks what was left unrun
            log.exception("job %s on lane %s", self.job_id, lane.name)
            self._stop()
        finally:
            if extra is not None:
                extra.release()


STARTING = "starting a worker"
STARTING_AHEAD = "starting (its worker was started ahead)"


class _ProgressWriter:
    """The executor's on_event: keeps the task's progress and epoch history, and writes
    them to the shared database at most every PROGRESS_INTERVAL_S (epoch and stage events
    at once), so every session sees them without the runner writing on every step."""

    def __init__(self, queue: JobQueue, job_id: str, idx: int, epochs: int | None = None):
        self.queue, self.job_id, self.idx = queue, job_id, idx
        # Start-up is a stage of its own: from the task's start to the worker's first event.
        self.progress = dict(_empty_progress(), epochs=epochs, stage=STARTING)  # step events do not carry epochs
        self.history: list[dict] = []
        self.worker: str | None = None
        self._last_write = 0.0
        self._dirty = True  # the start-up stage is shown at once
        self._lock = threading.Lock()  # the launcher may call from its reader thread
        self.flush()

    def __call__(self, event: dict) -> None:
        kind = event.get("event")
        with self._lock:
            urgent = True
            if kind == "worker_started" and event.get("pid"):
                self.worker = _process_identity(int(event["pid"])) or f"{event['pid']}:?"
                self.progress["stage"] = STARTING_AHEAD if event.get("started_ahead") else STARTING
            elif kind == "stage":
                self.progress["stage"] = event.get("stage")
            elif kind == "step":
                urgent = False
                self.progress.update({k: event.get(k) for k in ("epoch", "step", "steps", "loss")})
                self.progress["stage"] = self.progress["stage"] or "training"
            elif kind == "epoch":
                record = {k: event.get(k) for k in ("epoch", "loss", "accuracy", "val_loss", "val_accuracy", "time_s")}
                self.history.append(record)
                self.progress.update(epoch=event.get("epoch"), epochs=event.get("epochs") or self.progress["epochs"],
                                     loss=event.get("loss"))
            elif kind == "inference":
                self.progress.update(stage="inference", batch_size=event.get("batch_size"))
            else:
                urgent = False
            self._dirty = True
            if urgent or time.monotonic() - self._last_write >= PROGRESS_INTERVAL_S:
                self._write()

    def flush(self) -> None:
        with self._lock:
            if self._dirty:
                self._write()

    def _write(self) -> None:
        fields = {"progress": json.dumps(self.progress, default=str), "history": json.dumps(self.history, default=str)}
        if self.worker:
            fields["worker"] = self.worker
        try:
            self.queue._update_task(self.job_id, self.idx, **fields)
        except sqlite3.Error:  # progress is best effort; the result is what must be written
            log.exception("writing progress of %s/%s", self.job_id, self.idx)
        self._last_write = time.monotonic()
        self._dirty = False


# -- background runners (the Streamlit server's) ---------------------------------------
# One runner thread per queue folder: a process (a test session, say) may serve several
# queues, and a runner bound to one must not stand in for another.
_background: dict[str, threading.Thread] = {}
# Workers are kept warm only after this long without a job: the app's runner starts with the
# first page, which must not share its cores with a framework import.
WARM_AFTER_IDLE_S = 10.0
_background_guard = threading.Lock()


def start_background_runner(queue: JobQueue | None = None, idle_s: float = 1.0) -> None:
    """Start (once per process and queue) daemon threads, one per lane, that run queued
    jobs whenever this process can take a lane. For the Streamlit server: every session
    submits, these threads run; a CLI process waiting on the same queue takes turns with
    them. The lanes are counted in the first thread (a Ray queue connects to its cluster
    there, not in the page that started it)."""
    q = queue or JobQueue()
    where = f"{q.path.resolve()} {q.kind}"
    with _background_guard:
        running = _background.get(where)
        if running is not None and running.is_alive():
            return

        def loop():
            idle_since = time.monotonic()
            while True:
                try:
                    ran = q.run_next()
                except Exception:  # keep serving; the next pass recovers the job
                    log.exception("background runner")
                    ran = False
                if ran:
                    idle_since = time.monotonic()
                    continue
                if time.monotonic() - idle_since >= WARM_AFTER_IDLE_S:
                    try:
                        q.idle()
                    except Exception:  # a worker kept warm is a bonus, never a reason to stop serving
                        log.exception("keeping workers warm")
                time.sleep(idle_s)

        def first():
            try:
                lanes = len(q.lanes)
            except Exception:
                log.exception("counting the lanes of %s", where)
                lanes = 1
            for n in range(1, lanes):
                threading.Thread(target=loop, name=f"lab-job-runner {n} {where}", daemon=True).start()
            loop()

        thread = threading.Thread(target=first, name=f"lab-job-runner 0 {where}", daemon=True)
        _background[where] = thread
        thread.start()
