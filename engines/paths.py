"""Where the lab keeps its files. Every location can be moved with an environment variable.

LAB_CACHE_DIR   results, weights and derived data (default: <repo>/cache)
LAB_DATA_ROOT   downloaded and resized datasets (default: $LAB_CACHE_DIR/data)
LAB_DATA_PATH   extra folders, separated by ':', searched read-only for dataset files
                before downloading (for example a shared copy of the MedMNIST files)
"""
from __future__ import annotations

import os
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent


def cache_dir() -> Path:
    return Path(os.environ.get("LAB_CACHE_DIR") or REPO_ROOT / "cache")


def data_root() -> Path:
    return Path(os.environ.get("LAB_DATA_ROOT") or cache_dir() / "data")


def data_search_path() -> list[Path]:
    """The data root first (where downloads land), then the read-only extra folders."""
    extra = [Path(p) for p in os.environ.get("LAB_DATA_PATH", "").split(os.pathsep) if p]
    return [data_root(), *extra]
