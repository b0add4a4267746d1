"""load_dataset: any catalog entry at any resolution, as uint8 (N, H, W, C) arrays."""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np

from engines.datasets.base import Dataset, DatasetError, Split
from engines.datasets.catalog import (
    DEBIAN_FASHION_DIR,
    MAX_RESOLUTION,
    DatasetInfo,
    check_resolution,
    folder_path,
    get_info,
    local_source,
    source_resolution,
)
from engines.datasets.download import DownloadFailed, RemoteFile, download, md5_of, sha256_of
from engines.datasets.formats import read_cifar10_archive, read_idx, read_npz
from engines.datasets.imaging import most_common_size, read_images, resize_images, scan_image_folder, stratified_split
from engines.datasets.options import OPTIONS, SOURCE
from engines.datasets.synthetic import make_synthetic
from engines.paths import data_root

# progress(stage, done, total): stage is "download <file>", "resize" or "decode"
Progress = Callable[[str, int, "int | None"], None]
SPLITS = ("train", "val", "test")
KERAS_MNIST_SHA256 = "731c5ac602752760c8e48fbffcf8c3b850d9dc2a2aedcf2cc48468fc17b673d1"  # keras.datasets.mnist
MNIST_KEYS = ("x_train", "y_train", "x_test", "y_test")
# The same four arrays, however the file was saved (see _check_keras_mnist).
MNIST_ARRAYS_SHA256 = "b8370d4157fa0b022fbe73e37bdbd58bf6ba70dc85345002838ce9b2e3868914"


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
    source = options.pop(SOURCE, None) if info.files else None  # native files: which size to read
    if options:
        raise DatasetError(f"{name} takes {'only the option ' + SOURCE if info.files else 'no options'}, "
                           f"got {sorted(options)}")
    source = source_resolution(info, resolution, source)
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
    if _memo_says(path, remote.md5):
        return
    got = md5_of(path)
    if got != remote.md5:
        raise DatasetError(f"{path} has MD5 {got}, expected {remote.md5}: it is corrupt or a different "
                           f"version; delete it so that it is downloaded again.")
    _memo_record(path, remote.md5)


def _check_keras_mnist(path: Path) -> None:
    """A keras-style mnist.npz is used only if it is Keras's file (its SHA-256, as
    keras.datasets.mnist checks it) or holds exactly its arrays (a re-saved copy: the
    SHA-256 of the four arrays with their names, dtypes and shapes). Checked once per
    version of the file, like the MD5s."""
    if _memo_says(path, MNIST_ARRAYS_SHA256):
        return
    if sha256_of(path) != KERAS_MNIST_SHA256:
        digest = hashlib.sha256()
        arrays = read_npz(path, list(MNIST_KEYS))
        for k in MNIST_KEYS:
            a = np.ascontiguousarray(arrays[k])
            digest.update(f"{k} {a.dtype.str} {a.shape}".encode())
            digest.update(a.tobytes())
        if digest.hexdigest() != MNIST_ARRAYS_SHA256:
            raise DatasetError(f"{path} is neither Keras's mnist.npz (SHA-256 {KERAS_MNIST_SHA256[:12]}…) nor a "
                               "copy of its arrays: it is corrupt or another dataset; delete it, or put Keras's "
                               "mnist.npz or the MNIST IDX files there instead.")
    _memo_record(path, MNIST_ARRAYS_SHA256)


def _memo_path() -> Path:
    return data_root() / ".verified.json"


def _read_memo() -> dict:
    try:
        memo = json.loads(_memo_path().read_text())
    except (OSError, ValueError):
        return {}
    return memo if isinstance(memo, dict) else {}


def _stamp(path: Path, expected: str) -> tuple[str, list]:
    stat = path.stat()
    return str(path.resolve()), [stat.st_size, stat.st_mtime_ns, expected]


def _memo_says(path: Path, expected: str) -> bool:
    key, stamp = _stamp(path, expected)
    return _read_memo().get(key) == stamp


def _memo_record(path: Path, expected: str) -> None:
    memo = _read_memo()
    key, stamp = _stamp(path, expected)
    memo[key] = stamp
    memo_path = _memo_path()
    tmp = memo_path.with_suffix(f".tmp-{os.getpid()}")
    try:  # the memo saves time only: a read-only data root costs a hash per load, not the load
        memo_path.parent.mkdir(parents=True, exist_ok=True)
        tmp.write_text(json.dumps(memo))
        os.replace(tmp, memo_path)
    except OSError:
        with contextlib.suppress(OSError):
            tmp.unlink(missing_ok=True)


def _fetch(info: DatasetInfo, resolution: int, download_missing: bool, progress: Progress | None) -> dict[str, Path]:
    paths = local_source(info, resolution)
    if paths is not None:
        trusted = {DEBIAN_FASHION_DIR}  # Debian re-gzipped these: other MD5s, same arrays (checked below)
        for remote in info.files[resolution]:
            if remote.filename in paths and paths[remote.filename].parent not in trusted:
                _verified(paths[remote.filename], remote)
        if "mnist.npz" in paths:
            _check_keras_mnist(paths["mnist.npz"])
        return paths
    if not download_missing:
        raise DatasetError(f"{info.name} at {resolution} px is not on this machine and downloading is off: "
                           f"place {', '.join(f.filename for f in info.files[resolution])} in "
                           f"{data_root() / info.name}, or allow the download.")
    paths = {}
    for remote in info.files[resolution]:
        report = (lambda d, t, f=remote.filename: progress(f"download {f}", d, t)) if progress else None
        try:
            paths[remote.filename] = download(remote, data_root() / info.name, progress=report)
        except DownloadFailed as e:
            raise DownloadFailed(offline_sentence(info, e), url=e.url, filename=e.filename, reason=e.reason) from e
        _verified(paths[remote.filename], remote)  # hashes again only the memo's bookkeeping
    return paths


def offline_sentence(info: DatasetInfo, failure: DownloadFailed) -> str:
    """A failed download in one sentence: which dataset, from where, why, and how to make
    it available without a network."""
    return (f"{info.title} ({info.name}) is not on this machine and could not be downloaded from {failure.url} "
            f"({failure.reason}); put {failure.filename} in a folder named in LAB_DATA_PATH (or in "
            f"{data_root() / info.name}) and run again.")


def fetch(name: str, resolution: int | None = None, *, progress: Progress | None = None, **options) -> None:
    """Make a dataset's files at this resolution local (download them if needed), without
    reading them: what a job does once, before its workers start. Datasets without files
    to fetch (generated, bundled, a local folder) need nothing; the option `source` names
    the native size to fetch. DownloadFailed (one sentence) when a file cannot be fetched."""
    info = get_info(name)
    if info.unsupported or info.kind in ("synthetic", "folder", "digits"):
        return
    resolution = info.default_resolution if resolution is None else resolution
    check_resolution(info, resolution)
    _fetch(info, source_resolution(info, resolution, options.get(SOURCE)), True, progress)


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


DIGITS_IMAGES = 1797  # scikit-learn's digits: 8x8, ten classes


def _digits():
    """scikit-learn's digits as uint8 splits. Importing scikit-learn's datasets takes 1.5 s
    of every worker of a digits job (the default comparison's three included), so the splits
    (150 kB) are kept in the data root by the first process that reads them, checked on
    every read and rebuilt when they do not hold."""
    cache = data_root() / "digits" / "digits_8px.npz"
    keys = [f"{s}_{kind}" for s in SPLITS for kind in ("images", "labels")]
    if cache.is_file():
        try:
            arrays = read_npz(cache, keys)
            splits = {s: (arrays[f"{s}_images"], arrays[f"{s}_labels"]) for s in SPLITS}
            _check_digits(splits)
            return splits
        except DatasetError as e:
            _drop_cache(cache, e)
    images, target = _read_digits()
    x = np.round(images * (255.0 / 16.0)).astype(np.uint8)[..., None]  # 0..16 -> 0..255
    y = target.astype(np.int64)
    train, val, test = stratified_split(y, seed=0)
    splits = {"train": (x[train], y[train]), "val": (x[val], y[val]), "test": (x[test], y[test])}
    _save_npz(cache, **{f"{s}_{k}": splits[s][i] for s in SPLITS for i, k in enumerate(("images", "labels"))})
    return splits


def _read_digits() -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's digits as load_digits() gives them (images 1797x8x8 of 0..16, float64;
    targets): its own file read as it reads it (gzip, CSV, last column the target), found
    without importing scikit-learn, whose datasets package takes 1.5 s of CPU to import
    (before the splits are kept, on a first run: the default comparison's first worker). A
    scikit-learn whose file is elsewhere is asked through load_digits()."""
    import gzip
    import importlib.util

    spec = importlib.util.find_spec("sklearn")
    if spec is not None and spec.origin:
        path = Path(spec.origin).parent / "datasets" / "data" / "digits.csv.gz"
        if path.is_file():
            with gzip.open(path, "rt", encoding="utf-8") as f:
                data = np.loadtxt(f, delimiter=",")
            return data[:, :-1].reshape(-1, 8, 8), data[:, -1].astype(int)
    from sklearn.datasets import load_digits

    bunch = load_digits()
    return bunch.images, bunch.target


def _check_digits(splits) -> None:
    """Refuse a digits cache file that is not the splits _digits makes: uint8 8x8x1 images,
    int64 labels 0..9, the 1,797 images in all."""
    total = 0
    for s, (x, y) in splits.items():
        if x.dtype != np.uint8 or x.shape[1:] != (8, 8, 1) or y.dtype != np.int64 or len(x) != len(y):
            raise DatasetError(f"its {s} split is {x.dtype} {x.shape} with {y.dtype} {y.shape} labels")
        if len(y) and (y.min() < 0 or y.max() > 9):
            raise DatasetError(f"its {s} labels are outside 0..9")
        total += len(x)
    if total != DIGITS_IMAGES:
        raise DatasetError(f"it holds {total} images, not {DIGITS_IMAGES}")


# -- resizing, cached --------------------------------------------------------------------------

def _resized(info: DatasetInfo, source: int, resolution: int, splits, origin: str, progress: Progress | None):
    cache = data_root() / "resized" / f"{info.name}_{source}px_to_{resolution}px.npz"
    keys = [f"{s}_{kind}" for s in SPLITS for kind in ("images", "labels")]
    cached = _read_resized(cache, keys, splits, resolution)
    if cached is not None:
        return cached, f"{cache} (from {origin})"
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
    _save_npz(cache, **{f"{s}_{k}": out[s][i] for s in SPLITS for i, k in enumerate(("images", "labels"))})
    return out, f"{cache} (from {origin})"


def _read_resized(cache: Path, keys: list[str], splits, resolution: int):
    """The resized splits from their cache file, if it holds them: as many images as the
    source at the asked size, and the source's own labels. Otherwise the file is dropped
    (a warning names it) and None returned: it is rebuilt, never trusted."""
    if not cache.is_file():
        return None
    try:
        arrays = read_npz(cache, keys)
        out = {}
        for s in SPLITS:
            x, y = arrays[f"{s}_images"], arrays[f"{s}_labels"]
            src_x, src_y = splits[s]
            channels = 1 if src_x.ndim == 3 else src_x.shape[3]
            shape = (len(src_x), resolution, resolution, channels)
            if x.dtype != np.uint8 or (x if x.ndim == 4 else x[..., None]).shape != shape:
                raise DatasetError(f"its {s} images are {x.dtype} {x.shape}, not uint8 {shape}")
            if not np.array_equal(np.asarray(y).reshape(-1), np.asarray(src_y).reshape(-1)):
                raise DatasetError(f"its {s} labels are not the source's")
            out[s] = (x, y)
        return out
    except DatasetError as e:
        _drop_cache(cache, e)
        return None


# -- folders -----------------------------------------------------------------------------------

def _load_folder(info: DatasetInfo, resolution: int | None, seed: int, progress: Progress | None,
                 path: str | None = None, max_per_class: int | None = None, channels: int | None = None,
                 **unknown) -> Dataset:
    if unknown:
        raise DatasetError(f"{info.name} options are path, max_per_class, channels; got {sorted(unknown)}")
    for name, value in (("max_per_class", max_per_class), ("channels", channels)):
        # The spec refuses these first; a loader called directly must not guess either.
        if value is not None and (why := OPTIONS[name].problem(value, info.name)):
            raise DatasetError(f"{name} {why}")
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
        if resolution > MAX_RESOLUTION:
            raise DatasetError(f"the images in {root} are {resolution} px, above the lab's {MAX_RESOLUTION} px "
                               f"maximum: choose a resolution (CLI: --size PX) of {MAX_RESOLUTION} or less.")
    listing = hashlib.sha256("\n".join(
        f"{p}\t{p.stat().st_size}\t{p.stat().st_mtime_ns}" for p in files).encode()).hexdigest()[:16]
    cache = data_root() / "folders" / f"{info.name}_{listing}_{resolution}px_{channels}c.npz"
    expected = (len(files), resolution, resolution, channels)
    x = _cached_array(cache, "images", expected)
    if x is None:
        x = read_images(files, resolution, channels,
                        progress=(lambda d, t: progress("decode", d, t)) if progress else None)
        _save_npz(cache, images=x)
    train, val, test = stratified_split(labels, seed)
    if min(len(train), len(val), len(test)) == 0:
        raise DatasetError(f"{root} has too few images ({len(labels)}) for a train/val/test split: "
                           "put at least 7 images in each class.")
    return Dataset(name=info.name, resolution=resolution, channels=channels, class_names=tuple(classes),
                   train=Split(x[train], labels[train]), val=Split(x[val], labels[val]),
                   test=Split(x[test], labels[test]), source=str(root))


# -- derived-data caches -----------------------------------------------------------------------

def _cached_array(cache: Path, key: str, shape: tuple) -> np.ndarray | None:
    """A derived array from its cache file when the file holds exactly what is expected
    (uint8 of `shape`); a file that does not is deleted, with a warning naming it, and
    None returned so that the caller rebuilds it."""
    if not cache.is_file():
        return None
    try:
        x = read_npz(cache, [key])[key]
        if x.dtype != np.uint8 or x.shape != shape:
            raise DatasetError(f"{cache} holds {x.dtype} {x.shape}, not uint8 {shape}")
        return x
    except DatasetError as e:
        _drop_cache(cache, e)
        return None


def _drop_cache(cache: Path, why: Exception) -> None:
    warnings.warn(f"the data cache file {cache} was damaged ({why}); it is rebuilt", RuntimeWarning, stacklevel=3)
    cache.unlink(missing_ok=True)


def _save_npz(cache: Path, **arrays) -> None:
    """Write a derived-data cache file atomically; a read-only or full data folder costs
    the cache (a warning naming the folder), never the run."""
    tmp = cache.with_name(f".{cache.name}.part-{os.getpid()}.npz")
    try:
        cache.parent.mkdir(parents=True, exist_ok=True)
        np.savez(tmp, **arrays)
        os.replace(tmp, cache)
    except OSError as e:
        warnings.warn(f"could not write the data cache file {cache} ({e.strerror or e}); the data is used "
                      "without caching it", RuntimeWarning, stacklevel=3)
    finally:
        with contextlib.suppress(OSError):
            tmp.unlink(missing_ok=True)
