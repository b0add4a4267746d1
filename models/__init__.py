"""Architectures defined once as data (a small layer-graph IR) and built in Keras 3,
PyTorch and Flax NNX.

Importing this package imports no framework: the registry, the parameter and FLOP
counts and the canonical weights need only numpy; the builders (``build_keras``,
``build_torch``, ``build_flax``) are imported by the calls that build or touch a model.

Models output logits.  Keras and Flax take NHWC float32 in [0, 1], PyTorch NCHW.
"""

from .api import (
    BUILDERS,
    build_model,
    count_parameters,
    definition_table,
    describe,
    extract_weights,
    framework_name,
    infer,
    init_weights,
    is_installed,
    load_weights,
    parameter_specs,
    parameter_table,
)
from .registry import ArchInfo, check_input, get_architecture, list_architectures

__all__ = [
    "ArchInfo", "BUILDERS", "build_model", "check_input", "count_parameters", "definition_table", "describe",
    "extract_weights", "framework_name", "get_architecture", "infer", "init_weights", "is_installed",
    "list_architectures", "load_weights", "parameter_specs", "parameter_table",
]
