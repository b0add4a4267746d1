"""One CPU thread count for every engine, and the CPUs a worker runs on.

The design's trap: on the CPU each framework picks its own thread count (PyTorch the
physical cores, TensorFlow and XLA every logical CPU), and on a busy machine PyTorch's
threads suffered most (0.01x JAX at batch 1). So one setting decides it for all of them:

    LAB_CPU_THREADS=N     (engines.settings; 0 or unset: the physical cores this
                           process may run on)

The parent resolves it (it is part of every cache key: engines.machine.fingerprint) and
passes the number to each worker (runs.workerenv); the worker pins itself to that many
CPUs before any framework starts (`pin`), one per physical core first: XLA's CPU client
(JAX) has no thread setting and sizes its pool from the CPUs it may run on. Each engine's
runtime then sets its own pools to the same number (engines.frameworks.runtimes:
PyTorch intra- and inter-op, TensorFlow intra- and inter-op, which TensorFlow's XLA CPU
client follows). Nothing here imports a framework.
"""
from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

from engines.settings import SettingsError, cpu_threads_setting

THREADS_VARIABLE = "LAB_CPU_THREADS"
SYSFS_CPU = "/sys/devices/system/cpu"


class ThreadsError(SettingsError):
    """LAB_CPU_THREADS is not a usable number here; the message names the variable."""


def allowed_cpus() -> list[int]:
    """The logical CPUs this process may run on (its affinity mask), in order."""
    try:
        return sorted(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return list(range(os.cpu_count() or 1))


def _core_of(cpu: int, sysfs: str) -> tuple[str, str] | None:
    """(package, core) of a logical CPU from sysfs; None where sysfs does not say."""
    topology = Path(sysfs) / f"cpu{cpu}" / "topology"
    try:
        return ((topology / "physical_package_id").read_text().strip(), (topology / "core_id").read_text().strip())
    except OSError:
        return None


def cores_of(cpus: list[int], sysfs: str = SYSFS_CPU) -> list[list[int]]:
    """The CPUs grouped by physical core (hyper-threads of one core together), in the
    order of each core's first CPU. Where sysfs has no topology, each CPU is its own core."""
    groups: dict[object, list[int]] = {}
    for cpu in cpus:
        core = _core_of(cpu, sysfs)
        groups.setdefault(core if core is not None else ("cpu", cpu), []).append(cpu)
    return list(groups.values())


def physical_cores(cpus: list[int] | None = None, sysfs: str = SYSFS_CPU) -> int:
    """How many physical cores the allowed CPUs span."""
    return len(cores_of(allowed_cpus() if cpus is None else cpus, sysfs))


def cpu_threads(environ: Mapping[str, str] | None = None, cpus: list[int] | None = None,
                sysfs: str = SYSFS_CPU) -> int:
    """The thread count every engine uses: LAB_CPU_THREADS, else (0 or unset) the
    physical cores. A SettingsError for a value that is not a whole number, ThreadsError
    for more threads than the CPUs this process may use."""
    cpus = allowed_cpus() if cpus is None else cpus
    n = cpu_threads_setting(environ)
    if n == 0:
        return physical_cores(cpus, sysfs)
    if n > len(cpus):
        raise ThreadsError(f"{THREADS_VARIABLE} must be at most {len(cpus)} (the CPUs this process may use), "
                           f"got {n}")
    return n


def worker_cpus(n: int, cpus: list[int] | None = None, sysfs: str = SYSFS_CPU) -> list[int]:
    """The n CPUs a worker runs on: one per physical core first (its first hyper-thread),
    then the second hyper-threads, and so on."""
    groups = cores_of(allowed_cpus() if cpus is None else cpus, sysfs)
    order = [g[i] for i in range(max(map(len, groups), default=0)) for g in groups if i < len(g)]
    return sorted(order[:n])


def pin(n: int, sysfs: str = SYSFS_CPU) -> list[int]:
    """Restrict this process (and the threads and processes it starts later) to n CPUs
    (`worker_cpus`); a no-op when it may use exactly n already. For a fresh worker, before
    any framework import: the thread pools are sized when a framework starts. Returns the
    CPUs it may use now."""
    cpus = allowed_cpus()
    chosen = worker_cpus(n, cpus, sysfs)
    if chosen != cpus and hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, chosen)
    return allowed_cpus()


def describe(environ: Mapping[str, str] | None = None) -> str:
    """The setting in words, for `./lab doctor` and the home page."""
    n = cpu_threads(environ)
    cpus = allowed_cpus()
    where = f"{THREADS_VARIABLE}={n}" if cpu_threads_setting(environ) else f"{THREADS_VARIABLE} unset: physical cores"
    return f"{n} ({where}; {len(cpus)} logical CPUs, {physical_cores(cpus)} physical cores here)"
