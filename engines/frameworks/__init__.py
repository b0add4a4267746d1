"""The framework table: one record per framework, read by every module, page and benchmark.

A framework is one row of `FRAMEWORKS` plus one engine class: its label and colour on the
pages, the engine to import, the model builder it uses, the packages it needs and the
distributions whose versions key its cached results, how to install it, whether it runs
on XLA, which allocator its memory figures come from, which per-framework toggles apply
to it, and the environment its worker needs. Adding a framework (Keras 3 on JAX or on
PyTorch, say) is one more record here and one engine class; nothing else spells the list.

Importing this package imports no framework (nor the engines' base classes): the pages
read the table on every run, and a missing framework is found with importlib.util.find_spec
and package metadata, never by importing it.
"""
from __future__ import annotations

import contextlib
import importlib
import importlib.metadata
import importlib.util
import os
import sys
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType


@dataclass(frozen=True)
class FrameworkInfo:
    name: str  # the result's "framework", the CLI's and the spec's spelling
    label: str  # the one name people read, on every page and in every sentence
    description: str  # what runs, in a line (the Run page's hint)
    color: str  # the same colour on every chart
    engine: str  # "module:Class" under engines.frameworks
    builder: str  # models' builder name (models.BUILDERS)
    packages: tuple[str, ...]  # import names the engine needs (found without importing)
    distributions: tuple[str, ...]  # whose versions are reported and key the cache
    install_hint: str
    # What `./lab install` adds on a GPU workstation so that it computes there (the GPU
    # requirement file it picks from the driver: tools/gpu_plan.py); None: the build in
    # requirements.txt already runs on a GPU. `./lab doctor` points at ./lab with it.
    gpu_install_hint: str | None
    uses_xla: bool
    allocator: str  # which allocator reports its device memory: "torch" | "jax" | "tensorflow"
    options: tuple[str, ...] = ()  # the per-framework toggles of a RunSpec that apply to it
    environment: Mapping[str, str] = field(default_factory=dict)  # extra worker variables
    default: bool = False  # part of the default comparison
    # Whether the framework compiles where a request leaves compile to each framework (a
    # RunSpec's compile unset, the default): the setting that finishes the default
    # comparison sooner, measured per framework (the figures are above the table).
    compile_default: bool = False
    # Optional packages the framework's own import pulls in when they are installed, which
    # no engine uses: kept out while engine_class imports the engine (see `_kept_out`).
    import_without: tuple[str, ...] = ()

    def __post_init__(self):
        # Frozen all the way down: the table is shared by every module of a process.
        object.__setattr__(self, "environment", MappingProxyType(dict(self.environment)))

    @property
    def runtime(self) -> str:
        """The array library that computes ("torch" | "jax" | "tensorflow"), which is the one
        whose allocator reports the memory: its device is probed and its CPU thread pools
        are set (engines.frameworks.runtimes)."""
        return self.allocator


_XLA_OPTIONS = ("xla_autotune",)
_TF_ENV = {"KERAS_BACKEND": "tensorflow"}
# What Keras 3 and TensorFlow import only because it is installed, each behind a
# try/except ImportError: scikit-learn for keras.wrappers' estimators and pandas for
# DataFrame inputs (Keras, every backend), JAX for TensorFlow Lite's converter and Keras'
# Orbax callback. The lab feeds NumPy arrays and never uses them; on this 2-core machine
# they were 3.0 s of a Keras-on-TensorFlow worker's 7.9 s import, 2.0 s of Keras on JAX's.
_KERAS_EXTRAS = ("sklearn", "pandas")
_NOT_JAX = ("jax",)
_JAX_GPU = "jax[cuda13] or jax[cuda12] (JAX's CUDA plugin)"
_TF_GPU = "tensorflow[and-cuda] (TensorFlow's CUDA libraries)"

# compile_default, measured: the default comparison (digits, fan_arch1, 3 epochs), each
# framework's task from an empty cache with its worker started ahead, seconds with compile
# on / off (benchmarks/demo_time.py --compile on|off, the 2-core CPU machine, load 0.1-1.6;
# stops 32 and 33 of issue 16):
#   Keras 5.6-9.0 / 2.0-3.3       TensorFlow 6.6-7.6 / 1.7-2.5        PyTorch 22.4-30.1 / 1.9-2.1
#   JAX 4.2-5.4 / 14.0-17.0       Keras on JAX 5.8-6.1 / 15.4-17.3    Keras on PyTorch 93.7-96.5 / 2.2
# Compiling pays for a run this short only where JAX computes (without jax.jit it runs op
# by op); torch.compile alone takes 20 to 65 s on two cores.

FRAMEWORKS: dict[str, FrameworkInfo] = {f.name: f for f in (
    FrameworkInfo(
        name="keras", label="Keras", description="Keras 3 on the TensorFlow backend (model.fit)",
        color="#D00000", engine="keras_engine:KerasEngine", builder="keras",
        packages=("keras", "tensorflow"), distributions=("keras", "tensorflow"),
        install_hint="pip install tensorflow keras", gpu_install_hint=_TF_GPU, uses_xla=True,
        allocator="tensorflow", options=_XLA_OPTIONS, environment=_TF_ENV, default=True, compile_default=False,
        import_without=_KERAS_EXTRAS + _NOT_JAX),
    FrameworkInfo(
        name="tensorflow", label="TensorFlow", description="low-level TensorFlow (tf.function training loop)",
        color="#FF8F00", engine="tensorflow_engine:TensorFlowEngine", builder="keras",
        # The models are built with Keras layers: its version is part of what ran.
        packages=("keras", "tensorflow"), distributions=("keras", "tensorflow"),
        install_hint="pip install tensorflow", gpu_install_hint=_TF_GPU, uses_xla=True,
        allocator="tensorflow", options=_XLA_OPTIONS, environment=_TF_ENV, compile_default=False,
        import_without=_KERAS_EXTRAS + _NOT_JAX),
    FrameworkInfo(
        name="pytorch", label="PyTorch", description="PyTorch (eager, torch.compile when compile is on)",
        color="#6F42C1", engine="torch_engine:TorchEngine", builder="pytorch",
        packages=("torch",), distributions=("torch",), install_hint="pip install torch==2.13.0",
        gpu_install_hint=None, uses_xla=False, allocator="torch",
        options=("cudnn_benchmark", "channels_last"), default=True, compile_default=False),
    FrameworkInfo(
        name="jax", label="JAX/Flax", description="JAX with Flax NNX and optax (jit)",
        color="#1A73E8", engine="jax_engine:JaxEngine", builder="jax",
        packages=("jax", "flax", "optax"), distributions=("jax", "jaxlib", "flax", "optax"),
        install_hint="pip install jax flax optax", gpu_install_hint=_JAX_GPU,
        uses_xla=True, allocator="jax", options=_XLA_OPTIONS, default=True, compile_default=True),
    # Keras 3 on its other backends: the keras builder's model, the same model.fit; only
    # the backend differs (chosen by KERAS_BACKEND before keras is first imported).
    FrameworkInfo(
        name="keras-jax", label="Keras on JAX", description="Keras 3 on the JAX backend (model.fit, jax.jit)",
        color="#00897B", engine="keras_jax_engine:KerasJaxEngine", builder="keras",
        packages=("keras", "jax"), distributions=("keras", "jax", "jaxlib"),
        install_hint="pip install keras jax", gpu_install_hint=_JAX_GPU,
        uses_xla=True, allocator="jax", options=_XLA_OPTIONS, environment={"KERAS_BACKEND": "jax"},
        compile_default=True, import_without=_KERAS_EXTRAS),
    FrameworkInfo(
        name="keras-torch", label="Keras on PyTorch",
        description="Keras 3 on the PyTorch backend (model.fit, torch.compile when compile is on)",
        color="#E91E63", engine="keras_torch_engine:KerasTorchEngine", builder="keras",
        packages=("keras", "torch"), distributions=("keras", "torch"), install_hint="pip install keras torch==2.13.0",
        gpu_install_hint=None, uses_xla=False, allocator="torch", options=("cudnn_benchmark",),
        environment={"KERAS_BACKEND": "torch"}, compile_default=False, import_without=_KERAS_EXTRAS + _NOT_JAX),
)}

NAMES: tuple[str, ...] = tuple(FRAMEWORKS)
# Every per-framework toggle any framework takes: a job sets those that do not apply to
# its framework to their neutral value (RunSpec.job).
OPTIONS: tuple[str, ...] = tuple(dict.fromkeys(o for f in FRAMEWORKS.values() for o in f.options))


def info(name: str) -> FrameworkInfo:
    """The record of `name`; a KeyError that lists the known names otherwise."""
    try:
        return FRAMEWORKS[name]
    except (KeyError, TypeError):
        raise KeyError(f"unknown framework {name!r}; choose from {', '.join(FRAMEWORKS)}") from None


def label(name: str) -> str:
    """The framework's label, or the name itself for one the table does not know."""
    f = FRAMEWORKS.get(name)
    return f.label if f else str(name)


def default_frameworks() -> tuple[str, ...]:
    return tuple(n for n, f in FRAMEWORKS.items() if f.default)


def compiled_by_default() -> tuple[str, ...]:
    """The frameworks that compile where a request leaves compile to each (compile_default)."""
    return tuple(n for n, f in FRAMEWORKS.items() if f.compile_default)


def owners(option: str) -> tuple[str, ...]:
    """The frameworks a per-framework toggle applies to."""
    return tuple(n for n, f in FRAMEWORKS.items() if option in f.options)


def _version(dist: str) -> str | None:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


def missing(name: str) -> str | None:
    """The first package or distribution `name` needs that is not installed, else None."""
    f = info(name)
    for package in f.packages:
        if importlib.util.find_spec(package) is None:
            return package
    for dist in f.distributions:
        if _version(dist) is None:
            return dist
    return None


def installed(name: str) -> bool:
    """Whether the framework's packages can be imported and its distributions are present."""
    return missing(name) is None


def available() -> dict[str, str | None]:
    """framework -> None if installed, else what is missing."""
    return {name: missing(name) for name in FRAMEWORKS}


def conflict(name: str, environ: Mapping[str, str] | None = None) -> str | None:
    """Why `name` cannot run in this process (a variable its worker sets, such as
    KERAS_BACKEND, that this process has set to another value), or None. These variables
    are read once, when a framework starts: each worker sets its own before any import,
    but one process that runs several frameworks (a test, a notebook) can run only those
    that agree with it."""
    environ = os.environ if environ is None else environ
    for key, value in info(name).environment.items():
        have = environ.get(key)
        if have is not None and have != value:
            return f"{name} needs {key}={value}, and this process has {key}={have}"
    return None


def runnable_here() -> tuple[str, ...]:
    """The frameworks that are installed and agree with this process's environment."""
    return tuple(n for n in FRAMEWORKS if installed(n) and conflict(n) is None)


def engine_class(name: str):
    """The engine class of `name`, imported now; FrameworkMissing says what is absent."""
    from engines.training.engine import FrameworkMissing

    if name not in FRAMEWORKS:
        raise FrameworkMissing(f"unknown framework {name!r}; choose from {', '.join(FRAMEWORKS)}")
    f = FRAMEWORKS[name]
    absent = missing(name)
    if absent is not None:
        raise FrameworkMissing(f"framework {name!r} needs the Python package {absent!r}, which is not "
                               f"installed here ({f.install_hint})")
    clash = conflict(name)
    if clash is not None:
        raise FrameworkMissing(f"framework {name!r} cannot run in this process: {clash} (each framework's "
                               "worker sets its own before the framework starts)")
    module, cls = f.engine.split(":")
    try:
        with _kept_out(f):
            mod = importlib.import_module(f"{__name__}.{module}")
    except ImportError as e:
        raise FrameworkMissing(f"framework {name!r} could not be imported: {e}") from None
    return getattr(mod, cls)


@contextlib.contextmanager
def _kept_out(f: FrameworkInfo) -> Iterator[None]:
    """While the framework's first import runs, its `import_without` packages cannot be
    imported (None in sys.modules: `import sklearn` raises ImportError, which the
    framework's optional import catches); afterwards they import as usual, so a worker
    that later reads scikit-learn's digits still can. Only for a first import: once the
    framework's packages are loaded the engine module imports nothing of theirs again, and a
    process that has them (a test, a notebook) keeps every module as it is."""
    if all(p in sys.modules for p in f.packages):
        yield
        return
    blocked = [p for p in f.import_without if p not in sys.modules]
    for p in blocked:
        sys.modules[p] = None
    try:
        yield
    finally:
        for p in blocked:
            if p in sys.modules and sys.modules[p] is None:
                del sys.modules[p]


def get_engine(name: str, config):
    """An engine for `name`, configured for one run (a TrainConfig) at construction."""
    return engine_class(name)(config)


__all__ = ["FRAMEWORKS", "NAMES", "OPTIONS", "FrameworkInfo", "available", "conflict", "default_frameworks",
           "engine_class", "get_engine", "info", "installed", "label", "missing", "owners", "runnable_here"]
