"""Lanes: the places where the queue runs one task at a time.

A lane is a lock file in the queue's folder. A runner holds its lane's lock (an
`fcntl.flock`, dropped by the kernel however its holder dies) for the whole job it runs,
so two tasks never share a lane, across every process of this machine, and a running
job whose lane is free has lost its runner.

- On this machine: one lane per GPU the lab may use (LAB_GPUS, else the GPUs this process
  may see), each task's worker pinned to its GPU with CUDA_VISIBLE_DEVICES. One GPU runs
  one task at a time, so its timings stay clean; N GPUs run N tasks at once. Without a
  GPU there is one lane, "cpu" (the lock file `gpu.lock` of the single-lane queue), so a
  CPU-only machine runs one task at a time as before.
- On a Ray cluster (engines.runs.rayexec): one lane per task the cluster runs at once
  (its GPUs, or its CPU nodes); Ray places each task on a GPU, the lanes only bound how
  many this machine keeps in flight.

GPU indices are NVML's, which CUDA's become with CUDA_DEVICE_ORDER=PCI_BUS_ID (set for
every worker by runs.workerenv).
"""
from __future__ import annotations

import fcntl
import os
import socket
import time
from dataclasses import dataclass
from pathlib import Path

from engines import settings
from engines.settings import SettingsError

CPU_LOCK = "gpu.lock"  # the single-lane queue's lock: a CPU-only machine keeps its old lock file


@dataclass(frozen=True)
class Lane:
    name: str  # "gpu0", "cpu", "ray0": what the task table and the timeline show
    lock_name: str  # the lock file in the queue's folder
    gpu: str | None = None  # CUDA_VISIBLE_DEVICES for the worker (local GPU lanes only)

    def lock_path(self, folder: Path) -> Path:
        return Path(folder) / self.lock_name


def local_lanes() -> list[Lane]:
    """One lane per GPU the lab may use on this machine; one CPU lane without a GPU."""
    return [Lane(f"gpu{i}", f"gpu-{i}.lock", str(i)) for i in local_gpus()] or [Lane("cpu", CPU_LOCK)]


def local_gpus() -> tuple[int, ...]:
    """LAB_GPUS when set (checked against the GPUs NVML finds, when it finds any: without
    NVML the named GPUs are taken as given, which is how the tests declare two GPUs on a
    CPU machine), else the GPUs in CUDA_VISIBLE_DEVICES, else every GPU NVML finds."""
    from engines.machine import read_gpus_once

    found = tuple(g.index for g in read_gpus_once()[0])
    chosen = settings.gpus()
    if chosen is not None:
        missing = [i for i in chosen if found and i not in found]
        if missing:
            raise SettingsError(f"LAB_GPUS names GPU {', '.join(map(str, missing))}, which this machine does not "
                                f"have (its GPUs: {', '.join(map(str, found))})")
        return chosen
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is None:
        return found
    entries = [v.strip() for v in visible.split(",") if v.strip()]
    if not entries or entries[0] == "-1":
        return ()  # every GPU hidden from this process: so from its workers too
    if not all(e.isdigit() for e in entries):
        return found[:1]  # UUIDs: NVML lists no UUIDs here; one GPU, as the single-lane queue used
    return tuple(int(e) for e in entries if int(e) in found)


class HeldLane:
    """A lane whose lock this process holds; `release()` (or the process's end) frees it."""

    def __init__(self, lane: Lane, handle):
        self.lane, self._handle = lane, handle

    def release(self) -> None:
        if self._handle is not None:
            self._handle.close()  # releases the flock
            self._handle = None


def try_take(lane: Lane, folder: Path) -> HeldLane | None:
    """The lane's lock if nobody holds it (in this process or another), else None."""
    fh = open(lane.lock_path(folder), "a+")  # noqa: SIM115 - held open while the lane is held
    try:
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        fh.close()
        return None
    fh.seek(0)
    fh.truncate()
    fh.write(f"{os.getpid()} {socket.gethostname()} {time.time():.3f}\n")  # for people, not for logic
    fh.flush()
    return HeldLane(lane, fh)


def take_any(lanes: list[Lane], folder: Path) -> HeldLane | None:
    """The first free lane, in order (GPU 0 before GPU 1), or None when all are held."""
    for lane in lanes:
        held = try_take(lane, folder)
        if held is not None:
            return held
    return None


def is_free(lane: Lane, folder: Path) -> bool:
    held = try_take(lane, folder)
    if held is None:
        return False
    held.release()
    return True
