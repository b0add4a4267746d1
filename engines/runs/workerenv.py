"""The worker's environment, built from a job (a RunSpec) and nothing else.

These variables are read once, when a framework or its backend starts, so they are set
in the worker's environment before the interpreter starts (the launcher) and re-applied
by the worker before its first framework import (when run by hand). Every value comes
from a closed table below keyed by the job's validated fields, or from the framework
table's record of the job's framework: nothing from the spec is passed on as free text,
and nothing is ever given to a shell.
"""
from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Mapping

from engines.frameworks import FRAMEWORKS
from engines.runs.followers import pid_alive
from engines.threads import THREADS_VARIABLE, cpu_threads
from engines.training.config import PRECISIONS, XLA_AUTOTUNE_LEVELS

AUTOTUNE_FLAG = "--xla_gpu_autotune_level"

# Always set: the reasons are DESIGN.md's traps.
FIXED = {
    "XLA_PYTHON_CLIENT_PREALLOCATE": "false",  # JAX would otherwise take 75% of the card
    "TF_FORCE_GPU_ALLOW_GROWTH": "true",  # TensorFlow would otherwise take all of it
    "CUDA_DEVICE_ORDER": "PCI_BUS_ID",  # CUDA's device indices = NVML's (energy, memory)
    "TF_CPP_MIN_LOG_LEVEL": "2",
    "PYTHONUNBUFFERED": "1",  # progress events reach the parent line by line
}

# precision -> variables. NVIDIA_TF32_OVERRIDE=0 turns TF32 off inside cuBLAS/cuDNN for
# every framework, so "fp32" is strict even where a framework's own switch misses a
# kernel; it cannot turn TF32 on, so "tf32" and "default" leave it unset. bf16 keeps its
# fp32 parts strict, as the engines' notes say.
PRECISION = {
    "default": {},
    "fp32": {"NVIDIA_TF32_OVERRIDE": "0", "JAX_DEFAULT_MATMUL_PRECISION": "float32"},
    "tf32": {"JAX_DEFAULT_MATMUL_PRECISION": "tensorfloat32"},
    "bf16": {"NVIDIA_TF32_OVERRIDE": "0", "JAX_DEFAULT_MATMUL_PRECISION": "float32"},
}
assert tuple(PRECISION) == PRECISIONS, "every precision needs its variables here"

# compile -> variables. With compile off no torch.compile may happen anywhere, not only
# in the engine's own calls.
COMPILE = {True: {}, False: {"TORCHDYNAMO_DISABLE": "1"}}

# Where torch.compile keeps what it compiled (TorchInductor's FX-graph, AOTAutograd and
# kernel caches; Triton's on a GPU): by default /tmp/torchinductor_USER, shared by every
# process of the user, so a model compiled once loaded from there in every later run.
# Measured: the default comparison's PyTorch task reported 16.9 s of compile and first
# step from an empty result cache, then 2.2 s on the next run of the same request, while
# JAX and TensorFlow (no persistent cache unless the operator sets one) compiled again.
COMPILE_CACHE_VARIABLE = "TORCHINDUCTOR_CACHE_DIR"

# The one CPU thread count (engines.threads), resolved by the parent, which keys the
# results with it: the worker pins itself to that many CPUs and sets its runtime's pools
# to it; OpenMP (PyTorch's and NumPy's BLAS pools) reads it from here.
THREADS = (THREADS_VARIABLE, "OMP_NUM_THREADS")

# Every variable this module may set or remove: the result records their values.
MANAGED = tuple(sorted(set(FIXED) | {v for d in PRECISION.values() for v in d}
                       | {v for d in COMPILE.values() for v in d}
                       | {v for f in FRAMEWORKS.values() for v in f.environment}
                       | {"XLA_FLAGS", "CUDA_VISIBLE_DEVICES"} | set(THREADS)))


def compiles(env: Mapping[str, str]) -> bool:
    """Whether a worker with environment `env` compiles: COMPILE read backwards (a worker
    started ahead has only its environment to say what its task will be)."""
    return not all(env.get(name) == value for name, value in COMPILE[False].items())


def _spec_fields(spec) -> dict:
    return spec if isinstance(spec, Mapping) else spec.to_dict()


def xla_flags(inherited: str | None, autotune: int | None) -> str | None:
    """The operator's own XLA_FLAGS kept, any autotune level in them replaced by the
    spec's (None: XLA's default, so theirs is dropped too: the spec decides)."""
    kept = [f for f in (inherited or "").split() if not f.startswith(AUTOTUNE_FLAG)]
    if autotune is not None:
        if autotune not in XLA_AUTOTUNE_LEVELS or isinstance(autotune, bool):
            raise ValueError(f"xla_autotune must be one of {XLA_AUTOTUNE_LEVELS}, got {autotune!r}")
        kept.append(f"{AUTOTUNE_FLAG}={int(autotune)}")
    return " ".join(kept) or None


def visible_device(inherited: str | None, gpu: str | int | None = None) -> str:
    """One GPU per worker: the one asked for, else the first the parent may use."""
    if gpu is not None:
        return str(gpu)
    if inherited is None:
        return "0"
    first = inherited.split(",")[0].strip()
    return first  # "" or "-1" keeps every GPU hidden, as the parent had it


def _framework_env(s: Mapping) -> Mapping[str, str]:
    """The variables the job's framework needs (KERAS_BACKEND for Keras, ...); none for a
    spec that names no single framework."""
    frameworks = s.get("frameworks") or ()
    if isinstance(frameworks, str):
        frameworks = (frameworks,)
    if len(frameworks) != 1 or frameworks[0] not in FRAMEWORKS:
        return {}
    return FRAMEWORKS[frameworks[0]].environment


def worker_env(spec, base: Mapping[str, str] | None = None, *, gpu: str | int | None = None) -> dict:
    """The complete environment for a worker running `spec` (a job's RunSpec or its dict).

    `base` (default: this process's environment) provides everything not managed here
    (PATH, HOME, the lab's cache variables); of the managed variables only XLA_FLAGS,
    CUDA_VISIBLE_DEVICES and LAB_CPU_THREADS are read from it, as described above.
    """
    s = _spec_fields(spec)
    base = dict(os.environ if base is None else base)
    precision, compile_ = s.get("precision", "default"), s.get("compile", True)
    if precision not in PRECISION:
        raise ValueError(f"precision must be one of {', '.join(PRECISION)}, got {precision!r}")
    if compile_ not in COMPILE:
        raise ValueError(f"compile must be true or false, got {compile_!r}")
    env = {k: v for k, v in base.items() if k not in MANAGED}
    env.update(FIXED)
    env.update(PRECISION[precision])
    env.update(COMPILE[compile_])
    env.update(_framework_env(s))
    flags = xla_flags(base.get("XLA_FLAGS"), s.get("xla_autotune"))
    if flags:
        env["XLA_FLAGS"] = flags
    env["CUDA_VISIBLE_DEVICES"] = visible_device(base.get("CUDA_VISIBLE_DEVICES"), gpu)
    env.update(dict.fromkeys(THREADS, str(cpu_threads(base))))
    return env


def fresh_compile_cache(environ=None) -> str | None:
    """Give this worker's torch.compile a new, empty cache folder (in `environ`, default
    os.environ), so that the compile time a run reports is a compile in every run, as it is
    for JAX and TensorFlow, and never depends on what the machine compiled before. Set
    before any framework import (importing Inductor already reads it). Returns the folder,
    for the worker to remove when it ends; None where the operator chose a folder
    (TORCHINDUCTOR_CACHE_DIR set: a shared cache on purpose, as JAX_COMPILATION_CACHE_DIR
    would be for JAX; the test suite sets both).

    The folders live in one folder of the user's, named by their worker's process id: a
    worker that was killed (a cancelled task, a waiting worker stopped with the app) cannot
    remove its own, so each new worker removes those whose process is gone."""
    environ = os.environ if environ is None else environ
    if environ.get(COMPILE_CACHE_VARIABLE):
        return None
    root = os.path.join(tempfile.gettempdir(), f"lab-torch-compile-{os.getuid()}")
    os.makedirs(root, exist_ok=True)
    _remove_orphans(root)
    folder = tempfile.mkdtemp(prefix=f"{os.getpid()}-", dir=root)
    environ[COMPILE_CACHE_VARIABLE] = folder
    return folder


def _remove_orphans(root: str) -> None:
    """The folders in `root` whose worker (the process id their name starts with) is gone."""
    for name in os.listdir(root):
        pid = name.split("-", 1)[0]
        if pid.isdigit() and not pid_alive(int(pid)):
            shutil.rmtree(os.path.join(root, name), ignore_errors=True)


def with_lab_path(env: Mapping[str, str]) -> dict:
    """`env` with the lab on its import path: what a process started by `python -m
    engines...` (a worker, a spare, a probe) needs in any working directory."""
    from engines.paths import REPO_ROOT

    return dict(env, PYTHONPATH=os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH")])))


def apply(spec, environ=None) -> dict:
    """Make `environ` (default os.environ) the worker environment for `spec`, in place;
    to be called before any framework import. Returns the managed variables' values."""
    environ = os.environ if environ is None else environ
    target = worker_env(spec, environ)
    for k in MANAGED:
        if k in target:
            environ[k] = target[k]
        else:
            environ.pop(k, None)
    return managed_view(environ)


def managed_view(environ=None) -> dict:
    """The managed variables as a run saw them, for the result (None where unset)."""
    environ = os.environ if environ is None else environ
    return {k: environ.get(k) for k in MANAGED}
