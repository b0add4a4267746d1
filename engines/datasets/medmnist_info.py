"""MedMNIST's metadata (names, labels, split sizes, URLs and MD5 sums per size), read from
the installed `medmnist` package without importing it: its __init__ imports torchvision,
which does not import here, and its downloader goes through torchvision too. INFO is a plain
dict literal in medmnist/info.py, so it is parsed with ast.literal_eval (no code runs)."""
from __future__ import annotations

import ast
import functools
import importlib.util
from pathlib import Path

MEDMNIST_SIZES = (28, 64, 128, 224)
INSTALL_HINT = "pip install --no-deps medmnist==3.0.2"


@functools.lru_cache(maxsize=1)
def medmnist_info() -> dict[str, dict] | None:
    """INFO for the 2D datasets, or None when the medmnist package is not installed."""
    spec = importlib.util.find_spec("medmnist")
    if spec is None or not spec.submodule_search_locations:
        return None
    info_py = Path(list(spec.submodule_search_locations)[0]) / "info.py"
    tree = ast.parse(info_py.read_text(encoding="utf-8"))
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(getattr(t, "id", None) == "INFO" for t in node.targets):
            info = ast.literal_eval(node.value)
            # The 3D volumes (organmnist3d, ...) are not images for a 2D classifier.
            return {name: meta for name, meta in info.items() if not name.endswith("3d")}
    return None
