"""Who follows a job: the CLI processes and browser sessions waiting for it or looking at it.

A job is worth running while someone follows it, and only its owners may cancel it.
Each follower is a row (job, token) in the queue's database:

- A CLI process is one follower for all its jobs: a token made once per process, and the
  process itself (pid and start time, so that a reused pid is not mistaken for it) as
  the proof that it is alive. Killed however it is killed, it stops following at once.
- A browser session is a token kept in its st.session_state, and a lease that the page
  renews while the session looks (LAB_BROWSER_LEASE_S): a closed tab stops following
  when the lease runs out, a server that died at once (the server process is the
  session's process too).

An owner submitted the job (or an identical request that joined it); a watcher only
looks at it (another session opened its ?job= link, or the same person after reloading
the page): a watcher keeps the job alive but cannot cancel it.
"""
from __future__ import annotations

import getpass
import os
import socket
import time
import uuid
from dataclasses import dataclass

HOST = socket.gethostname()
OWNER, WATCHER = "owner", "watcher"
_process_tokens: dict[int, str] = {}  # pid -> token: a forked child is another follower


def process_identity(pid: int) -> str | None:
    """pid plus its start time: a pid alone may have been reused by an unrelated process."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as fh:
            fields = fh.read().rsplit(")", 1)[1].split()
        return f"{pid}:{fields[19]}"
    except (OSError, IndexError):
        return None


def pid_alive(pid: int | None) -> bool:
    """Whether a process of that id exists here (one of another user's counts). A pid alone:
    where a reused pid would matter, process_identity tells them apart."""
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def identity_alive(identity: str | None, host: str | None) -> bool | None:
    """True/False for a process of this host; None when it cannot be told from here."""
    if not identity or (host and host != HOST):
        return None
    try:
        pid = int(identity.split(":")[0])
    except ValueError:
        return None
    return process_identity(pid) == identity


def user_submitter() -> str:
    """Whom the CLI's jobs count against (the per-submitter cap, the round-robin): the
    account and the machine, so that one user's terminals share one turn."""
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = f"uid{os.getuid()}"
    return f"{user}@{HOST}"


@dataclass(frozen=True)
class Follower:
    token: str
    kind: str  # "process" | "browser"
    process: str | None  # the process that must be alive (pid:start time), None: none
    lease_s: float | None  # None: no lease, alive as long as the process is
    submitter: str  # whom its submissions count against

    @classmethod
    def this_process(cls) -> Follower:
        pid = os.getpid()
        token = _process_tokens.setdefault(pid, uuid.uuid4().hex)
        return cls(token=token, kind="process", process=process_identity(pid), lease_s=None,
                   submitter=user_submitter())

    @classmethod
    def browser(cls, token: str, submitter: str, lease_s: float) -> Follower:
        """A browser session served by this (the Streamlit server's) process."""
        return cls(token=token, kind="browser", process=process_identity(os.getpid()), lease_s=lease_s,
                   submitter=submitter)

    def lease_until(self, now: float | None = None) -> float | None:
        return None if self.lease_s is None else (now or time.time()) + self.lease_s


def row_alive(row, now: float, stale_s: float) -> bool:
    """Whether a followers row still stands for someone: a lease not run out, and its
    process alive (told from /proc on this host; elsewhere, seen within stale_s)."""
    if row["lease_until"] is not None and row["lease_until"] < now:
        return False
    alive = identity_alive(row["process"], row["host"])
    if alive is not None:
        return alive
    if row["process"]:
        return row["seen_at"] >= now - stale_s
    return True
