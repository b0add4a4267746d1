"""Name -> engine class, imported only when asked for.

Importing this package imports no framework: the Streamlit pages list the engines
without paying for (or crashing on) TensorFlow, PyTorch or JAX.
"""
from __future__ import annotations

import importlib
import importlib.util

from engines.training.config import TrainConfig
from engines.training.engine import FRAMEWORKS, Engine, FrameworkMissing

# framework name -> (module, class, the packages it needs)
_REGISTRY = {
    "keras": ("keras_engine", "KerasEngine", ("keras", "tensorflow")),
    "tensorflow": ("tensorflow_engine", "TensorFlowEngine", ("keras", "tensorflow")),
    "pytorch": ("torch_engine", "TorchEngine", ("torch",)),
    "jax": ("jax_engine", "JaxEngine", ("jax", "flax", "optax")),
}
assert tuple(_REGISTRY) == FRAMEWORKS


def available() -> dict[str, str | None]:
    """framework -> None if its packages are installed, else the missing package."""
    out = {}
    for name, (_, _, packages) in _REGISTRY.items():
        missing = [p for p in packages if importlib.util.find_spec(p) is None]
        out[name] = missing[0] if missing else None
    return out


def engine_class(name: str) -> type[Engine]:
    if name not in _REGISTRY:
        raise FrameworkMissing(f"unknown framework {name!r}; choose from {', '.join(_REGISTRY)}")
    module, cls, packages = _REGISTRY[name]
    for p in packages:
        if importlib.util.find_spec(p) is None:
            raise FrameworkMissing(f"framework {name!r} needs the Python package {p!r}, which "
                                   f"is not installed here")
    try:
        mod = importlib.import_module(f"{__name__}.{module}")
    except ImportError as e:
        raise FrameworkMissing(f"framework {name!r} could not be imported: {e}") from None
    return getattr(mod, cls)


def get_engine(name: str, config: TrainConfig) -> Engine:
    """The engine of framework `name`, made for the run `config` describes."""
    return engine_class(name)(config)


__all__ = ["available", "engine_class", "get_engine", "FRAMEWORKS"]
