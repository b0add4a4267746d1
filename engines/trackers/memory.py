"""Memory: what the framework's allocator says, what the card holds, what the host holds.

Three figures that answer different questions, kept side by side rather than merged:
  allocator peak  - the framework's own high-water mark of live tensors (torch
                    max_memory_allocated, JAX peak_bytes_in_use, TF get_memory_info peak);
                    excludes the allocator's cache and the CUDA context;
  NVML process    - what the driver says this process holds on the card (cache, context
                    and all), read at the end of the window;
  peak RSS        - the host process's resident high-water mark; on the CPU this is the
                    memory figure.
Framework modules are imported inside the functions: they are only called in a worker
that already imported its framework.
"""
from __future__ import annotations

import os
import resource

from engines.trackers.nvml import nvml_device_handle

MEMORY_ERROR_NAMES = {"OutOfMemoryError", "ResourceExhaustedError", "MemoryError"}
MEMORY_ERROR_TEXT = ("out of memory", "resource_exhausted", "resource exhausted",
                     "failed to allocate", "oom when allocating", "cannot allocate memory")


def is_oom(exc: BaseException) -> bool:
    """Whether an exception from any framework means the device (or host) ran out of
    memory: torch.cuda.OutOfMemoryError, TF ResourceExhaustedError, JAX's
    XlaRuntimeError "RESOURCE_EXHAUSTED: Out of memory", Python's MemoryError."""
    for cls in type(exc).__mro__:
        if cls.__name__ in MEMORY_ERROR_NAMES:
            return True
    text = str(exc).lower()
    return any(t in text for t in MEMORY_ERROR_TEXT)


# -- framework allocators -------------------------------------------------------------
class Allocator:
    """Peak reset/read for one framework's device allocator. `peak()` is None where the
    framework keeps no such figure (every framework on the CPU)."""

    resettable = True
    source = "none"

    def reset(self) -> None:
        pass

    def peak(self) -> int | None:
        return None


class TorchAllocator(Allocator):
    source = "torch.cuda.max_memory_allocated (reset per measurement)"

    def __init__(self):
        import torch

        self.torch = torch
        self.on_gpu = torch.cuda.is_available()

    def reset(self) -> None:
        if self.on_gpu:
            self.torch.cuda.reset_peak_memory_stats()

    def peak(self) -> int | None:
        return int(self.torch.cuda.max_memory_allocated()) if self.on_gpu else None

    def release(self) -> None:
        if self.on_gpu:
            self.torch.cuda.empty_cache()


class JaxAllocator(Allocator):
    # JAX has no way to reset the peak within a process: the worker measures batch sizes
    # in increasing order, so each peak is that size's (the larger sizes dominate).
    resettable = False
    source = "jax memory_stats()['peak_bytes_in_use'] (since process start; sizes run in increasing order)"

    def __init__(self):
        import jax

        self.device = jax.devices()[0]

    def peak(self) -> int | None:
        stats = self.device.memory_stats() if self.device.platform != "cpu" else None
        return int(stats["peak_bytes_in_use"]) if stats and "peak_bytes_in_use" in stats else None


class TensorFlowAllocator(Allocator):
    source = "tf.config.experimental.get_memory_info('GPU:0')['peak'] (reset per measurement)"

    def __init__(self):
        import tensorflow as tf

        self.tf = tf
        self.on_gpu = bool(tf.config.list_physical_devices("GPU"))

    def reset(self) -> None:
        if self.on_gpu:
            self.tf.config.experimental.reset_memory_stats("GPU:0")

    def peak(self) -> int | None:
        return int(self.tf.config.experimental.get_memory_info("GPU:0")["peak"]) if self.on_gpu else None


# Allocator kinds, as the framework table names them (FrameworkInfo.allocator).
ALLOCATOR_KINDS = {"torch": TorchAllocator, "jax": JaxAllocator, "tensorflow": TensorFlowAllocator}


def allocator_for(kind: str) -> Allocator:
    """The allocator of that kind; one that keeps no figures for any other name."""
    return ALLOCATOR_KINDS.get(kind, Allocator)()


# -- host memory ----------------------------------------------------------------------
def reset_peak_rss() -> bool:
    """Reset the kernel's resident high-water mark (VmHWM) of this process: Linux ≥ 4.0
    takes "5" in /proc/self/clear_refs. False where that is not possible."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def peak_rss_bytes() -> int:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    # ru_maxrss: kilobytes on Linux, since process start.
    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024


# -- what the card holds ----------------------------------------------------------------
def nvml_process_memory_bytes(pid: int | None = None, nvml=None) -> int | None:
    """This process's memory on its GPU as NVML reports it; None without NVML, without a
    GPU, or where the driver does not show the process (in a container NVML lists host
    PIDs, which do not match ours)."""
    pid = os.getpid() if pid is None else pid
    found = nvml_device_handle(nvml)
    if found is None:
        return None
    nv, handle = found
    try:
        procs = nv.nvmlDeviceGetComputeRunningProcesses(handle)
    except Exception:  # noqa: BLE001 - not supported on this driver / GPU
        return None
    for p in procs:
        if p.pid == pid and p.usedGpuMemory is not None:
            return int(p.usedGpuMemory)
    return None


class MemoryTracker:
    """Reset before a measurement, read after it: one dict of the three figures. As a
    context manager: reset on entry, `reading` taken on a normal exit (after an
    exception, say running out of memory, the figures mean nothing)."""

    def __init__(self, allocator_kind: str, *, on_gpu: bool, allocator: Allocator | None = None, nvml=None):
        self.allocator = allocator if allocator is not None else allocator_for(allocator_kind)
        self.on_gpu = on_gpu
        self.nvml = nvml
        self.reading: dict | None = None
        self._rss_reset = False

    def __enter__(self) -> MemoryTracker:
        self.reset()
        self.reading = None
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.reading = self.read()

    def reset(self) -> None:
        self.allocator.reset()
        self._rss_reset = reset_peak_rss()

    def read(self) -> dict:
        allocator_peak = self.allocator.peak()
        rss = peak_rss_bytes()
        rss_source = "VmHWM since reset" if self._rss_reset else "ru_maxrss since process start"
        if self.on_gpu:
            peak, source = allocator_peak, self.allocator.source
        else:
            # On the CPU the model's memory is host memory: the peak RSS is the figure.
            peak, source = rss, f"process peak RSS ({rss_source}; CPU run)"
        return {"peak_memory_bytes": peak, "memory_source": source,
                "allocator_peak_bytes": allocator_peak,
                "nvml_process_memory_bytes": nvml_process_memory_bytes(nvml=self.nvml) if self.on_gpu else None,
                "peak_rss_bytes": rss}

    def release(self) -> None:
        """After an out-of-memory error: give cached blocks back before the next size."""
        release = getattr(self.allocator, "release", None)
        if release:
            release()
