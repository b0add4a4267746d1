"""The limits and switches of a lab that a whole class shares, each an environment
variable read here and nowhere else (where files go is engines/paths.py).

    LAB_TASK_TIMEOUT_S          7200   seconds one task (one framework, one seed) may run;
                                       then its worker's process group is killed, the task
                                       is "timed_out" and the queue goes on (0: no limit)
    LAB_MAX_QUEUED_JOBS           12   queued jobs per submitter (a CLI user, a browser);
                                       one more is refused until one of them starts
    LAB_MAX_TASKS                 60   tasks (frameworks x repeats) in one request
    LAB_MAX_SWEEP_RUNS           100   runs in one sweep grid, counted before it is
                                       expanded (`sweep --max-runs N` raises it once)
    LAB_ALLOW_DELETE               1   0: the Runs page deletes nothing (a class setting)
    LAB_BROWSER_LEASE_S          300   a browser session that stops looking at its job for
                                       this long no longer keeps it in the queue
    LAB_RUNNER_STALE_S            60   a running job whose runner has not written a
                                       heartbeat for this long counts as stranded
    LAB_CPU_THREADS                0   the CPU threads of every engine; 0 (or unset): the
                                       physical cores (engines.threads), at most the CPUs
                                       this process may use; part of every cache key
    LAB_NOISY_SHARE             0.25   a timing is "noisy" when other processes held more
                                       than this share of the machine's cores meanwhile
                                       (engines.trackers.cpu)
    LAB_PROBE_ON_HOME              1   0: the home page does not start every framework
                                       to probe its device (`./lab doctor` still does)
    LAB_WARM_WORKERS               1   0: every task starts its worker when it starts (no
                                       workers started ahead of a job's tasks, none kept
                                       waiting while the queue is idle: runs.spares)
    LAB_GPUS                 (all)     the GPUs the local queue may use, one task on each at
                                       once: indices as NVML numbers them ("0,2"), or
                                       "none" (CPU only, one task at a time); default:
                                       those in CUDA_VISIBLE_DEVICES, else every GPU found
    LAB_EXECUTOR               local   where jobs run: "local" (this machine's queue) or
                                       "ray" (a Ray cluster): the app's setting and the
                                       CLI's default for --executor
    LAB_RAY_ADDRESS          (none)    HOST:PORT of the Ray cluster's head node; unset: a
                                       local Ray instance is started for the run

Why environment variables: the CLI, the app and the workers are separate processes
started by different people; one place that every process reads the same way is the
environment of the account that runs the lab. Each value is read when it is used, so a
changed variable needs no restart of anything but the process that reads it. A value
that is not a number of the right kind stops with an error naming the variable.
"""
from __future__ import annotations

import os
from dataclasses import dataclass


class SettingsError(ValueError):
    """An environment variable of this module holds a value it cannot use."""


@dataclass(frozen=True)
class Setting:
    name: str
    default: float
    minimum: float
    maximum: float
    whole: bool  # a count, not a number of seconds
    doc: str

    def read(self, environ=None) -> float:
        """The value in `environ` (default: this process's environment), else the default."""
        text = (os.environ if environ is None else environ).get(self.name, "").strip()
        if not text:
            return self.default
        try:
            value = int(text) if self.whole else float(text)
        except ValueError:
            raise SettingsError(f"{self.name} must be {self._kind()}, got {text!r}") from None
        if not self.minimum <= value <= self.maximum:
            raise SettingsError(f"{self.name} must be {self._kind()}, got {text!r}")
        return value

    def _kind(self) -> str:
        kind = "a whole number" if self.whole else "a number"
        return f"{kind} {self.minimum:g}..{self.maximum:g} ({self.doc})"


SETTINGS = {s.name: s for s in (
    Setting("LAB_TASK_TIMEOUT_S", 7200, 0, 7 * 24 * 3600, False, "seconds per task; 0 = no limit"),
    Setting("LAB_MAX_QUEUED_JOBS", 12, 1, 100000, True, "queued jobs per submitter"),
    Setting("LAB_MAX_TASKS", 60, 1, 100000, True, "tasks per request: frameworks x repeats"),
    Setting("LAB_MAX_SWEEP_RUNS", 100, 1, 1000000, True, "runs per sweep grid"),
    Setting("LAB_ALLOW_DELETE", 1, 0, 1, True, "1 lets the Runs page delete results, 0 does not"),
    Setting("LAB_BROWSER_LEASE_S", 300, 5, 7 * 24 * 3600, False, "seconds a browser's interest lasts"),
    Setting("LAB_RUNNER_STALE_S", 60, 2, 24 * 3600, False, "seconds without a runner heartbeat"),
    Setting("LAB_CPU_THREADS", 0, 0, 4096, True, "CPU threads of every engine; 0 = the physical cores"),
    Setting("LAB_NOISY_SHARE", 0.25, 0.01, 1, False, "share of the cores other work may hold"),
    Setting("LAB_PROBE_ON_HOME", 1, 0, 1, True, "1 probes each framework's device from the home page"),
    Setting("LAB_WARM_WORKERS", 1, 0, 1, True, "1 starts workers ahead of their tasks, 0 does not"),
)}


def _get(name: str) -> float:
    return SETTINGS[name].read()


def task_timeout_s() -> float | None:
    """None: no limit (LAB_TASK_TIMEOUT_S=0)."""
    return _get("LAB_TASK_TIMEOUT_S") or None


def max_queued_jobs() -> int:
    return int(_get("LAB_MAX_QUEUED_JOBS"))


def max_tasks() -> int:
    return int(_get("LAB_MAX_TASKS"))


def max_sweep_runs() -> int:
    return int(_get("LAB_MAX_SWEEP_RUNS"))


def allow_delete() -> bool:
    return bool(_get("LAB_ALLOW_DELETE"))


def browser_lease_s() -> float:
    return _get("LAB_BROWSER_LEASE_S")


def runner_stale_s() -> float:
    return _get("LAB_RUNNER_STALE_S")


def cpu_threads_setting(environ=None) -> int:
    """LAB_CPU_THREADS as set; 0 = the physical cores (engines.threads resolves it)."""
    return int(SETTINGS["LAB_CPU_THREADS"].read(environ))


def noisy_share(environ=None) -> float:
    return SETTINGS["LAB_NOISY_SHARE"].read(environ)


def probe_on_home() -> bool:
    return bool(_get("LAB_PROBE_ON_HOME"))


def warm_workers() -> bool:
    return bool(_get("LAB_WARM_WORKERS"))


# -- the settings that are not numbers -------------------------------------------------
EXECUTORS = ("local", "ray")


def gpus() -> tuple[int, ...] | None:
    """LAB_GPUS as GPU indices; () for "none"; None when unset (the queue then takes the
    GPUs this process may see: engines.runs.lanes)."""
    text = os.environ.get("LAB_GPUS", "").strip()
    if not text:
        return None
    if text.lower() in ("none", "cpu"):
        return ()
    try:
        indices = tuple(int(part) for part in text.split(","))
    except ValueError:
        indices = ()
    if not indices or any(i < 0 for i in indices) or len(set(indices)) != len(indices):
        raise SettingsError(f"LAB_GPUS must be GPU indices separated by commas (e.g. 0,1) or none, got {text!r}")
    return indices


def executor() -> str:
    """LAB_EXECUTOR: "local" or "ray"."""
    text = os.environ.get("LAB_EXECUTOR", "").strip().lower() or "local"
    if text not in EXECUTORS:
        raise SettingsError(f"LAB_EXECUTOR must be one of {', '.join(EXECUTORS)}, got {text!r}")
    return text


def ray_address(given: str | None = None) -> str | None:
    """The Ray head node's HOST:PORT (`given`, else LAB_RAY_ADDRESS), checked for its
    shape; None: start a local Ray instance."""
    text = (given if given is not None else os.environ.get("LAB_RAY_ADDRESS", "")).strip()
    if not text:
        return None
    where = "--ray-address" if given is not None else "LAB_RAY_ADDRESS"
    host, _, port = text.rpartition(":")
    if not host or not port.isdigit() or not 0 < int(port) < 65536 or any(c.isspace() for c in host):
        raise SettingsError(f"{where} must be HOST:PORT of a Ray head node (e.g. 10.0.0.5:6379), got {text!r}")
    return text


def check_all() -> None:
    """Read every setting once: a bad value stops a command at its start, by name."""
    for setting in SETTINGS.values():
        setting.read()
    gpus()
    executor()
    ray_address()
