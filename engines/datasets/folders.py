"""Which folders a folder dataset may read: the data root and the LAB_DATA_PATH folders.

The app and the CLI run on a machine that a class shares, so a dataset option must not
turn the lab into a reader of any directory on the server (/etc, someone's home). A
folder is resolved (`..` and links followed) before it is compared with the allowed
roots, and a link found inside it that leads outside them is refused by name rather
than followed or skipped without a word. A relative path is looked up in each root in
search order (the data root first).
"""
from __future__ import annotations

import os
from pathlib import Path

from engines.datasets.base import DatasetError
from engines.paths import data_root, data_search_path

# The lab's own caches under the data root: never offered as a dataset folder.
INTERNAL = frozenset({"resized", "folders"})
HOW = "put it under the data root or add its parent folder to LAB_DATA_PATH (folders separated by ':')"


class FolderRefused(DatasetError):
    """A folder (or a link inside one) outside the data folders."""


def allowed_roots() -> list[Path]:
    """The data root and the LAB_DATA_PATH folders, resolved, in search order."""
    roots: list[Path] = []
    for folder in data_search_path():
        try:
            real = folder.expanduser().resolve()
        except (OSError, RuntimeError):
            continue
        if real not in roots:
            roots.append(real)
    return roots


def inside(path: Path, roots: list[Path]) -> bool:
    return any(path == root or root in path.parents for root in roots)


def _where(roots: list[Path]) -> str:
    return ", ".join(map(str, roots))


def resolve_folder(path, name: str) -> Path:
    """The folder a dataset reads: `path` (absolute, or relative to a data folder) or, when
    it is empty, the first data folder's sub-folder named after the dataset. Raises
    FolderRefused for a folder outside the data folders; existence is not checked."""
    roots = allowed_roots()
    if path is None or (isinstance(path, str) and not path.strip()):
        candidates = [root / name for root in roots]
        candidate = next((c for c in candidates if c.is_dir()), candidates[0] if candidates else data_root() / name)
        text = str(candidate)
    else:
        if not isinstance(path, (str, os.PathLike)):
            raise FolderRefused(f"path must be a folder, got {path!r}")
        text = str(path).strip()
        if "\0" in text:
            raise FolderRefused("path holds a NUL character")
        candidate = Path(text).expanduser()
        if not candidate.is_absolute():
            found = [root / candidate for root in roots if (root / candidate).is_dir()]
            candidate = found[0] if found else (roots[0] if roots else data_root()) / candidate
    try:
        real = candidate.resolve()
    except (OSError, RuntimeError) as e:  # a loop of links, say
        raise FolderRefused(f"the folder {text} cannot be resolved ({e})") from None
    if not inside(real, roots):
        shown = text if Path(text) == real else f"{text} (which is {real})"
        raise FolderRefused(f"the folder {shown} is outside the data folders ({_where(roots)}): {HOW}")
    return real


def check_link(path: Path, roots: list[Path]) -> None:
    """A link inside a dataset folder must lead into the data folders too."""
    try:
        target = path.resolve()
    except (OSError, RuntimeError) as e:
        raise FolderRefused(f"{path} is a link that cannot be resolved ({e}): remove it") from None
    if not inside(target, roots):
        raise FolderRefused(f"{path} is a link to {target}, outside the data folders ({_where(roots)}): "
                            f"remove the link, or {HOW}")


def walk_files(top: Path, roots: list[Path]) -> list[tuple[Path, Path]]:
    """(folder, file) for every file under `top`, following links that stay inside the
    data folders (each real folder once, so a loop of links ends) and refusing the others."""
    out: list[tuple[Path, Path]] = []
    seen: set[Path] = set()
    stack = [top]
    while stack:
        folder = stack.pop()
        real = folder.resolve()
        if real in seen:
            continue
        seen.add(real)
        try:
            entries = sorted(os.scandir(folder), key=lambda e: e.name)
        except OSError as e:
            raise DatasetError(f"cannot list {folder} ({e.strerror or e})") from None
        subfolders = []
        for entry in entries:
            p = Path(entry.path)
            if entry.is_symlink():
                check_link(p, roots)
            if entry.is_dir():
                subfolders.append(p)
            elif entry.is_file():
                out.append((folder, p))
        stack.extend(reversed(subfolders))
    return out


def find_folders(name: str, class_from: str = "subfolder") -> list[Path]:
    """Folders in the data folders that could hold this dataset, for the app to offer:
    the dataset's own sub-folder of each data folder, then every other sub-folder that has
    sub-folders of its own (the classes; for class_from="parent", the patients)."""
    found: list[Path] = []
    for root in allowed_roots():
        if not root.is_dir():
            continue
        try:
            children = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
        except OSError:
            continue
        for child in children:
            if child.name in INTERNAL or child in found:
                continue
            try:
                if child.resolve() != child and not inside(child.resolve(), allowed_roots()):
                    continue
                subs = sum(1 for p in child.iterdir() if p.is_dir() and not p.name.startswith("."))
            except OSError:
                continue
            if child.name == name or subs >= (1 if class_from == "parent" else 2):
                found.append(child)
    own = [p for p in found if p.name == name]
    return own + [p for p in found if p.name != name]
