"""The one place that knows every dataset: what it is, where its files come from, and
whether it can be used on this machine now."""
from __future__ import annotations

import importlib.util
from dataclasses import dataclass, field
from pathlib import Path

from engines.datasets.base import DatasetError
from engines.datasets.download import RemoteFile
from engines.datasets.medmnist_info import INSTALL_HINT, MEDMNIST_SIZES, medmnist_info
from engines.paths import data_search_path

MIN_RESOLUTION, MAX_RESOLUTION = 4, 2048
DEBIAN_FASHION_DIR = Path("/usr/share/datasets/fashion-mnist")

IDX_FILES = ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz",
             "t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz")
MNIST_BASE = "https://ossci-datasets.s3.amazonaws.com/mnist/"
MNIST_MD5 = ("f68b3c2dcbeaaa9fbdd348bbdeb94873", "d53e105ee54ea40749a09fcbcd1e9432",
             "9fb629c4189551a2d022fa330f9573f3", "ec29112dd5afa0611ce80d1b7f02629c")
MNIST_SIZES = (9912422, 28881, 1648877, 4542)
FASHION_BASE = "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/"
FASHION_MD5 = ("8d4fb7e6c68d591d4c3dfef9ec88bf0d", "25c81989df183df01b3e8a0aad5dffbe",
               "bef4ecab320f06d8554ea6380940ec79", "bb300cfdad3c16e7a12a480ee83cd310")
FASHION_SIZES = (26421880, 29515, 4422102, 5148)


@dataclass(frozen=True)
class DatasetInfo:
    name: str
    title: str
    kind: str  # medmnist | idx | cifar10 | folder | synthetic | digits
    task: str
    class_names: tuple[str, ...]  # empty when read from a folder
    channels: int
    native_resolutions: tuple[int, ...]
    splits: dict[str, int]  # sizes; empty when they depend on a folder
    license: str
    source: str
    description: str = ""
    files: dict[int, tuple[RemoteFile, ...]] = field(default_factory=dict)  # per native resolution
    unsupported: str = ""  # why the lab cannot use it yet; empty when it can
    class_from: str = "subfolder"  # folder datasets: how a file's class is found

    @property
    def default_resolution(self) -> int:
        return self.native_resolutions[0]


def _medmnist_entries() -> list[DatasetInfo]:
    info = medmnist_info()
    if info is None:
        return []
    entries = []
    for name, meta in info.items():
        files = {}
        for size in MEDMNIST_SIZES:
            suffix = "" if size == 28 else f"_{size}"
            files[size] = (RemoteFile(f"{name}{suffix}.npz", meta[f"url{suffix}"], meta[f"MD5{suffix}"]),)
        labels = tuple(meta["label"][str(i)] for i in range(len(meta["label"])))
        unsupported = ""
        if meta["task"].startswith("multi-label"):
            unsupported = ("multi-label task (14 independent binary labels per image): the lab's "
                           "engines train single-label classifiers with softmax cross-entropy")
        entries.append(DatasetInfo(
            name=name, title=meta["python_class"], kind="medmnist", task=meta["task"],
            class_names=labels, channels=meta["n_channels"], native_resolutions=MEDMNIST_SIZES,
            splits=dict(meta["n_samples"]), license=meta["license"],
            source="MedMNIST v2/v3 (Zenodo record 10519652)", description=meta["description"],
            files=files, unsupported=unsupported))
    # The lab's papers use these two first; keep them at the top of every list.
    order = {"pathmnist": 0, "bloodmnist": 1}
    return sorted(entries, key=lambda e: (order.get(e.name, 2), e.name))


def _idx_files(base: str, md5s, sizes) -> tuple[RemoteFile, ...]:
    return tuple(RemoteFile(f, base + f, m, s) for f, m, s in zip(IDX_FILES, md5s, sizes))


def _fixed_entries() -> list[DatasetInfo]:
    mnist_split = {"train": 54000, "val": 6000, "test": 10000}
    return [
        DatasetInfo("mnist", "MNIST", "idx", "multi-class", tuple(str(i) for i in range(10)), 1, (28,),
                    mnist_split, "CC BY-SA 3.0", "LeCun, Cortes, Burges (IDX files, ossci mirror)",
                    "Handwritten digits. Validation: the last 6,000 training images.",
                    files={28: _idx_files(MNIST_BASE, MNIST_MD5, MNIST_SIZES)}),
        DatasetInfo("fashion_mnist", "Fashion-MNIST", "idx", "multi-class",
                    ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt",
                     "Sneaker", "Bag", "Ankle boot"), 1, (28,), mnist_split, "MIT",
                    "Zalando Research (IDX files; Debian package dataset-fashion-mnist when installed)",
                    "Clothing images. Validation: the last 6,000 training images.",
                    files={28: _idx_files(FASHION_BASE, FASHION_MD5, FASHION_SIZES)}),
        DatasetInfo("cifar10", "CIFAR-10", "cifar10", "multi-class",
                    ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"),
                    3, (32,), {"train": 45000, "val": 5000, "test": 10000}, "MIT-style (Krizhevsky 2009)",
                    "Krizhevsky, University of Toronto (python batches)",
                    "Small natural images. Validation: the last 5,000 training images.",
                    files={32: (RemoteFile("cifar-10-python.tar.gz",
                                           "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",
                                           "c58f30108f718f92721af3b95e74349a", 170498071),)}),
        DatasetInfo("breast_histology_idc", "Breast histology IDC patches", "folder", "binary-class",
                    (), 3, (50,), {}, "CC0 (Janowczyk & Madabhushi 2016)",
                    "local folder: patient/<0|1>/*.png as distributed",
                    "50x50 H&E patches, 0 = no invasive ductal carcinoma, 1 = IDC. Split 70/15/15 by seed.",
                    class_from="parent"),
        DatasetInfo("imagenet100", "ImageNet-100", "folder", "multi-class", (), 3, (224,), {},
                    "ImageNet terms of access", "local folder: <class>/*.JPEG",
                    "100-class ImageNet subset in ImageFolder layout. Split 70/15/15 by seed."),
        DatasetInfo("folder", "Image folder", "folder", "multi-class", (), 3, (64,), {}, "yours",
                    "local folder given with path=...", "Any folder with one sub-folder per class. "
                    "Split 70/15/15 by seed."),
        DatasetInfo("synthetic", "Synthetic", "synthetic", "multi-class", (), 3, (32,),
                    {"train": 512, "val": 128, "test": 128}, "none (generated)", "generated here",
                    "Class patterns plus noise at any resolution, channels and class count; "
                    "deterministic by seed."),
        DatasetInfo("digits", "scikit-learn digits", "digits", "multi-class",
                    tuple(str(i) for i in range(10)), 1, (8,), {"train": 1259, "val": 269, "test": 269},
                    "BSD-3-Clause (scikit-learn)", "bundled with scikit-learn (UCI optical digits)",
                    "8x8 handwritten digits shipped with scikit-learn: the offline default that "
                    "always works. Split 70/15/15, fixed."),
    ]


def catalog() -> dict[str, DatasetInfo]:
    return {e.name: e for e in _medmnist_entries() + _fixed_entries()}


OFFLINE_DEFAULT = "digits"


def get_info(name: str) -> DatasetInfo:
    entries = catalog()
    if name not in entries:
        hint = ""
        if medmnist_info() is None and name.endswith("mnist"):
            hint = f" (MedMNIST datasets need the medmnist package: {INSTALL_HINT})"
        raise DatasetError(f"unknown dataset {name!r}{hint}; known: {', '.join(entries)}")
    return entries[name]


def check_resolution(info: DatasetInfo, resolution: int) -> None:
    if isinstance(resolution, bool) or not isinstance(resolution, int):
        raise DatasetError(f"resolution must be a whole number of pixels, got {resolution!r}")
    if not MIN_RESOLUTION <= resolution <= MAX_RESOLUTION:
        native = ", ".join(map(str, info.native_resolutions))
        raise DatasetError(f"resolution {resolution} px is out of range for {info.name}: use "
                           f"{MIN_RESOLUTION}..{MAX_RESOLUTION} (native: {native}).")


def find_file(filename: str, dataset: str) -> Path | None:
    """A dataset file in the data root or the extra data folders (flat or in a sub-folder)."""
    for folder in data_search_path():
        for candidate in (folder / dataset / filename, folder / filename):
            if candidate.is_file():
                return candidate
    return None


def folder_path(info: DatasetInfo, path: str | None = None) -> Path:
    """The folder a folder dataset reads, resolved; FolderRefused (a DatasetError) for one
    outside the data root and the LAB_DATA_PATH folders (engines.datasets.folders)."""
    from engines.datasets.folders import resolve_folder

    return resolve_folder(path, info.name)


@dataclass(frozen=True)
class DatasetState:
    state: str  # ready | downloadable | offline | needs_folder | unsupported
    reason: str = ""
    download_bytes: int | None = None


def dataset_state(info: DatasetInfo, resolution: int | None = None, path: str | None = None) -> DatasetState:
    """What using this dataset at this resolution would take on this machine, now."""
    if info.unsupported:
        return DatasetState("unsupported", info.unsupported)
    if info.kind == "synthetic":
        return DatasetState("offline", "generated on this machine")
    if info.kind == "digits":
        if importlib.util.find_spec("sklearn") is None:
            return DatasetState("unsupported", "scikit-learn is not installed: pip install scikit-learn")
        return DatasetState("offline", "bundled with scikit-learn")
    if info.kind == "folder":
        try:
            folder = folder_path(info, path)
        except DatasetError as e:
            return DatasetState("needs_folder", str(e))
        if folder.is_dir() and any(p.is_dir() for p in folder.iterdir()):
            return DatasetState("ready", f"images in {folder}")
        how = (f"put it in {folder} or name one with the path option (CLI: --dataset-option path=FOLDER, "
               "inside the data folders)")
        if info.name == "folder":
            how = ("name it with the path option (CLI: --dataset-option path=FOLDER), a folder with one "
                   "sub-folder per class inside the data root or a LAB_DATA_PATH folder")
        return DatasetState("needs_folder", f"a local image folder is needed: {how}")
    source = source_resolution(info, resolution or info.default_resolution)
    if local_source(info, source) is not None:
        return DatasetState("ready", "files on this machine")
    files = info.files[source]
    sizes = [f.size for f in files]
    total = sum(sizes) if all(s is not None for s in sizes) else None
    host = files[0].url.split("/")[2]
    what = f"download {total / 1e6:.0f} MB from {host}" if total else f"download from {host} (size not published)"
    return DatasetState("downloadable", what, total)


# Usable now first (files here, or made here), then what a download makes usable, then
# what needs a folder of one's own, then what cannot be used: every list of datasets.
STATE_ORDER = ("ready", "offline", "downloadable", "needs_folder", "unsupported")


def ready_first(infos, resolution: int | None = None) -> list[DatasetInfo]:
    """The datasets in STATE_ORDER of their state here (at `resolution`, else each one's
    default), the catalog's order kept within a state: on a machine without a network
    the lists open on what will work."""
    infos = list(infos)
    rank = {info.name: STATE_ORDER.index(dataset_state(info, resolution).state) for info in infos}
    return sorted(infos, key=lambda info: rank[info.name])


def source_resolution(info: DatasetInfo, resolution: int, source: int | None = None) -> int:
    """The native size to read for a requested one: `source` when given (the `source`
    dataset option: e.g. the 28 px MedMNIST file upsampled to 64 px on a machine that has
    only that one), itself when native, otherwise the smallest native size at least as
    large (so resizing only shrinks), else the largest."""
    if source is not None:
        if source not in info.native_resolutions or isinstance(source, bool):
            raise DatasetError(f"source must be one of {info.name}'s native sizes "
                               f"({', '.join(map(str, info.native_resolutions))} px), got {source!r}")
        return source
    if resolution in info.native_resolutions:
        return resolution
    larger = [r for r in info.native_resolutions if r >= resolution]
    return min(larger) if larger else max(info.native_resolutions)


def local_source(info: DatasetInfo, resolution: int) -> dict[str, Path] | None:
    """Paths of files already here that hold the dataset at a native resolution, or None."""
    if info.kind == "idx":
        found = {f.filename: find_file(f.filename, info.name) for f in info.files[resolution]}
        if all(found.values()):
            return found
        if info.name == "fashion_mnist" and all((DEBIAN_FASHION_DIR / f).is_file() for f in IDX_FILES):
            return {f: DEBIAN_FASHION_DIR / f for f in IDX_FILES}
        if info.name == "mnist" and (npz := find_file("mnist.npz", info.name)):
            return {"mnist.npz": npz}  # the keras-style copy
        return None
    found = {f.filename: find_file(f.filename, info.name) for f in info.files[resolution]}
    return found if all(found.values()) else None
