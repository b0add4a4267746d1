"""The measured loop and the latency statistics, the same for every framework.

Every call is synchronized with the device before the clock is read (the engine passes
its own `sync`: torch.cuda.synchronize, block_until_ready, materializing a TensorFlow
tensor; on the CPU the outputs exist once the call returns and `sync` only has to make
sure of that). The first call (trace / compile) is timed on its own, the warm-up calls
are not timed at all, and the measured calls rotate among a few input batches so that a
cache holding the last input is not what gets measured.
"""
from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

Clock = Callable[[], float]
MAX_ITERS = 1_000_000  # a guard for the window extension, never reached in practice


def latency_stats(durations_s: Sequence[float]) -> dict:
    """p50/p95/p99/mean/std of per-call durations, in milliseconds, and p5 (with p95 it
    bounds the middle 90% of the calls, the band the Speed page draws around p50).

    Percentiles interpolate linearly between order statistics (NumPy's default, as
    optimum-benchmark reports them); std is the sample standard deviation (0 for one call).
    """
    d = np.asarray(durations_s, dtype=np.float64) * 1e3
    if d.size == 0:
        raise ValueError("latency_stats needs at least one duration")
    p5, p50, p95, p99 = np.percentile(d, [5, 50, 95, 99])
    return {"p5": float(p5), "p50": float(p50), "p95": float(p95), "p99": float(p99),
            "mean": float(d.mean()), "std": float(d.std(ddof=1)) if d.size > 1 else 0.0}


class Window:
    """Something started right before the first measured call and stopped right after the
    last one (energy, CPU use): it sees exactly the measured window and nothing else.
    Also a context manager, for a window that is a whole block (a training run)."""

    def start(self) -> None: ...

    def stop(self) -> None: ...

    def __enter__(self):
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


@dataclass
class Measurement:
    batch_size: int
    first_call_s: float
    durations_s: list[float]
    window_s: float  # wall time of the measured window, loop overhead included
    warmup: int
    notes: list[str] = field(default_factory=list)

    @property
    def iterations(self) -> int:
        return len(self.durations_s)

    @property
    def throughput_images_per_s(self) -> float:
        # Images over the window's wall time, not over the sum of call times: the honest
        # figure, which includes what the loop itself costs between calls.
        return self.batch_size * self.iterations / self.window_s if self.window_s > 0 else float("nan")

    def summary(self) -> dict:
        return {"batch_size": self.batch_size, "latency_ms": latency_stats(self.durations_s),
                "throughput_images_per_s": self.throughput_images_per_s,
                "first_call_s": self.first_call_s, "warmup_iters": self.warmup,
                "measured_iters": self.iterations, "window_s": self.window_s}


def measure(call: Callable, sync: Callable, inputs: Sequence, *, batch_size: int,
            warmup: int = 20, iters: int = 100, clock: Clock = time.perf_counter,
            min_window_s: float = 0.0, windows: Sequence[Window] = ()) -> Measurement:
    """Time `sync(call(x))` for x rotating through `inputs`.

    The measured window runs `iters` calls, and more while it has lasted less than
    `min_window_s`: NVML's energy counter updates about every 100 ms, so an energy
    reading needs a window of about a second to mean anything.
    """
    if not inputs:
        raise ValueError("measure needs at least one input batch")
    n = len(inputs)
    t0 = clock()
    sync(call(inputs[0]))
    first_call_s = clock() - t0
    for i in range(warmup):
        sync(call(inputs[(i + 1) % n]))
    durations: list[float] = []
    with contextlib.ExitStack() as stack:  # stopped in reverse order, an error included
        for w in windows:
            w.start()
            stack.callback(w.stop)
        w0 = clock()
        i = 0
        while i < iters or (clock() - w0 < min_window_s and i < MAX_ITERS):
            x = inputs[i % n]
            t = clock()
            sync(call(x))
            durations.append(clock() - t)
            i += 1
        window_s = clock() - w0
    notes = []
    if i > iters:
        notes.append(f"measured window extended from {iters} to {i} calls to last "
                     f"at least {min_window_s:g} s (energy counter resolution)")
    return Measurement(batch_size=batch_size, first_call_s=first_call_s, durations_s=durations,
                       window_s=window_s, warmup=warmup, notes=notes)
