"""What this machine is: GPU, driver, CUDA, CPU and Python, and the framework versions.

Nothing here imports a framework (the app's home page calls it on every load): versions
come from package metadata and the GPU from NVML. Which frameworks there are, and which
distributions each one's versions are, is the framework table's (engines.frameworks).
"""
from __future__ import annotations

import functools
import importlib.metadata
import platform
import socket
from dataclasses import asdict, dataclass, field

from engines.frameworks import FRAMEWORKS

# Versions that every framework's results depend on, besides the framework's own.
SHARED_DISTS = ("numpy",)


def package_version(dist: str) -> str | None:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


@dataclass
class GpuInfo:
    name: str
    memory_bytes: int
    index: int


@dataclass
class MachineInfo:
    cpu: str
    cores: int
    python: str
    driver: str | None = None
    cuda_driver: str | None = None
    gpus: list[GpuInfo] = field(default_factory=list)
    nvml_error: str | None = None
    versions: dict[str, str | None] = field(default_factory=dict)

    def to_dict(self) -> dict:
        return asdict(self)


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def read_gpus() -> tuple[list[GpuInfo], str | None, str | None, str | None]:
    """(gpus, driver, CUDA driver version, error) from NVML; no GPU is not an error."""
    try:
        import pynvml
    except ImportError:
        return [], None, None, "nvidia-ml-py is not installed"
    try:
        pynvml.nvmlInit()
    except pynvml.NVMLError as exc:
        return [], None, None, f"no NVIDIA driver ({exc})"
    try:
        driver = pynvml.nvmlSystemGetDriverVersion()
        cuda = pynvml.nvmlSystemGetCudaDriverVersion()
        gpus = []
        for i in range(pynvml.nvmlDeviceGetCount()):
            handle = pynvml.nvmlDeviceGetHandleByIndex(i)
            gpus.append(GpuInfo(name=pynvml.nvmlDeviceGetName(handle),
                                memory_bytes=pynvml.nvmlDeviceGetMemoryInfo(handle).total, index=i))
        return gpus, driver, f"{cuda // 1000}.{cuda % 1000 // 10}", None
    except pynvml.NVMLError as exc:
        return [], None, None, f"NVML error: {exc}"
    finally:
        pynvml.nvmlShutdown()


def machine_info() -> MachineInfo:
    import os

    gpus, driver, cuda, error = read_gpus()
    dists = sorted({d for f in FRAMEWORKS.values() for d in f.distributions} | {"streamlit", "numpy", "scikit-learn"})
    return MachineInfo(cpu=cpu_model(), cores=os.cpu_count() or 1, python=platform.python_version(),
                       driver=driver, cuda_driver=cuda, gpus=gpus, nvml_error=error,
                       versions={d: package_version(d) for d in dists})


# -- the environment fingerprint: every result carries it, every cache key hashes it ----
def fingerprint_dists(framework: str | None = None) -> tuple[str, ...]:
    """The distributions whose versions key a framework's results: its own and numpy's
    (a JAX upgrade does not change PyTorch's keys). Without a framework: every one's."""
    if framework is None:
        chosen = list(FRAMEWORKS.values())
    else:  # a name the table does not know (a test's fake engine) has only the shared ones
        chosen = [FRAMEWORKS[framework]] if framework in FRAMEWORKS else []
    return tuple(dict.fromkeys(d for f in chosen for d in f.distributions)) + SHARED_DISTS


def _visible_gpu(gpus: list[GpuInfo]) -> GpuInfo | None:
    """The GPU a worker uses: the first in CUDA_VISIBLE_DEVICES (NVML's order, which the
    harness makes CUDA's), or GPU 0."""
    from engines.trackers.nvml import visible_gpu

    first = visible_gpu()
    if not gpus or first is None:
        return None
    if first.isdigit():
        i = int(first)
        return gpus[i] if i < len(gpus) else None
    return gpus[0]  # a UUID: NVML lists no UUIDs here; one GPU per workstation is the case


@functools.lru_cache(maxsize=1)
def _read_gpus_once():
    # The hardware and driver do not change under a running process; the cache keys
    # hash this on every lookup.
    return read_gpus()


def read_gpus_once():
    """read_gpus(), read once per process (the queue's lanes and the fingerprint)."""
    return _read_gpus_once()


def fingerprint(device: str | None = None, versions: dict | None = None, framework: str | None = None) -> dict:
    """The result's "environment" object (DESIGN.md schema 1): the device the framework
    computed on (null until a worker's engine says: engines.devices), the CPU threads every
    engine uses (engines.threads), GPU name, driver, CUDA, CPU model, Python and the
    versions of `framework`'s distributions (every framework's without one). Imports no
    framework; a worker passes its engine's device and versions (which add e.g. torch's
    CUDA and cuDNN)."""
    from engines.threads import cpu_threads

    gpus, driver, cuda, _ = _read_gpus_once()
    gpu = _visible_gpu(gpus)
    all_versions = {d: package_version(d) for d in fingerprint_dists(framework)}
    all_versions.update({k: (str(v) if v is not None else None) for k, v in (versions or {}).items()})
    return {"device": device, "cpu_threads": cpu_threads(),
            "gpu": gpu.name if gpu else None, "driver": driver, "cuda": cuda,
            "cpu": cpu_model(), "python": platform.python_version(),
            # Where it ran (a machine of a Ray cluster, one GPU of several): not in the key.
            "host": socket.gethostname(), "gpu_index": gpu.index if gpu else None,
            "versions": {k: v for k, v in sorted(all_versions.items()) if v is not None}}


def fingerprint_key(env: dict | None = None, framework: str | None = None) -> str:
    """A short stable hash of what makes results on this machine comparable (GPU, driver,
    CUDA, CPU, Python, the CPU threads the engines use, the framework's package versions),
    for cache keys: a new driver, another LAB_CPU_THREADS or a new version of that
    framework gives new keys, so no stale timing is served."""
    import hashlib
    import json

    env = fingerprint(framework=framework) if env is None else env
    # "device" and worker-only versions depend on which framework ran: keep the machine.
    stable = {k: env.get(k) for k in ("gpu", "driver", "cuda", "cpu", "python", "cpu_threads")}
    known = fingerprint_dists(framework)
    stable["versions"] = {k: v for k, v in (env.get("versions") or {}).items() if k in known}
    return hashlib.sha256(json.dumps(stable, sort_keys=True).encode()).hexdigest()[:16]
