"""NVML for the worker: initialised once per process, and the handle of the GPU this
worker uses (the first entry of CUDA_VISIBLE_DEVICES; env.py sets CUDA_DEVICE_ORDER to
PCI_BUS_ID so that CUDA's indices are NVML's). Every function takes an optional `nvml`
module so that tests pass a fake one."""
from __future__ import annotations

import os

_initialised: dict = {}  # module (or a test's fake) -> whether nvmlInit succeeded


def load_nvml(nvml=None):
    """The NVML module, initialised; None without nvidia-ml-py or without a driver."""
    if nvml is None:
        try:
            import pynvml as nvml
        except ImportError:
            return None
    if nvml not in _initialised:
        try:
            nvml.nvmlInit()
            _initialised[nvml] = True
        except Exception:  # noqa: BLE001 - NVMLError_LibraryNotFound / DriverNotLoaded
            _initialised[nvml] = False
    return nvml if _initialised[nvml] else None


def visible_gpu() -> str | None:
    """The worker's GPU as CUDA_VISIBLE_DEVICES names it (index or UUID); "0" when unset,
    None when the variable hides every GPU."""
    value = os.environ.get("CUDA_VISIBLE_DEVICES")
    if value is None:
        return "0"
    first = value.split(",")[0].strip()
    if not first or first.startswith("-"):
        return None
    return first


def nvml_device_handle(nvml=None):
    """(module, handle) for the worker's GPU, or None where there is none to read."""
    nv = load_nvml(nvml)
    gpu = visible_gpu()
    if nv is None or gpu is None:
        return None
    try:
        if gpu.startswith(("GPU-", "MIG-")):
            handle = nv.nvmlDeviceGetHandleByUUID(gpu)
        else:
            handle = nv.nvmlDeviceGetHandleByIndex(int(gpu))
    except Exception:  # noqa: BLE001 - no such device, or a name NVML does not take
        return None
    return nv, handle
