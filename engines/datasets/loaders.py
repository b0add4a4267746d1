"""load_dataset: any catalog entry at any resolution, as uint8 (N, H, W, C) arrays."""
from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable
from pathlib import Path

import numpy as np

from engines.datasets.base import Dataset, DatasetError, Split
from engines.datasets.catalog import (
    DEBIAN_FASHION_DIR,
    DatasetInfo,
    check_resolution,
    folder_path,
    get_info,
    local_source,
    source_resolution,
)
from engines.datasets.download import RemoteFile, download, md5_of
from engines.datasets.formats import read_cifar10_archive, read_idx, read_npz
from engines.datasets.imaging import most_common_size, read_images, resize_images, scan_image_folder, stratified_split
from engines.datasets.synthetic import make_synthetic
from engines.paths import data_root

# progress(stage, done, total): stage is "download <file>", "resize" or "decode"
Progress = Callable[[str, int, "int | None"], None]
SPLITS = ("train", "val", "test")


def load_dataset(name: str, resolution: int | None = None, *, seed: int = 0, download_missing: bool = True,
                 progress: Progress | None = None, **options) -> Dataset:
    """Load a catalog dataset. Native files are used where they exist at that size; any other
    size is resized once with Pillow and cached under the data root.

    options: synthetic: channels, classes, train, val, test; folders: path, max_per_class.
    The seed draws the synthetic images and the folder split; the other datasets have fixed
    splits, the same for every seed, so repeats differ only in training randomness.
    """
    info = get_info(name)
    if info.unsupported:
        raise DatasetError(f"{name} is not supported: {info.unsupported}")
    resolution = info.default_resolution if resolution is None else resolution
    check_resolution(info, resolution)
    if info.kind == "synthetic":
        return make_synthetic(resolution, seed=seed, **options)
    if info.kind == "folder":
        return _load_folder(info, resolution, seed, progress, **options)
    if options:
        raise DatasetError(f"{name} takes no options, got {sorted(options)}")
    source = source_resolution(info, resolution)
    splits, origin = _load_native(info, source, download_missing, progress)
    if source != resolution:
        splits, origin = _resized(info, source, resolution, splits, origin, progress)
    return Dataset(name=info.name, resolution=resolution, channels=info.channels,
                   class_names=info.class_names, source=origin, **_check_labels(info, splits))


def _check_labels(info: DatasetInfo, splits: dict[str, tuple[np.ndarray, np.ndarray]]) -> dict[str, Split]:
    out = {}
    for split in SPLITS:
        x, y = splits[split]
        if x.ndim == 3:
            x = x[..., None]
        y = np.asarray(y).reshape(-1).astype(np.int64)
        if len(y) and (y.min() < 0 or y.max() >= len(info.class_names)):
            raise DatasetError(f"{info.name} {split} labels span {y.min()}..{y.max()}, but the dataset has "
                               f"{len(info.class_names)} classes: the file is not the expected one.")
        expected = info.splits.get(split)
        if expected is not None and len(y) != expected:
            raise DatasetError(f"{info.name} {split} has {len(y):,} images, the catalog says {expected:,}: "
                               "the file is incomplete or a different version; delete it and load again.")
        out[split] = Split(x=np.ascontiguousarray(x), y=y)
    return out


# -- native files ----------------------------------------------------------------------------

def _verified(path: Path, remote: RemoteFile) -> None:
    """Check a file's MD5 once; remember (path, size, mtime) so the next load does not hash again."""
    memo_path = data_root() / ".verified.json"
    try:
        memo = json.loads(memo_path.read_text())
    except (OSError, ValueError):
        memo = {}
    stat = path.stat()
    key, stamp = str(path.resolve()), [stat.st_size, stat.st_mtime_ns, remote.md5]
    if memo.get(key) == stamp:
        return
    got = md5_of(path)
    if got != remote.md5:
        raise DatasetError(f"{path} has MD5 {got}, expected {remote.md5}: it is corrupt or a different "
                           f"version; delete it so that it is downloaded again.")
    memo[key] = stamp
    memo_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = memo_path.with_suffix(f".tmp-{os.getpid()}")
    tmp.write_text(json.dumps(memo))
    os.replace(tmp, memo_path)


def _fetch(info: DatasetInfo, resolution: int, download_missing: bool, progress: Progress | None) -> dict[str, Path]:
    paths = local_source(info, resolution)
    if paths is not None:
        trusted = {DEBIAN_FASHION_DIR}  # Debian re-gzipped these: other MD5s, same arrays (checked below)
        for remote in info.files[resolution]:
            if remote.filename in paths and paths[remote.filename].parent not in trusted:
                _verified(paths[remote.filename], remote)
        return paths
    if not download_missing:
        raise DatasetError(f"{info.name} at {resolution} px is not on this machine and downloading is off: "
                           f"place {', '.join(f.filename for f in info.files[resolution])} in "
                           f"{data_root() / info.name}, or allow the download.")
    paths = {}
    for remote in info.files[resolution]:
        report = (lambda d, t, f=remote.filename: progress(f"download {f}", d, t)) if progress else None
        paths[remote.filename] = download(remote, data_root() / info.name, progress=report)
        _verified(paths[remote.filename], remote)  # hashes again only the memo's bookkeeping
    return paths


def _load_native(info: DatasetInfo, resolution: int, download_missing: bool, progress: Progress | None):
    if info.kind == "digits":
        return _digits(), "scikit-learn load_digits()"
    paths = _fetch(info, resolution, download_missing, progress)
    origin = ", ".join(sorted(str(p) for p in paths.values()))
    if info.kind == "medmnist":
        (path,) = paths.values()
        keys = [f"{s}_{kind}" for s in SPLITS for kind in ("images", "labels")]
        arrays = read_npz(path, keys)
        return {s: (arrays[f"{s}_images"], arrays[f"{s}_labels"]) for s in SPLITS}, origin
    if info.kind == "idx":
        if "mnist.npz" in paths:
            arrays = read_npz(paths["mnist.npz"], ["x_train", "y_train", "x_test", "y_test"])
            train_x, train_y, test_x, test_y = (arrays[k] for k in ("x_train", "y_train", "x_test", "y_test"))
        else:
            train_x, train_y, test_x, test_y = (read_idx(paths[f]) for f in
                                                ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz",
                                                 "t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"))
        return _hold_out(train_x, train_y, test_x, test_y, info.splits["val"]), origin
    if info.kind == "cifar10":
        (path,) = paths.values()
        arrays = read_cifar10_archive(path)
        return _hold_out(*arrays["train"], *arrays["test"], info.splits["val"]), origin
    raise DatasetError(f"no loader for kind {info.kind!r}")


def _hold_out(train_x, train_y, test_x, test_y, n_val: int):
    """Validation = the last n_val training images: fixed, so every run sees the same split."""
    if len(train_x) != len(train_y) or len(test_x) != len(test_y):
        raise DatasetError("image and label files disagree in count: one of them is from another dataset.")
    return {"train": (train_x[:-n_val], train_y[:-n_val]), "val": (train_x[-n_val:], train_y[-n_val:]),
            "test": (test_x, test_y)}


def _digits():
    from sklearn.datasets import load_digits

    bunch = load_digits()
    x = np.round(bunch.images * (255.0 / 16.0)).astype(np.uint8)[..., None]  # 0..16 -> 0..255
    y = bunch.target.astype(np.int64)
    train, val, test = stratified_split(y, seed=0)
    return {"train": (x[train], y[train]), "val": (x[val], y[val]), "test": (x[test], y[test])}


# -- resizing, cached --------------------------------------------------------------------------

def _resized(info: DatasetInfo, source: int, resolution: int, splits, origin: str, progress: Progress | None):
    cache = data_root() / "resized" / f"{info.name}_{source}px_to_{resolution}px.npz"
    keys = [f"{s}_{kind}" for s in SPLITS for kind in ("images", "labels")]
    if cache.is_file():
        try:
            arrays = read_npz(cache, keys)
            return {s: (arrays[f"{s}_images"], arrays[f"{s}_labels"]) for s in SPLITS}, f"{cache} (from {origin})"
        except DatasetError:
            cache.unlink(missing_ok=True)  # a damaged cache is rebuilt, never trusted
    total = sum(len(splits[s][0]) for s in SPLITS)
    out, done = {}, 0
    for s in SPLITS:
        x, y = splits[s]
        x = x[..., None] if x.ndim == 3 else x
        resized = []
        for start in range(0, len(x), 2048):
            resized.append(resize_images(x[start:start + 2048], resolution))
            done += len(resized[-1])
            if progress:
                progress("resize", done, total)
        out[s] = (np.concatenate(resized) if resized else x[:0], y)
    cache.parent.mkdir(parents=True, exist_ok=True)
    tmp = cache.with_name(f".{cache.name}.part-{os.getpid()}.npz")
    try:
        np.savez(tmp, **{f"{s}_{k}": out[s][i] for s in SPLITS for i, k in enumerate(("images", "labels"))})
        os.replace(tmp, cache)
    finally:
        tmp.unlink(missing_ok=True)
    return out, f"{cache} (from {origin})"


# -- folders -----------------------------------------------------------------------------------

def _load_folder(info: DatasetInfo, resolution: int | None, seed: int, progress: Progress | None,
                 path: str | None = None, max_per_class: int | None = None, channels: int | None = None,
                 **unknown) -> Dataset:
    if unknown:
        raise DatasetError(f"{info.name} options are path, max_per_class, channels; got {sorted(unknown)}")
    root = folder_path(info, path)
    files, classes, labels = scan_image_folder(root, class_from=info.class_from)
    labels = np.asarray(labels, dtype=np.int64)
    if max_per_class:
        keep = np.concatenate([np.flatnonzero(labels == c)[:max_per_class] for c in range(len(classes))])
        files, labels = [files[i] for i in keep], labels[keep]
    channels = channels or info.channels
    # The catalog's default is a guess for a generic folder: its own images know better.
    if info.name == "folder" and resolution == info.default_resolution:
        resolution = most_common_size(files)
    listing = hashlib.sha256("\n".join(
        f"{p}\t{p.stat().st_size}\t{p.stat().st_mtime_ns}" for p in files).encode()).hexdigest()[:16]
    cache = data_root() / "folders" / f"{info.name}_{listing}_{resolution}px_{channels}c.npz"
    x = None
    if cache.is_file():
        try:
            x = read_npz(cache, ["images"])["images"]
        except DatasetError:
            cache.unlink(missing_ok=True)
    if x is None:
        x = read_images(files, resolution, channels,
                        progress=(lambda d, t: progress("decode", d, t)) if progress else None)
        cache.parent.mkdir(parents=True, exist_ok=True)
        tmp = cache.with_name(f".{cache.name}.part-{os.getpid()}.npz")
        try:
            np.savez(tmp, images=x)
            os.replace(tmp, cache)
        finally:
            tmp.unlink(missing_ok=True)
    train, val, test = stratified_split(labels, seed)
    if min(len(train), len(val), len(test)) == 0:
        raise DatasetError(f"{root} has too few images ({len(labels)}) for a train/val/test split: "
                           "put at least 7 images in each class.")
    return Dataset(name=info.name, resolution=resolution, channels=channels, class_names=tuple(classes),
                   train=Split(x[train], labels[train]), val=Split(x[val], labels[val]),
                   test=Split(x[test], labels[test]), source=str(root))
