"""RunSpec: what the user asked for, validated on creation, with a stable key.

A RunSpec names one comparison: a dataset at a resolution, an architecture, the
frameworks, the inference batch sizes, the training settings and the toggles. It expands
into jobs, one per (framework, repeat), each of which runs in its own worker process and
is cached under its own key. Every toggle is a value from a closed list: nothing here is
ever passed to a shell or into XLA_FLAGS as free text.
"""
from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
from dataclasses import dataclass, field

from engines.datasets import MAX_RESOLUTION, MIN_RESOLUTION, DatasetError, get_info

SCHEMA = 1  # the result schema (DESIGN.md); part of every cache key
FRAMEWORKS = ("keras", "tensorflow", "pytorch", "jax")
XLA_FRAMEWORKS = ("keras", "tensorflow", "jax")
PRECISIONS = ("default", "fp32", "tf32", "bf16")
PIPELINES = ("idiomatic", "device")
OPTIMIZERS = ("adam", "adamw", "sgd")
SCHEDULES = ("constant", "cosine", "step")
MAX_BATCH = 65536
MAX_EPOCHS = 1000
MAX_REPEATS = 100
DATASET_OPTIONS = {"synthetic": {"channels", "classes", "train", "val", "test"},
                   "folder": {"path", "max_per_class", "channels"},
                   "breast_histology_idc": {"path", "max_per_class"},
                   "imagenet100": {"path", "max_per_class"}}


class SpecError(ValueError):
    """One or more fields of a RunSpec are invalid; `problems` maps field -> message."""

    def __init__(self, problems: dict[str, str]):
        self.problems = problems
        super().__init__("; ".join(f"{k}: {v}" for k, v in problems.items()))


@dataclass(frozen=True)
class RunSpec:
    dataset: str = "digits"
    resolution: int | None = None  # None: the dataset's smallest native size
    architecture: str = "fan_arch1"
    frameworks: tuple[str, ...] = ("keras", "pytorch", "jax")
    batch_sizes: tuple[int, ...] = (1, 32, 128)  # inference timing
    epochs: int = 1
    train_batch_size: int | None = None  # None: the architecture's paper default
    repeats: int = 1
    seed: int = 0
    optimizer: str = "adam"
    learning_rate: float | None = None  # None: the architecture's paper default
    lr_schedule: str = "constant"
    weight_decay: float = 0.0
    precision: str = "default"
    compile: bool = True
    xla_autotune: int | None = None  # None: XLA's own default level
    cudnn_benchmark: bool = False
    channels_last: bool = False
    pipeline: str = "idiomatic"
    class_weights: bool = False
    same_init: bool = True
    inference_only: bool = False
    warmup_iters: int = 20
    measure_iters: int = 100
    dataset_options: tuple[tuple[str, object], ...] = field(default=())

    def __post_init__(self):
        # Normalise containers so that equal requests compare and hash equal.
        object.__setattr__(self, "frameworks", tuple(dict.fromkeys(_as_tuple(self.frameworks))))
        sizes = _as_tuple(self.batch_sizes)
        if all(isinstance(b, int) and not isinstance(b, bool) for b in sizes):
            sizes = tuple(sorted(set(sizes)))  # increasing: JAX's peak memory cannot be reset
        object.__setattr__(self, "batch_sizes", sizes)
        options = self.dataset_options
        if isinstance(options, dict):
            options = tuple(sorted(options.items()))
        object.__setattr__(self, "dataset_options", tuple(tuple(kv) for kv in options))
        # 1 and 1.0 are the same learning rate; they must not give two cache keys.
        for name in ("learning_rate", "weight_decay"):
            v = getattr(self, name)
            if _is_int(v):
                object.__setattr__(self, name, float(v))
        problems = _validate(self)
        if problems:
            raise SpecError(problems)
        # Defaults resolved now, so that leaving a field out and writing its default give
        # the same key (and the same comparison) instead of computing the same thing twice.
        if self.resolution is None:
            object.__setattr__(self, "resolution", get_info(self.dataset).default_resolution)
        if self.train_batch_size is None:
            object.__setattr__(self, "train_batch_size", _arch_default(self.architecture, "batch_size", 32))
        if self.learning_rate is None:
            object.__setattr__(self, "learning_rate", float(_arch_default(self.architecture, "learning_rate", 1e-3)))

    # -- serialisation ---------------------------------------------------------------
    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["frameworks"] = list(self.frameworks)
        d["batch_sizes"] = list(self.batch_sizes)
        d["dataset_options"] = dict(self.dataset_options)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> RunSpec:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise SpecError({name: f"unknown field; known fields: {', '.join(sorted(known))}" for name in unknown})
        return cls(**d)

    def replace(self, **changes) -> RunSpec:
        return dataclasses.replace(self, **changes)

    # -- jobs and keys ---------------------------------------------------------------
    def repeat_seeds(self) -> list[int]:
        """Repeat r uses seed + r, the same in every framework within that repeat."""
        return [self.seed + r for r in range(self.repeats)]

    def job_spec(self, framework: str, seed: int) -> dict:
        """What one worker computes: this spec for one framework and one seed. The other
        frameworks and the repeat count do not change that result, so they are not in it.
        Toggles of other frameworks stay as requested (they name the comparison the result
        belongs to); `from_job_spec` reads such a dict back."""
        d = self.to_dict()
        d.update(frameworks=[framework], seed=seed, repeats=1)
        return d

    @classmethod
    def from_job_spec(cls, job_spec: dict) -> RunSpec:
        """The validated RunSpec of one job: toggles that belong to another framework of the
        request (cuDNN benchmark for JAX, an XLA autotune level for PyTorch) are set aside,
        as they do not apply to this job and would otherwise fail validation."""
        d = dict(job_spec)
        frameworks = _as_tuple(d.get("frameworks", ()))
        if len(frameworks) == 1:
            if frameworks[0] != "pytorch":
                d.update(cudnn_benchmark=False, channels_last=False)
            if frameworks[0] not in XLA_FRAMEWORKS:
                d.update(xla_autotune=None)
        return cls.from_dict(d)

    def job_key(self, framework: str, seed: int, fingerprint: str) -> str:
        return job_key(self.job_spec(framework, seed), fingerprint)

    def tasks(self) -> list[tuple[str, int]]:
        """(framework, seed) for every worker run, in the order they run: repeat by
        repeat, so that the first full comparison is ready before the extra repeats."""
        return [(fw, seed) for seed in self.repeat_seeds() for fw in self.frameworks]

    @property
    def resolved_train_batch_size(self) -> int:
        return self.train_batch_size or _arch_default(self.architecture, "batch_size", 32)

    @property
    def resolved_learning_rate(self) -> float:
        return self.learning_rate or _arch_default(self.architecture, "learning_rate", 1e-3)


def _hash(obj) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True).encode()).hexdigest()[:32]


def job_key(job_spec: dict, fingerprint: str) -> str:
    """sha256 of the job's spec, the environment fingerprint and the schema version."""
    return _hash({"spec": job_spec, "env": fingerprint, "schema": SCHEMA})


# Fields that only change how the trained model is timed, not how it is trained.
INFERENCE_ONLY_FIELDS = ("batch_sizes", "warmup_iters", "measure_iters", "inference_only")


def train_key(job_spec: dict, fingerprint: str) -> str:
    """Key of the training part of a job: two jobs that differ only in inference settings
    train the same weights, so the second one loads the first one's weights."""
    train = {k: v for k, v in job_spec.items() if k not in INFERENCE_ONLY_FIELDS}
    return _hash({"train": train, "env": fingerprint, "schema": SCHEMA})


def comparison_key(job_spec: dict) -> str:
    """The results that form one side-by-side comparison: the same job spec for every
    framework and every repeat seed. Accepts a job spec or a whole RunSpec.to_dict()."""
    rest = {k: v for k, v in job_spec.items() if k not in ("frameworks", "framework", "seed", "repeats")}
    return _hash({"comparison": rest, "schema": SCHEMA})


def spec_key(spec: RunSpec, fingerprint: str) -> str:
    """Key of a whole request (all frameworks and repeats): identical requests share a job."""
    return _hash({"request": spec.to_dict(), "env": fingerprint, "schema": SCHEMA})


@functools.lru_cache(maxsize=1)
def environment_fingerprint() -> str:
    """A short hash of what makes a result depend on the machine (GPU model, driver, CUDA,
    CPU, Python, framework versions): engines.machine.fingerprint_key, the same one
    the launcher uses. Results cached under one fingerprint are never served on a machine
    with another. Cached per process: none of it changes under a running process."""
    from engines.machine import fingerprint_key

    return fingerprint_key()


def _as_tuple(v):
    if isinstance(v, str):
        return tuple(x.strip() for x in v.split(",") if x.strip())
    if isinstance(v, (list, tuple)):
        return tuple(v)
    return (v,)


def _arch_default(architecture: str, key: str, fallback):
    import models

    return (models.get_architecture(architecture).defaults or {}).get(key, fallback)


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _validate(s: RunSpec) -> dict[str, str]:
    p: dict[str, str] = {}
    info = None
    try:
        info = get_info(s.dataset)
        if info.unsupported:
            p["dataset"] = f"{s.dataset} is not supported: {info.unsupported}"
    except DatasetError as e:
        p["dataset"] = str(e)
    if s.resolution is not None:
        if not _is_int(s.resolution):
            p["resolution"] = f"must be a whole number of pixels, got {s.resolution!r}"
        elif not MIN_RESOLUTION <= s.resolution <= MAX_RESOLUTION:
            p["resolution"] = f"{s.resolution} px is out of range {MIN_RESOLUTION}..{MAX_RESOLUTION}"
    allowed_options = DATASET_OPTIONS.get(s.dataset, set())
    bad_options = sorted(k for k, _ in s.dataset_options if k not in allowed_options)
    if bad_options and "dataset" not in p:  # an unknown dataset already says all there is
        p["dataset_options"] = (f"{s.dataset} takes {', '.join(sorted(allowed_options)) or 'no options'}; "
                                f"got {', '.join(bad_options)}")

    import models

    try:
        arch = models.get_architecture(s.architecture)
    except (KeyError, ValueError) as e:
        p["architecture"] = str(e).strip("'\"")
        arch = None
    if arch is not None and info is not None and "resolution" not in p and "dataset" not in p:
        resolution = s.resolution or info.default_resolution
        channels = dict(s.dataset_options).get("channels", info.channels)
        try:
            models.check_input(s.architecture, resolution=resolution, channels=channels)
        except ValueError as e:
            p["resolution"] = str(e)

    if not s.frameworks:
        p["frameworks"] = "choose at least one framework"
    unknown = [f for f in s.frameworks if f not in FRAMEWORKS]
    if unknown:
        p["frameworks"] = f"unknown {', '.join(map(str, unknown))}; choose from {', '.join(FRAMEWORKS)}"

    if not s.batch_sizes:
        p["batch_sizes"] = "give at least one inference batch size"
    elif not all(_is_int(b) for b in s.batch_sizes):
        p["batch_sizes"] = f"must be whole numbers, got {list(s.batch_sizes)}"
    elif min(s.batch_sizes) < 1 or max(s.batch_sizes) > MAX_BATCH:
        p["batch_sizes"] = f"each must be 1..{MAX_BATCH}, got {list(s.batch_sizes)}"

    def whole(name, lo, hi):
        v = getattr(s, name)
        if not _is_int(v) or not lo <= v <= hi:
            p[name] = f"must be a whole number {lo}..{hi}, got {v!r}"

    whole("epochs", 0 if s.inference_only else 1, MAX_EPOCHS)
    whole("repeats", 1, MAX_REPEATS)
    whole("seed", 0, 2**31 - 1)
    whole("warmup_iters", 0, 10000)
    whole("measure_iters", 1, 100000)
    if s.train_batch_size is not None:
        whole("train_batch_size", 1, MAX_BATCH)
    if s.learning_rate is not None and (not isinstance(s.learning_rate, (int, float)) or isinstance(s.learning_rate, bool)
                                        or not 0 < s.learning_rate < 10):
        p["learning_rate"] = f"must be a number in (0, 10), got {s.learning_rate!r}"
    if not isinstance(s.weight_decay, (int, float)) or isinstance(s.weight_decay, bool) or not 0 <= s.weight_decay < 1:
        p["weight_decay"] = f"must be a number in [0, 1), got {s.weight_decay!r}"
    elif s.weight_decay and s.optimizer == "adam":
        p["weight_decay"] = "Adam's weight decay means different things in Keras and PyTorch: use optimizer adamw"
    for name, allowed in (("precision", PRECISIONS), ("pipeline", PIPELINES), ("optimizer", OPTIMIZERS),
                          ("lr_schedule", SCHEDULES)):
        if getattr(s, name) not in allowed:
            p[name] = f"must be one of {', '.join(allowed)}; got {getattr(s, name)!r}"
    for name in ("compile", "cudnn_benchmark", "channels_last", "class_weights", "same_init", "inference_only"):
        if not isinstance(getattr(s, name), bool):
            p[name] = f"must be true or false, got {getattr(s, name)!r}"
    if s.xla_autotune is not None:
        if not _is_int(s.xla_autotune) or not 0 <= s.xla_autotune <= 4:
            p["xla_autotune"] = f"must be a level 0..4 (or unset for XLA's default), got {s.xla_autotune!r}"
        elif s.frameworks and not set(s.frameworks) & set(XLA_FRAMEWORKS):
            p["xla_autotune"] = "applies to XLA (jax, tensorflow, keras), none of which is chosen"
    pytorch_only = [n for n in ("cudnn_benchmark", "channels_last") if getattr(s, n) is True]
    if pytorch_only and s.frameworks and "pytorch" not in s.frameworks:
        for n in pytorch_only:
            p[n] = "applies to pytorch only, which is not chosen"
    return p
