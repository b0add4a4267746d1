"""Inference at each batch size: timing, memory and energy per size, OOM a data point.

Batch sizes run in increasing order (JAX cannot reset its peak-memory counter, so each
size's peak is then its own). A size that runs out of memory is an entry with status
"oom", and the larger sizes are recorded as "oom" without running: they would only fail
again, slowly, and might leave the device in a worse state.
"""
from __future__ import annotations

import gc
import time
from collections.abc import Callable

from engines.trackers.energy import MIN_WINDOW_S, EnergyMeter
from engines.trackers.memory import MemoryTracker, is_oom
from engines.trackers.timing import CpuUse
from engines.training.events import EventCallback, make_event, null_callback

EMPTY_FIGURES = {"latency_ms": None, "throughput_images_per_s": None, "first_call_s": None,
                 "peak_memory_bytes": None, "energy_j_per_1000_images": None}


def _failed(batch_size: int, status: str, message: str) -> dict:
    return {"batch_size": batch_size, "status": status, "message": message, **EMPTY_FIGURES}


def inference_sweep(engine, batch_sizes, *, warmup: int, iters: int, images=None,
                    memory: MemoryTracker, energy: Callable[[], EnergyMeter],
                    on_event: EventCallback = null_callback, clock=time.perf_counter) -> list[dict]:
    """One "inference" entry of the result schema per batch size (see module doc).

    `energy` makes a fresh meter per size; when it can measure, the window is extended
    to at least MIN_WINDOW_S so that the counter's ~100 ms updates do not dominate.
    """
    entries: list[dict] = []
    oom_at = None
    for bs in sorted(batch_sizes):
        if oom_at is not None:
            entry = _failed(bs, "oom", f"not run: batch size {oom_at} already ran out of memory")
            entries.append(entry)
            on_event(make_event("inference", **entry))
            continue
        meter, cpu = energy(), CpuUse(clock)
        memory.reset()
        failure = None
        try:
            m = engine.time_inference(bs, warmup=warmup, iters=iters, images=images, clock=clock,
                                      min_window_s=MIN_WINDOW_S if meter.available else 0.0,
                                      windows=(meter, cpu))
        except Exception as e:  # noqa: BLE001 - one size failing is a data point
            text = (str(e).strip().splitlines() or [type(e).__name__])[0]
            failure = ("oom", f"out of memory at batch size {bs}: {text}") if is_oom(e) \
                else ("error", f"batch size {bs}: {type(e).__name__}: {text}")
        if failure:
            # Outside the except block: the traceback (and the tensors its frames hold)
            # is gone, so the allocator can give the memory back.
            gc.collect()
            memory.release()
            if failure[0] == "oom":
                oom_at = bs
            entry = _failed(bs, *failure)
        else:
            e = meter.result(images=bs * m.iterations)
            s = m.summary()
            entry = {"batch_size": bs, "status": "ok", "message": None,
                     "latency_ms": s["latency_ms"],
                     "throughput_images_per_s": s["throughput_images_per_s"],
                     "first_call_s": s["first_call_s"],
                     **memory.read(),
                     "energy_j_per_1000_images": e["j_per_1000_images"],
                     "energy": e, "cpu_cores_used": cpu.cores_used,
                     "warmup_iters": s["warmup_iters"], "measured_iters": s["measured_iters"],
                     "window_s": s["window_s"], "notes": m.notes}
        entries.append(entry)
        on_event(make_event("inference", **{k: v for k, v in entry.items() if k != "notes"}))
    return entries


def summary_message(entries: list[dict]) -> str | None:
    """"out of memory at batch size 1024" and the like, for the result's message."""
    parts = []
    oom = [e["batch_size"] for e in entries if e["status"] == "oom"]
    if oom:
        parts.append(f"inference: out of memory at batch size {oom[0]}"
                     + (" (larger sizes not run)" if len(oom) > 1 else ""))
    errors = [e for e in entries if e["status"] == "error"]
    if errors:
        parts.append("inference: " + "; ".join(e["message"] for e in errors))
    return "; ".join(parts) or None
