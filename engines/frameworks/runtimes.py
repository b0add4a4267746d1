"""The array runtimes the engines compute with (PyTorch, JAX, TensorFlow): where each one
computes, how it was built, and its CPU thread pools.

A framework's runtime is its record's `runtime` (Keras on TensorFlow: "tensorflow"; a
Keras 3 on JAX would be "jax"). Each function imports its runtime when called, never
when this module is imported, and is meant for a worker process (or `./lab doctor`'s
probe, which is one): they read and set process-wide state.

- `device(runtime)`: a tiny computation, and the device its result lives on, as
  engines.devices labels it ("cuda:0 NVIDIA H200", "cpu"). An engine reports this.
- `build(runtime)`: the installed build in words and whether it can use an NVIDIA GPU
  at all (a CPU-only wheel cannot, whatever the driver).
- `set_threads(runtime, n)`: the one CPU thread count (engines.threads) applied to the
  runtime's own pools; returns what is in effect.
"""
from __future__ import annotations

import contextlib
import functools
import importlib.metadata
import os

from engines.devices import CPU, label

RUNTIMES = ("torch", "jax", "tensorflow")


def _version(dist: str) -> str | None:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


def _check(runtime: str) -> None:
    if runtime not in RUNTIMES:
        raise ValueError(f"unknown runtime {runtime!r}; choose from {', '.join(RUNTIMES)}")


# -- where it computes ----------------------------------------------------------------
@functools.cache
def device(runtime: str) -> str:
    """Where `runtime` computes by default in this process: a 4x4 matrix product made
    there, and the device its result is on. Cached: it does not change in a process."""
    _check(runtime)
    return {"torch": _torch_device, "jax": _jax_device, "tensorflow": _tf_device}[runtime]()


def torch_label(dev) -> str:
    """A torch.device as a device label (ROCm builds of PyTorch call their GPUs "cuda")."""
    import torch

    if dev.type != "cuda":
        return label(dev.type)
    index = dev.index if dev.index is not None else torch.cuda.current_device()
    return label("rocm" if torch.version.hip else "cuda", index, torch.cuda.get_device_name(index))


def _torch_device() -> str:
    import torch

    where = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    y = torch.ones(4, 4, device=where) @ torch.ones(4, 4, device=where)
    return torch_label(y.device)


def jax_label(d) -> str:
    """A jax Device as a device label: its platform ("gpu" means CUDA or ROCm, which
    the client's platform version tells), its id and its kind ("NVIDIA H200")."""
    if d.platform == CPU:
        return CPU
    kind = d.platform
    if kind == "gpu":
        version = str(getattr(d.client, "platform_version", "")).lower()
        kind = "rocm" if "rocm" in version else "cuda"
    return label(kind, d.id, d.device_kind)


def _jax_device() -> str:
    import jax.numpy as jnp

    y = jnp.ones((4, 4)) @ jnp.ones((4, 4))
    return jax_label(next(iter(y.devices())))


def tf_label(name: str) -> str:
    """A TensorFlow device name (".../device:GPU:0") as a device label, with the GPU's
    name from TensorFlow's device details."""
    import tensorflow as tf

    parts = name.split("device:")[-1].split(":")
    if len(parts) < 2 or parts[0].upper() != "GPU":
        return CPU if not parts or parts[0].upper() == "CPU" else label(parts[0].lower(), int(parts[1]))
    index = int(parts[1])
    gpus = tf.config.list_physical_devices("GPU")
    details = tf.config.experimental.get_device_details(gpus[index]) if index < len(gpus) else {}
    kind = "rocm" if tf.test.is_built_with_rocm() else "cuda"
    return label(kind, index, details.get("device_name"))


def _tf_device() -> str:
    import tensorflow as tf

    y = tf.linalg.matmul(tf.ones((4, 4)), tf.ones((4, 4)))
    return tf_label(y.device)


# -- how it was built ----------------------------------------------------------------------
def build(runtime: str) -> dict:
    """{"build": the installed build in words, "gpu_capable": whether this build can use an
    NVIDIA GPU at all}. Imports the runtime (the versions it reports are its own)."""
    _check(runtime)
    return {"torch": _torch_build, "jax": _jax_build, "tensorflow": _tf_build}[runtime]()


def _torch_build() -> dict:
    import torch

    if torch.version.cuda:
        cudnn = torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None
        return {"build": f"torch {torch.__version__}: CUDA {torch.version.cuda} build"
                         + (f", cuDNN {cudnn}" if cudnn else ""), "gpu_capable": True}
    if torch.version.hip:
        return {"build": f"torch {torch.__version__}: ROCm {torch.version.hip} build", "gpu_capable": False}
    return {"build": f"torch {torch.__version__}: CPU-only build", "gpu_capable": False}


# JAX's GPU support is a plugin distribution beside jaxlib (jax[cuda13] installs it).
JAX_CUDA_PLUGINS = ("jax-cuda13-plugin", "jax-cuda12-plugin")


def _jax_build() -> dict:
    import jax

    base = f"jax {jax.__version__}, jaxlib {_version('jaxlib')}"
    plugins = [f"{p} {_version(p)}" for p in JAX_CUDA_PLUGINS if _version(p)]
    if plugins:
        return {"build": f"{base} with {', '.join(plugins)}", "gpu_capable": True}
    return {"build": f"{base}: no CUDA plugin (CPU only)", "gpu_capable": False}


# tensorflow[and-cuda] brings the CUDA libraries the pip wheel loads at start.
TF_CUDA_LIBRARIES = ("nvidia-cudnn-cu12", "nvidia-cublas-cu12")


def _tf_build() -> dict:
    import tensorflow as tf

    info = tf.sysconfig.get_build_info()
    if not info.get("is_cuda_build"):
        return {"build": f"tensorflow {tf.__version__}: CPU-only build", "gpu_capable": False}
    cuda = f"CUDA {info.get('cuda_version')}, cuDNN {info.get('cudnn_version')}"
    missing = [d for d in TF_CUDA_LIBRARIES if _version(d) is None]
    if missing:
        return {"build": f"tensorflow {tf.__version__}: built for {cuda}, but its CUDA libraries "
                         f"({', '.join(missing)}: tensorflow[and-cuda]) are not installed", "gpu_capable": False}
    return {"build": f"tensorflow {tf.__version__}: {cuda} build with its CUDA libraries", "gpu_capable": True}


# -- CPU threads ---------------------------------------------------------------------------
def set_threads(runtime: str, n: int) -> dict:
    """Set the runtime's CPU pools to n threads where it still can (a pool already started
    keeps its size: a worker calls this before any work) and return what is in effect:
    {"intra_op", "inter_op"} for PyTorch and TensorFlow (TensorFlow: 0 = its own
    default), and for every runtime "cpus", the CPUs this process may run on, from which
    XLA's CPU client (JAX) sizes its pool."""
    _check(runtime)
    from engines.threads import allowed_cpus

    applied = {"torch": _torch_threads, "jax": lambda n: {}, "tensorflow": _tf_threads}[runtime](n)
    return {**applied, "cpus": len(allowed_cpus())}


def _torch_threads(n: int) -> dict:
    import torch

    torch.set_num_threads(n)
    if torch.get_num_interop_threads() != n:
        with contextlib.suppress(RuntimeError):  # only before the first inter-op parallel work
            torch.set_num_interop_threads(n)
    return {"intra_op": torch.get_num_threads(), "inter_op": torch.get_num_interop_threads()}


def _tf_threads(n: int) -> dict:
    import tensorflow as tf

    threading = tf.config.threading
    for get, put in ((threading.get_intra_op_parallelism_threads, threading.set_intra_op_parallelism_threads),
                     (threading.get_inter_op_parallelism_threads, threading.set_inter_op_parallelism_threads)):
        if get() != n:
            with contextlib.suppress(RuntimeError):  # only before TensorFlow's runtime starts
                put(n)
    return {"intra_op": threading.get_intra_op_parallelism_threads(),
            "inter_op": threading.get_inter_op_parallelism_threads()}


def cpu_only_requested() -> bool:
    """LAB_CPU_ONLY=1: ./lab installed no GPU builds on purpose (tools/gpu_plan.py)."""
    return os.environ.get("LAB_CPU_ONLY", "") not in ("", "0")
