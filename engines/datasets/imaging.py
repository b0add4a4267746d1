"""Pillow-based image work: antialiased resizing of whole arrays, and reading a folder of
images with one sub-folder per class."""
from __future__ import annotations

import os
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from engines.datasets.base import DatasetError

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp"}
# progress(done, total)
Progress = Callable[[int, int], None]


def resize_images(x: np.ndarray, resolution: int) -> np.ndarray:
    """Resize uint8 (N, H, W, C) to (N, resolution, resolution, C) with Lanczos, which
    low-pass filters when shrinking (antialiased), unlike a strided or nearest resize."""
    if x.shape[1] == resolution and x.shape[2] == resolution:
        return x
    channels = x.shape[3]
    out = np.empty((len(x), resolution, resolution, channels), dtype=np.uint8)
    for i, img in enumerate(x):
        pil = Image.fromarray(img[..., 0] if channels == 1 else img, "L" if channels == 1 else "RGB")
        arr = np.asarray(pil.resize((resolution, resolution), Image.Resampling.LANCZOS))
        out[i] = arr[..., None] if channels == 1 else arr
    return out


def _decode(path: Path, resolution: int, mode: str) -> np.ndarray:
    try:
        with Image.open(path) as img:
            img = img.convert(mode)
            if img.size != (resolution, resolution):
                img = img.resize((resolution, resolution), Image.Resampling.LANCZOS)
            arr = np.asarray(img, dtype=np.uint8)
    except (UnidentifiedImageError, OSError, ValueError) as exc:
        raise DatasetError(f"cannot read image {path} ({exc}): remove or replace it and run again.") from exc
    return arr[..., None] if mode == "L" else arr


def scan_image_folder(root: Path, *, class_from: str = "subfolder",
                      roots: list[Path] | None = None) -> tuple[list[Path], list[str], list[int]]:
    """List image files and their classes.

    class_from="subfolder": classes are the root's sub-folders (ImageFolder layout, searched
    recursively inside each). class_from="parent": a file's class is the name of the folder
    that holds it, as in the IDC breast-histology layout patient/<0|1>/*.png.
    Links are followed only into `roots` (default: the data folders); one leading
    elsewhere is refused by name (engines.datasets.folders).
    """
    from engines.datasets.folders import allowed_roots, check_link, walk_files

    roots = allowed_roots() if roots is None else roots
    if not root.is_dir():
        raise DatasetError(f"image folder {root} does not exist: create it with one sub-folder per class.")
    files: list[tuple[str, Path]] = []
    if class_from == "subfolder":
        for sub in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
            if sub.is_symlink():
                check_link(sub, roots)
            files += [(sub.name, p) for _, p in walk_files(sub, roots) if p.suffix.lower() in IMAGE_SUFFIXES]
    elif class_from == "parent":
        files += [(folder.name, p) for folder, p in walk_files(root, roots)
                  if p.suffix.lower() in IMAGE_SUFFIXES and folder != root]
    else:
        raise DatasetError(f"class_from must be 'subfolder' or 'parent', got {class_from!r}")
    files.sort(key=lambda t: (t[0], str(t[1])))
    classes = sorted({c for c, _ in files})
    if len(classes) < 2:
        found = f"only the class {classes[0]!r}" if classes else "no images"
        raise DatasetError(f"image folder {root} has {found}: a classifier needs at least two classes, "
                           "each a sub-folder holding its images.")
    index = {c: i for i, c in enumerate(classes)}
    return [p for _, p in files], classes, [index[c] for c, _ in files]


def read_images(paths: list[Path], resolution: int, channels: int,
                progress: Progress | None = None) -> np.ndarray:
    mode = "L" if channels == 1 else "RGB"
    out = np.empty((len(paths), resolution, resolution, channels), dtype=np.uint8)
    # Pillow releases the GIL while decoding, so threads overlap the work.
    with ThreadPoolExecutor(max_workers=min(8, (os.cpu_count() or 1) + 1)) as pool:
        for i, arr in enumerate(pool.map(lambda p: _decode(p, resolution, mode), paths, chunksize=64)):
            out[i] = arr
            if progress and (i % 500 == 0 or i == len(paths) - 1):
                progress(i + 1, len(paths))
    return out


def stratified_split(labels: np.ndarray, seed: int, fractions=(0.7, 0.15, 0.15)) -> tuple[np.ndarray, ...]:
    """Indices for train/val/test, each class divided in the same proportions, by seed."""
    rng = np.random.default_rng(seed)
    parts: list[list[np.ndarray]] = [[], [], []]
    for cls in np.unique(labels):
        idx = rng.permutation(np.flatnonzero(labels == cls))
        n_val = int(round(len(idx) * fractions[1]))
        n_test = int(round(len(idx) * fractions[2]))
        n_train = len(idx) - n_val - n_test
        for part, chunk in zip(parts, (idx[:n_train], idx[n_train:n_train + n_val], idx[n_train + n_val:])):
            part.append(chunk)
    return tuple(np.sort(np.concatenate(p)) for p in parts)


def most_common_size(paths: list[Path], sample: int = 200) -> int:
    """The folder's native resolution: the most common image side among a sample."""
    sizes = Counter()
    for p in paths[:: max(1, len(paths) // sample)]:
        try:
            with Image.open(p) as img:
                sizes[max(img.size)] += 1
        except (UnidentifiedImageError, OSError) as exc:
            raise DatasetError(f"cannot read image {p} ({exc}): remove or replace it and run again.") from exc
    return sizes.most_common(1)[0][0]
