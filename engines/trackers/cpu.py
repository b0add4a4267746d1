"""CPU use over a window: the cores this process kept busy, and the cores other work held.

The design's trap: on a busy machine each framework picks its own thread count and
PyTorch's suffer most (0.01x JAX at batch 1, with other processes on the cores; within
25% in a quiet run). So every measured window records two things:

- `cores_used`: this process's CPU time over wall time (2.0 = two cores busy), what the
  CIFAR-10 paper reports as CPU use during training;
- `other_cores`: the CPU time every other process used in the same window, as cores:
  the machine's busy time from /proc/stat minus this process tree's (this process, its
  reaped children and the children still running, from /proc/<pid>/stat). A window in
  which other work held more than LAB_NOISY_SHARE of the machine's cores (default 0.25)
  is `noisy` (the share: engines.settings): its timing says as much about the other work
  as about the framework.

Both sources count in clock ticks (10 ms), so a short window cannot tell a share near the
limit: `noisy` is None ("cannot tell") when the limit lies within the reading's
resolution, (CPUs + 2) ticks over the window. Without /proc (not Linux) both are None.
"""
from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass

from engines.settings import noisy_share
from engines.trackers.timing import Clock, Window

PROC = "/proc"


def process_cpu_time() -> float:
    """User plus system time of this process: every thread (intra-op pools included) and
    children that have exited."""
    t = os.times()
    return t.user + t.system


def clock_tick_s() -> float:
    try:
        return 1.0 / os.sysconf("SC_CLK_TCK")
    except (AttributeError, ValueError, OSError):
        return 0.01


@dataclass(frozen=True)
class MachineCpu:
    """The machine's busy CPU time so far (all CPUs, in seconds) and its CPU count."""

    busy_s: float
    cpus: int


def read_machine_cpu(proc: str = PROC, tick_s: float | None = None) -> MachineCpu | None:
    """/proc/stat's first line: user + nice + system + irq + softirq + steal (guest time is
    inside user; idle and iowait are not busy). Steal counts as busy: another virtual
    machine held the core."""
    tick_s = clock_tick_s() if tick_s is None else tick_s
    try:
        with open(os.path.join(proc, "stat"), encoding="ascii") as fh:
            lines = fh.read().splitlines()
    except OSError:
        return None
    total = next((line.split()[1:] for line in lines if line.startswith("cpu ")), None)
    if total is None:
        return None
    ticks = [int(v) for v in total] + [0] * 8
    user, nice, system, _idle, _iowait, irq, softirq, steal = ticks[:8]
    cpus = sum(1 for line in lines if line.startswith("cpu") and line[3:4].isdigit())
    return MachineCpu((user + nice + system + irq + softirq + steal) * tick_s, max(1, cpus))


def _stat_fields(proc: str, pid: str) -> list[str] | None:
    try:
        with open(os.path.join(proc, pid, "stat"), encoding="ascii", errors="replace") as fh:
            return fh.read().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None


def read_tree_cpu(pid: int | None = None, proc: str = PROC, tick_s: float | None = None) -> float | None:
    """CPU seconds of the process `pid` (default this one) and every live descendant:
    utime + stime + cutime + cstime of each (a child reaped in the window moves from
    its own line into its parent's cutime, so it is counted once either way)."""
    tick_s = clock_tick_s() if tick_s is None else tick_s
    root = str(os.getpid() if pid is None else pid)
    try:
        pids = [p for p in os.listdir(proc) if p.isdigit()]
    except OSError:
        return None
    stats, children = {}, {}
    for p in pids:
        fields = _stat_fields(proc, p)
        if fields is None or len(fields) < 15:
            continue
        stats[p] = fields
        children.setdefault(fields[1], []).append(p)  # fields[1]: the parent's pid
    if root not in stats:
        return None
    total, todo = 0, [root]
    while todo:
        p = todo.pop()
        total += sum(int(v) for v in stats[p][11:15])  # utime, stime, cutime, cstime
        todo.extend(children.get(p, ()))
    return total * tick_s


class CpuUse(Window):
    """Over a window: `cores_used` by this process, `other_cores` held by other work,
    `cores` of the machine, and `noisy` (True, False, or None when the window is too short
    to tell); see the module doc. The readers are parameters so that tests give fakes."""

    def __init__(self, clock: Clock = time.perf_counter, cpu_time: Callable[[], float] = process_cpu_time,
                 machine: Callable[[], MachineCpu | None] = read_machine_cpu,
                 tree: Callable[[], float | None] = read_tree_cpu, share: float | None = None,
                 tick_s: float | None = None):
        self.clock, self.cpu_time, self.machine, self.tree = clock, cpu_time, machine, tree
        self.share = noisy_share() if share is None else share
        self.tick_s = clock_tick_s() if tick_s is None else tick_s
        self.cores_used: float | None = None
        self.other_cores: float | None = None
        self.cores: int | None = None
        self.noisy: bool | None = None
        self._t0 = self._c0 = self._m0 = self._tree0 = None

    def start(self) -> None:
        self._m0, self._tree0 = self.machine(), self.tree()
        self._t0, self._c0 = self.clock(), self.cpu_time()

    def stop(self) -> None:
        wall = self.clock() - self._t0
        self.cores_used = (self.cpu_time() - self._c0) / wall if wall > 0 else None
        m1, tree1 = self.machine(), self.tree()
        if wall <= 0 or None in (self._m0, self._tree0, m1, tree1):
            return
        self.cores = m1.cpus
        other = ((m1.busy_s - self._m0.busy_s) - (tree1 - self._tree0)) / wall
        self.other_cores = max(0.0, other)
        self.noisy = verdict(self.other_cores, self.cores, wall, self.share, self.tick_s)

    def reading(self) -> dict:
        """The figures a result records beside a timing (None where not read)."""
        return {"other_cpu_cores": self.other_cores, "noisy": self.noisy}


def verdict(other_cores: float, cores: int, wall_s: float, share: float, tick_s: float) -> bool | None:
    """Whether other work held more than `share` of the cores over the window: True or
    False when the reading is clear of the limit by more than its resolution, else None."""
    limit = share * cores
    resolution = (cores + 2) * tick_s / wall_s
    if other_cores - resolution > limit:
        return True
    if other_cores + resolution <= limit:
        return False
    return None


def any_noisy(flags) -> bool | None:
    """One flag for several windows: True if any was noisy, else False if any could be
    told (a window too short to tell is not counted), else None."""
    flags = list(flags)
    if any(f is True for f in flags):
        return True
    return False if any(f is False for f in flags) else None
