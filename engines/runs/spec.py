"""RunSpec: what the user asked for, validated on creation; a job is one per framework.

A RunSpec names one comparison: a dataset at a resolution, an architecture, the
frameworks, the inference batch sizes, the training settings and the toggles. It expands
into jobs, one per (framework, repeat seed): `request.job(framework, seed)` is a RunSpec
for that one framework and seed with every per-framework toggle that does not apply to
it set to its neutral value, so a job holds exactly what its worker computes, and its
cache and training keys come from the job alone. The comparison a result belongs to
(`request.comparison_key()`) is recorded beside it by the store, never folded into its
key. Every toggle is a value from a closed list: nothing here is ever passed to a shell or
into XLA_FLAGS as free text.
"""
from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
from dataclasses import dataclass, field

from engines.datasets import MAX_RESOLUTION, MIN_RESOLUTION, OFFLINE_DEFAULT, DatasetError, get_info
from engines.datasets.options import DATASET_OPTIONS, check_options  # noqa: F401 - DATASET_OPTIONS: the pages read it here
from engines.frameworks import FRAMEWORKS, OPTIONS, default_frameworks, owners
from engines.training.config import OPTIMIZERS, PIPELINES, PRECISIONS, SCHEDULES, XLA_AUTOTUNE_LEVELS, TrainConfig

SCHEMA = 1  # the result schema (DESIGN.md); part of every cache key
MAX_BATCH = 65536
MAX_EPOCHS = 1000
MAX_REPEATS = 100
MAX_SEED = 2**31 - 1  # repeat seeds run seed..seed+repeats-1, all within it
# What a request has and a comparison does not: the comparison is the same for every
# framework and every repeat seed.
REQUEST_ONLY_FIELDS = ("frameworks", "seed", "repeats")
# Fields that only change how the trained model is timed, not how it is trained.
INFERENCE_ONLY_FIELDS = ("batch_sizes", "warmup_iters", "measure_iters", "inference_only")
# Whether a job may run at all, not what it computes: never part of a key or a comparison
# (a result computed without --require-gpu is the same result).
POLICY_FIELDS = ("require_gpu",)
# Fields added after results were first cached: left out of the keys while at their
# default, so that results cached before a field existed keep their keys.
LATER_FIELDS = {"pretrained": None}


class SpecError(ValueError):
    """One or more fields of a RunSpec are invalid; `problems` maps field -> message."""

    def __init__(self, problems: dict[str, str]):
        self.problems = problems
        super().__init__("; ".join(f"{k}: {v}" for k, v in problems.items()))


@dataclass(frozen=True)
class RunSpec:
    """A comparison request. Its defaults ARE the lab's default comparison: the home
    page's one-click run is `RunSpec(frameworks=<the installed defaults>)`, the Run page
    opens on them, and a comparison's label names what differs from them
    (differences_from_default). Scikit-learn digits (offline, always there), the small
    fan_arch1 CNN, Adam at the architecture's learning rate, three epochs: enough for the
    curves to be lines and for digits to reach ~98%, in seconds to minutes on a CPU."""

    dataset: str = OFFLINE_DEFAULT
    resolution: int | None = None  # None: the dataset's smallest native size
    architecture: str = "fan_arch1"
    frameworks: tuple[str, ...] = field(default_factory=default_frameworks)
    batch_sizes: tuple[int, ...] = (1, 32, 128)  # inference timing
    epochs: int = 3
    train_batch_size: int | None = None  # None: the architecture's paper default
    repeats: int = 1
    seed: int = 0
    optimizer: str = "adam"
    learning_rate: float | None = None  # None: the architecture's paper default
    lr_schedule: str = "constant"
    weight_decay: float = 0.0
    precision: str = "default"
    # torch.compile / TF jit_compile (XLA) / jax.jit: True in every framework, False in
    # none, None (the default) each framework's own setting, FrameworkInfo.compile_default,
    # the one that finishes the default comparison sooner on a CPU (measured: see the
    # framework table). A job always holds True or False (RunSpec.job), so a result says
    # what ran, and the comparison's pages say it beside the figures.
    compile: bool | None = None
    xla_autotune: int | None = None  # None: XLA's own default level
    cudnn_benchmark: bool = False
    channels_last: bool = False
    pipeline: str = "idiomatic"
    class_weights: bool = False
    same_init: bool = True
    # None: on where the architecture has BatchNorm and something is trained
    # (engines.training.batchnorm says why and how).
    recompute_batchnorm: bool | None = None
    # Start every framework from pretrained weights: "torchvision" (its published file for
    # the architecture) or a weights file inside the data folders (engines.pretrained).
    pretrained: str | None = None
    inference_only: bool = False
    warmup_iters: int = 20
    measure_iters: int = 100
    dataset_options: tuple[tuple[str, object], ...] = field(default=())
    # Refuse (status "error") a framework that would compute on the CPU on a machine that
    # has a GPU, instead of mixing devices in one comparison (engines.devices).
    require_gpu: bool = False

    def __post_init__(self):
        _normalise(self)
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
        for name, value in architecture_defaults(self.architecture).items():
            if getattr(self, name) is None:
                object.__setattr__(self, name, value)
        problems = _check_training_split(self)
        if problems:
            raise SpecError(problems)
        if self.recompute_batchnorm is None:
            object.__setattr__(self, "recompute_batchnorm", not self.inference_only and self.has_batchnorm())

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

    # -- jobs, keys and the comparison -------------------------------------------------
    def repeat_seeds(self) -> list[int]:
        """Repeat r uses seed + r, the same in every framework within that repeat."""
        return [self.seed + r for r in range(self.repeats)]

    def tasks(self) -> list[tuple[str, int]]:
        """(framework, seed) for every worker run, in the order they run: repeat by
        repeat, so that the first full comparison is ready before the extra repeats."""
        return [(fw, seed) for seed in self.repeat_seeds() for fw in self.frameworks]

    def job(self, framework: str, seed: int | None = None) -> RunSpec:
        """What one worker computes: this request for one framework and one seed, with
        repeats=1 and every per-framework toggle that does not apply to `framework` at its
        neutral value (an XLA autotune level means nothing to PyTorch), and compile resolved
        to what that framework does (compiles)."""
        if framework not in self.frameworks:
            raise SpecError({"frameworks": f"{framework!r} is not among {', '.join(self.frameworks)}"})
        changes = {name: _NEUTRAL[name] for name in OPTIONS if name not in FRAMEWORKS[framework].options}
        changes.update(frameworks=(framework,), seed=self.seed if seed is None else seed, repeats=1,
                       compile=self.compiles(framework))
        if all(getattr(self, k) == v for k, v in changes.items()):
            return self  # already that job
        return self.replace(**changes)

    def compile_by_framework(self) -> dict[str, bool]:
        """framework -> whether its jobs compile (compiles), for every framework asked for."""
        return {fw: self.compiles(fw) for fw in self.frameworks}

    def compiles(self, framework: str) -> bool:
        """Whether `framework`'s jobs compile: the request's setting, or where it leaves
        compile to each framework (None), the framework's own (FrameworkInfo.compile_default)."""
        return FRAMEWORKS[framework].compile_default if self.compile is None else self.compile

    @property
    def framework(self) -> str:
        """The framework of a job (a spec with exactly one)."""
        if len(self.frameworks) != 1:
            raise SpecError({"frameworks": f"a job runs exactly one framework, got {list(self.frameworks)}"})
        return self.frameworks[0]

    def as_job(self) -> RunSpec:
        """This spec as the job it names: one framework, and only what applies to it."""
        return self.job(self.framework, self.seed)

    def job_key(self, fingerprint: str) -> str:
        """The cache key of a job's result: sha256 of the job, the framework's environment
        fingerprint (engines.machine.fingerprint_key) and the schema version (and, for a
        pretrained start, which weights file: see weights_identity)."""
        return _hash({"spec": _computed(self.as_job().to_dict()), "env": fingerprint, "schema": SCHEMA,
                      **self.weights_identity()})

    def train_key(self, fingerprint: str) -> str:
        """Key of the training part of a job: two jobs that differ only in inference
        settings train the same weights, so the second one loads the first one's weights."""
        train = {k: v for k, v in _computed(self.as_job().to_dict()).items() if k not in INFERENCE_ONLY_FIELDS}
        return _hash({"train": train, "env": fingerprint, "schema": SCHEMA, **self.weights_identity()})

    def weights_identity(self) -> dict:
        """Which pretrained weights the job starts from, beyond their name in the spec: a
        local file's SHA-256, so that a file changed in place is not served from the cache."""
        if self.pretrained is None:
            return {}
        from engines.pretrained import identity

        return identity(self.pretrained, self.architecture)

    def comparison_key(self) -> str:
        """The side-by-side comparison this request asks for: every framework and every
        repeat seed of it (see comparison_key)."""
        return comparison_key(self.to_dict())

    def has_batchnorm(self) -> bool:
        """Whether the architecture, at this input, has BatchNorm layers."""
        from engines.training.batchnorm import has_batchnorm

        resolution = self.resolution or get_info(self.dataset).default_resolution
        return has_batchnorm(self.architecture, resolution, self.channels())

    def channels(self) -> int:
        return int(dict(self.dataset_options).get("channels", get_info(self.dataset).channels))

    def train_config(self) -> TrainConfig:
        """The engines' TrainConfig of a job: its training fields, with the architecture's
        paper defaults already resolved into the spec. An inference-only job has no epochs;
        its config keeps one, as a TrainConfig must (nothing trains)."""
        return TrainConfig(
            architecture=self.architecture, epochs=max(1, self.epochs), batch_size=self.train_batch_size,
            optimizer=self.optimizer, learning_rate=float(self.learning_rate),
            weight_decay=float(self.weight_decay), lr_schedule=self.lr_schedule,
            class_weights=self.class_weights, seed=self.seed, precision=self.precision,
            compile=self.compiles(self.framework),
            pipeline=self.pipeline, cudnn_benchmark=self.cudnn_benchmark, channels_last=self.channels_last,
            same_init=self.same_init, pretrained=self.pretrained,
            recompute_batchnorm=bool(self.recompute_batchnorm) and not self.inference_only)


# The neutral value of every per-framework toggle: the field's default (off, or unset).
_NEUTRAL = {f.name: f.default for f in dataclasses.fields(RunSpec) if f.name in OPTIONS}
assert set(_NEUTRAL) == set(OPTIONS), f"per-framework toggles without a RunSpec field: {set(OPTIONS) - set(_NEUTRAL)}"


def _computed(spec: dict) -> dict:
    """A spec's fields as the keys hash them: those that decide what its worker computes
    (its policy fields left out), LATER_FIELDS only where they differ from their default."""
    return {k: v for k, v in spec.items()
            if k not in POLICY_FIELDS and not (k in LATER_FIELDS and v == LATER_FIELDS[k])}


# Named in a comparison's label beside the differences (dataset, size, architecture,
# frameworks, seeds), or not a setting of the comparison at all.
_LABELLED_APART = ("dataset", "resolution", "architecture", "frameworks", "repeats", "dataset_options")


def default_request() -> RunSpec:
    """The default comparison: the home page's one-click request and `python -m engines
    demo`'s, one definition for both (RunSpec's defaults, with the default frameworks
    that are installed here; all of them when none is, so the page can say why)."""
    from engines.frameworks import installed

    runnable = tuple(fw for fw in default_frameworks() if installed(fw))
    return RunSpec(frameworks=runnable or default_frameworks())


def differences_from_default(spec: dict) -> dict:
    """The settings of a request (a RunSpec dict, e.g. a stored comparison's) that differ
    from RunSpec's defaults for the same data and architecture (the default comparison,
    with the architecture's resolved learning rate and batch size): what a comparison's
    label must name. Empty for the default comparison, or a spec this version cannot read."""
    try:
        default = RunSpec(dataset=spec["dataset"], resolution=spec.get("resolution"),
                          architecture=spec["architecture"], frameworks=tuple(spec.get("frameworks") or ())
                          or default_frameworks(), dataset_options=spec.get("dataset_options") or {}).to_dict()
    except (SpecError, KeyError, TypeError):
        return {}
    return {k: spec[k] for k, v in default.items()
            if k not in _LABELLED_APART and k in spec and spec[k] != v
            and not (isinstance(v, float) and isinstance(spec[k], (int, float)) and float(spec[k]) == v)}


def compile_text(compile_: bool | None, by_framework: dict[str, bool]) -> str:
    """A comparison's compile setting in words, for its one-line summaries: "compile on",
    "compile off", or, where the request left compile to each framework (None), which of
    them compiled: `by_framework` (framework -> bool) from the results where there are some
    (what ran), else from RunSpec.compile_by_framework."""
    if compile_ is not None:
        return "compile on" if compile_ else "compile off"
    from engines.frameworks import label

    parts = [f"{word} in {', '.join(label(fw) for fw, c in by_framework.items() if c is value)}"
             for word, value in (("on", True), ("off", False)) if value in by_framework.values()]
    return f"compile per framework ({'; '.join(parts)})" if parts else "compile per framework"


def _hash(obj) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True).encode()).hexdigest()[:32]


def comparison_key(spec: dict) -> str:
    """The results that form one side-by-side comparison: a request (a RunSpec's dict, or
    a stored result's spec) minus its frameworks, seed and repeats."""
    rest = {k: v for k, v in _computed(spec).items() if k not in REQUEST_ONLY_FIELDS and k != "framework"}
    return _hash({"comparison": rest, "schema": SCHEMA})


@functools.cache
def environment_fingerprint(framework: str) -> str:
    """A short hash of what makes `framework`'s results depend on the machine (GPU model,
    driver, CUDA, CPU, Python, that framework's versions and numpy's):
    engines.machine.fingerprint_key. Results cached under one fingerprint are never served
    on a machine with another. Cached per process: none of it changes under a running one."""
    from engines.machine import fingerprint_key

    return fingerprint_key(framework=framework)


def _normalise(s: RunSpec) -> None:
    """Containers in one form, so that equal requests compare and hash equal; a value of
    the wrong shape (a mapping for the frameworks, a list for the options) is refused by
    its field's name, never left to fail later."""
    problems = {}
    frameworks = _as_tuple(s.frameworks)
    if all(isinstance(f, str) for f in frameworks):
        object.__setattr__(s, "frameworks", tuple(dict.fromkeys(frameworks)))
    else:
        problems["frameworks"] = f"must be framework names, got {s.frameworks!r}"
    sizes = _as_tuple(s.batch_sizes)
    if all(_is_int(b) for b in sizes):
        sizes = tuple(sorted(set(sizes)))  # increasing: JAX's peak memory cannot be reset
    object.__setattr__(s, "batch_sizes", sizes)
    options = s.dataset_options
    if isinstance(options, dict):
        options = list(options.items())
    try:
        pairs = [tuple(kv) for kv in options]
        if not all(len(kv) == 2 and isinstance(kv[0], str) for kv in pairs):
            raise ValueError
        hash(tuple(pairs))
    except (TypeError, ValueError):
        problems["dataset_options"] = f"must be a mapping of option names to values, got {s.dataset_options!r}"
        pairs = []
    object.__setattr__(s, "dataset_options", tuple(sorted(pairs)) if not problems.get("dataset_options")
                       else ())
    unhashable = [f.name for f in dataclasses.fields(s) if not _hashable(getattr(s, f.name))]
    for name in unhashable:
        problems.setdefault(name, f"must be a single value, got {getattr(s, name)!r}")
    if problems:
        raise SpecError(problems)


def _hashable(value) -> bool:
    try:
        hash(value)
    except TypeError:
        return False
    return True


def _as_tuple(v):
    if isinstance(v, str):
        return tuple(x.strip() for x in v.split(",") if x.strip())
    if isinstance(v, (list, tuple)):
        return tuple(v)
    return (v,)


def architecture_defaults(architecture: str) -> dict:
    """What an unset train_batch_size and learning_rate become: the architecture's paper
    values (the Run page shows them, and follows them when the architecture changes)."""
    return {"train_batch_size": int(_arch_default(architecture, "batch_size", 32)),
            "learning_rate": float(_arch_default(architecture, "learning_rate", 1e-3))}


def _arch_default(architecture: str, key: str, fallback):
    import models

    return (models.get_architecture(architecture).defaults or {}).get(key, fallback)


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _validate(s: RunSpec) -> dict[str, str]:
    """field -> what is wrong with it, for every bad field at once (an empty dict: valid)."""
    p: dict[str, str] = {}
    _check_input(s, p)
    _check_frameworks(s, p)
    _check_numbers(s, p)
    _check_choices(s, p)
    _check_pretrained(s, p)
    return p


def _check_pretrained(s: RunSpec, p: dict) -> None:
    """Pretrained weights: for an architecture torchvision publishes weights for, from
    torchvision or a file that is there inside the data folders, and shared by every
    framework (so not with each framework's own initialization)."""
    if s.pretrained is None:
        return
    from engines import pretrained

    if not isinstance(s.pretrained, str) or not s.pretrained.strip():
        p["pretrained"] = f"must be '{pretrained.TORCHVISION}' or a weights file's path, got {s.pretrained!r}"
        return
    from models.pretrained import TORCHVISION

    if s.architecture not in TORCHVISION:
        if "architecture" not in p:
            p["pretrained"] = (f"there are pretrained weights for {', '.join(TORCHVISION)}, "
                               f"not for {s.architecture}")
        return
    if s.pretrained != pretrained.TORCHVISION:
        try:
            pretrained.local_file(s.pretrained)
        except pretrained.PretrainedError as e:
            p["pretrained"] = str(e)
    if s.same_init is not True and "same_init" not in p:
        p["same_init"] = "pretrained weights are the same in every framework: same_init must stay on"


def _check_input(s: RunSpec, p: dict) -> None:
    """The dataset, its options, the resolution, and whether the architecture takes it."""
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
    options = dict(s.dataset_options)
    if "dataset" not in p:  # an unknown dataset already says all there is
        resolution = None if "resolution" in p else s.resolution or (info.default_resolution if info else None)
        p.update(check_options(s.dataset, options, resolution))

    import models

    try:
        arch = models.get_architecture(s.architecture)
    except (KeyError, ValueError) as e:
        p["architecture"] = str(e).strip("'\"")
        arch = None
    if arch is not None and info is not None and not {"resolution", "dataset", "dataset_options.channels"} & set(p):
        resolution = s.resolution or info.default_resolution
        channels = options.get("channels", info.channels)
        try:
            models.check_input(s.architecture, resolution=resolution, channels=channels)
        except ValueError as e:
            p["resolution"] = str(e)


def _check_training_split(s: RunSpec) -> dict[str, str]:
    """A training batch larger than the training split (when its size is known before
    loading: the catalog's, or the synthetic set's option) is refused now, not at run time."""
    if s.inference_only:
        return {}
    if s.dataset == "synthetic":
        from engines.datasets.synthetic import DEFAULT_OPTIONS

        n, where = dict(s.dataset_options).get("train", DEFAULT_OPTIONS["train"]), "dataset_options.train"
    else:
        n, where = get_info(s.dataset).splits.get("train"), "dataset"
    if n is None or s.train_batch_size <= n:
        return {}
    return {"train_batch_size": f"{s.train_batch_size} is larger than the training split of {s.dataset} ({n} images; "
                                f"{where}): use a training batch of at most {n}"}


def _check_frameworks(s: RunSpec, p: dict) -> None:
    """Known frameworks, and no per-framework toggle without a framework it applies to."""
    if not s.frameworks:
        p["frameworks"] = "choose at least one framework"
    unknown = [f for f in s.frameworks if f not in FRAMEWORKS]
    if unknown:
        p["frameworks"] = f"unknown {', '.join(map(str, unknown))}; choose from {', '.join(FRAMEWORKS)}"
    if s.xla_autotune is not None and (not _is_int(s.xla_autotune) or s.xla_autotune not in XLA_AUTOTUNE_LEVELS):
        p["xla_autotune"] = (f"must be a level {XLA_AUTOTUNE_LEVELS[0]}..{XLA_AUTOTUNE_LEVELS[-1]} "
                             f"(or unset for XLA's default), got {s.xla_autotune!r}")
    for name in ("cudnn_benchmark", "channels_last"):
        if not isinstance(getattr(s, name), bool):
            p[name] = f"must be true or false, got {getattr(s, name)!r}"
    for name in OPTIONS:
        if name in p or getattr(s, name) == _NEUTRAL[name] or not s.frameworks:
            continue
        applies_to = owners(name)
        if not set(applies_to) & set(s.frameworks):
            p[name] = (f"applies to {applies_to[0]} only, which is not chosen" if len(applies_to) == 1 else
                       f"applies to {', '.join(applies_to)}, none of which is chosen")


def _check_numbers(s: RunSpec, p: dict) -> None:
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
    whole("seed", 0, MAX_SEED)
    if "seed" not in p and "repeats" not in p and s.seed + s.repeats - 1 > MAX_SEED:
        p["seed"] = (f"seed {s.seed} with {s.repeats} repeats runs seeds up to {s.seed + s.repeats - 1}, "
                     f"past the largest seed {MAX_SEED}: use a seed of at most {MAX_SEED - s.repeats + 1}")
    whole("warmup_iters", 0, 10000)
    whole("measure_iters", 1, 100000)
    if s.train_batch_size is not None:
        whole("train_batch_size", 1, MAX_BATCH)
    lr = s.learning_rate
    if lr is not None and (not isinstance(lr, (int, float)) or isinstance(lr, bool) or not 0 < lr < 10):
        p["learning_rate"] = f"must be a number in (0, 10), got {s.learning_rate!r}"
    if not isinstance(s.weight_decay, (int, float)) or isinstance(s.weight_decay, bool) or not 0 <= s.weight_decay < 1:
        p["weight_decay"] = f"must be a number in [0, 1), got {s.weight_decay!r}"
    elif s.weight_decay and s.optimizer == "adam":
        p["weight_decay"] = "Adam's weight decay means different things in Keras and PyTorch: use optimizer adamw"


def _check_choices(s: RunSpec, p: dict) -> None:
    """Values from the closed lists of engines.training.config, and the switches."""
    for name, allowed in (("precision", PRECISIONS), ("pipeline", PIPELINES), ("optimizer", OPTIMIZERS),
                          ("lr_schedule", SCHEDULES)):
        if getattr(s, name) not in allowed:
            p[name] = f"must be one of {', '.join(allowed)}; got {getattr(s, name)!r}"
    for name in ("class_weights", "same_init", "inference_only", "require_gpu"):
        if not isinstance(getattr(s, name), bool):
            p[name] = f"must be true or false, got {getattr(s, name)!r}"
    if s.compile is not None and not isinstance(s.compile, bool):
        p["compile"] = f"must be true, false or unset (each framework's own setting), got {s.compile!r}"
    _check_batchnorm(s, p)


def _check_batchnorm(s: RunSpec, p: dict) -> None:
    """recompute_batchnorm: unset, or true/false; true needs BatchNorm layers and training."""
    v = s.recompute_batchnorm
    if v is None or v is False:
        return
    if v is not True:
        p["recompute_batchnorm"] = f"must be true, false or unset (on where the architecture has BatchNorm), got {v!r}"
    elif s.inference_only:
        p["recompute_batchnorm"] = "nothing is trained in an inference-only run: leave it unset or false"
    elif not p.keys() & {"dataset", "architecture", "resolution", "dataset_options"} and not s.has_batchnorm():
        p["recompute_batchnorm"] = f"{s.architecture} has no BatchNorm layer: leave it unset or false"
