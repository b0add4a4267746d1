"""CPU use over a window: how many cores the process kept busy.

The design's trap: on a busy machine each framework picks its own thread count and
PyTorch's suffer most, so every run records the cores it used (process CPU time over
wall time, 2.0 = two cores busy) beside its timings.
"""
from __future__ import annotations

import os
import time
from collections.abc import Callable

from engines.trackers.timing import Clock, Window


def process_cpu_time() -> float:
    """User plus system time of this process: every thread (intra-op pools included) and
    children that have exited."""
    t = os.times()
    return t.user + t.system


class CpuUse(Window):
    """Process CPU time over a window / wall time: cores kept busy (2.0 = two cores).

    os.times counts every thread of the process (intra-op pools included) and children
    that have exited; what the CIFAR-10 paper reports as CPU use during training.
    """

    def __init__(self, clock: Clock = time.perf_counter, cpu_time: Callable[[], float] = process_cpu_time):
        self.clock = clock
        self.cpu_time = cpu_time
        self.cores_used: float | None = None
        self._t0 = self._c0 = None

    def start(self) -> None:
        self._t0, self._c0 = self.clock(), self.cpu_time()

    def stop(self) -> None:
        wall = self.clock() - self._t0
        self.cores_used = (self.cpu_time() - self._c0) / wall if wall > 0 else None
