"""The options a dataset takes, each typed and ranged: one definition that the run spec
checks when it is created (so a bad value is refused before anything is queued, under
its own name), that the CLI's help and the app's form read, and that the loaders trust.

    synthetic                      classes, channels, train, val, test
    folder                         path, max_per_class, channels
    breast_histology_idc, imagenet100   path, max_per_class
    every dataset read from native files   source (the native size to read and resize from)
"""
from __future__ import annotations

from dataclasses import dataclass

from engines.datasets.base import DatasetError
from engines.datasets.synthetic import DEFAULT_OPTIONS as SYNTHETIC_DEFAULTS

# A synthetic set is drawn in memory, in the worker, as float32 before it becomes uint8.
MAX_SYNTHETIC_BYTES = 4 * 2**30


@dataclass(frozen=True)
class Option:
    name: str
    doc: str
    minimum: int | None = None  # whole numbers
    maximum: int | None = None
    choices: tuple | None = None  # a closed list
    folder: bool = False  # a folder inside the data folders
    native_size: bool = False  # one of the dataset's native sizes


    def problem(self, value, dataset: str) -> str | None:
        """What is wrong with `value`, or None."""
        if self.native_size:
            from engines.datasets.catalog import get_info, source_resolution

            info = get_info(dataset)
            try:
                source_resolution(info, info.default_resolution, value)
            except DatasetError as e:
                return str(e)
            return None
        if self.folder:
            from engines.datasets.folders import resolve_folder

            try:
                resolve_folder(value, dataset)
            except DatasetError as e:
                return str(e)
            return None
        if self.choices is not None:
            if isinstance(value, bool) or value not in self.choices:
                return f"must be one of {', '.join(map(str, self.choices))} ({self.doc}), got {value!r}"
            return None
        if isinstance(value, bool) or not isinstance(value, int) or not self.minimum <= value <= self.maximum:
            return f"must be a whole number {self.minimum}..{self.maximum:,} ({self.doc}), got {value!r}"
        return None


_SPLIT_MAX = 1_000_000
OPTIONS = {o.name: o for o in (
    Option("classes", "how many classes the synthetic set draws", 2, 10000),
    Option("channels", "1 grey, 3 colour", choices=(1, 3)),
    Option("train", "images in the training split", 1, _SPLIT_MAX),
    Option("val", "images in the validation split", 1, _SPLIT_MAX),
    Option("test", "images in the test split", 1, _SPLIT_MAX),
    Option("path", "the image folder", folder=True),
    Option("max_per_class", "at most this many images of each class", 1, 10_000_000),
    # The 28 px MedMNIST file upsampled to 64 px, say, where the 64 px one is not here: an
    # option, so part of the run's key, never a silent fallback.
    Option("source", "the native size to read and resize from", native_size=True),
)}
SOURCE = "source"

DATASET_OPTIONS = {"synthetic": ("classes", "channels", "train", "val", "test"),
                   "folder": ("path", "max_per_class", "channels"),
                   "breast_histology_idc": ("path", "max_per_class"),
                   "imagenet100": ("path", "max_per_class")}


def allowed_options(dataset: str) -> tuple[str, ...]:
    """The options `dataset` takes: its own, and `source` where it is read from native
    files (an unknown dataset: none)."""
    from engines.datasets.catalog import get_info

    try:
        info = get_info(dataset)
    except DatasetError:
        return ()
    return DATASET_OPTIONS.get(dataset, ()) + ((SOURCE,) if info.files else ())


def check_options(dataset: str, options: dict, resolution: int | None) -> dict[str, str]:
    """field -> problem for every option of `dataset` in `options` (keys
    "dataset_options.<name>"); an empty dict when all are good."""
    allowed = allowed_options(dataset)
    problems: dict[str, str] = {}
    unknown = sorted(str(k) for k in options if k not in allowed)
    if unknown:
        problems["dataset_options"] = (f"{dataset} takes {', '.join(allowed) or 'no options'}; "
                                       f"got {', '.join(unknown)}")
    for name, value in options.items():
        if name in allowed and (why := OPTIONS[name].problem(value, dataset)):
            problems[f"dataset_options.{name}"] = why
    if dataset == "synthetic" and not problems and isinstance(resolution, int):
        merged = {**SYNTHETIC_DEFAULTS, **options}
        images = merged["train"] + merged["val"] + merged["test"]
        size = images * resolution * resolution * merged["channels"]
        if size * 4 > MAX_SYNTHETIC_BYTES:  # drawn as float32
            problems["dataset_options.train"] = (
                f"{images:,} images of {resolution}x{resolution} px take {size * 4 / 2**30:.1f} GiB while they "
                f"are drawn (the limit is {MAX_SYNTHETIC_BYTES / 2**30:.0f} GiB): fewer images or a smaller size")
    return problems
