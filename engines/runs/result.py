"""The result of one job, as types: RunResult and its parts, with to_dict()/from_dict().

The JSON is schema 1 of DESIGN.md, a contract with users' scripts: every field name it
lists is written (null when not measured, never 0), and the fields the lab adds beside
them (notes, CPU use, the nested energy object, the memory breakdown, ...) keep their
names. Each part keeps the keys it does not know in `extra`, so an entry written by a
later version of the lab survives a round trip through this one.

Which fields are written how is said once, on the field:
  `always` - schema 1's own fields: written even when null;
  `optional` - the lab's additions: left out while null (as the worker leaves them out
             of a failed point, say);
  Memory is flattened into its parent's dict (peak_memory_bytes and, once a tracker
  measured it, where the figure came from and the other readings).

A failed or empty result has one constructor, RunResult.failed, and a failed inference
point one, InferencePoint.failed.
"""
from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, field
from typing import Any, ClassVar

SCHEMA = 1
RESULT_STATUSES = ("ok", "oom", "crashed", "timed_out", "error", "cancelled")
CACHEABLE_STATUSES = ("ok", "oom")  # a failure is shown once, then tried again
POINT_STATUSES = ("ok", "oom", "error")


class ResultError(ValueError):
    """A result (or a part of one) is not schema 1; the message names the field."""


def always(default=None, **kw):
    return field(default=default, metadata={"always": True, **kw})


def optional(default=None, **kw):
    return field(default=default, metadata={"always": False, **kw})


def _listed(factory=list, **kw):
    return field(default_factory=factory, metadata={"always": True, **kw})


class Part:
    """to_dict/from_dict from the fields' metadata: `key` (the JSON name when it differs
    from the field's), `part` (a nested Part type), `many` (a list of them), `flatten`
    (the part's keys sit in this dict), `always`/optional (see the module doc)."""

    extra: dict
    _where: ClassVar[str] = ""

    def to_dict(self) -> dict:
        out: dict[str, Any] = {}
        for f in dataclasses.fields(self):
            if f.name == "extra":
                continue
            value = getattr(self, f.name)
            if f.metadata.get("flatten"):
                out.update(value.to_dict())
                continue
            if value is None and not f.metadata.get("always"):
                continue
            if isinstance(value, Part):
                value = value.to_dict()
            elif f.metadata.get("many") and value is not None:
                value = [v.to_dict() for v in value]
            out[f.metadata.get("key", f.name)] = value
        out.update(self.extra)
        return out

    @classmethod
    def from_dict(cls, d, where: str | None = None):
        where = where or cls._where or cls.__name__
        if not isinstance(d, dict):
            raise ResultError(f"{where} must be an object, got {type(d).__name__}")
        rest = dict(d)
        kwargs: dict[str, Any] = {}
        for f in dataclasses.fields(cls):
            if f.name == "extra":
                continue
            part = f.metadata.get("part")
            if f.metadata.get("flatten"):
                kwargs[f.name] = part.from_dict({k: rest.pop(k) for k in part.json_keys() if k in rest}, where)
                continue
            key = f.metadata.get("key", f.name)
            if key not in rest:
                continue
            value = rest.pop(key)
            if part is not None and value is not None:
                if f.metadata.get("many"):
                    if not isinstance(value, list):
                        raise ResultError(f"{where}.{key} must be a list, got {type(value).__name__}")
                    value = [part.from_dict(v, f"{where}.{key}[{i}]") for i, v in enumerate(value)]
                else:
                    value = part.from_dict(value, f"{where}.{key}")
            kwargs[f.name] = value
        return cls(**kwargs, extra=rest)

    @classmethod
    def json_keys(cls) -> list[str]:
        return [f.metadata.get("key", f.name) for f in dataclasses.fields(cls) if f.name != "extra"]


# -- the small parts ---------------------------------------------------------------------
@dataclass
class Latency(Part):
    """Per-call latency percentiles in milliseconds (trackers.timing.latency_stats)."""

    p50: float | None = always()
    p95: float | None = always()
    p99: float | None = always()
    mean: float | None = always()
    std: float | None = always()
    p5: float | None = optional()  # results written before it was measured have none
    extra: dict = field(default_factory=dict)


@dataclass
class Memory:
    """Three figures answering different questions (trackers.memory), flattened into the
    train object and each inference point. `peak_memory_bytes` is schema 1's headline:
    the allocator peak on a GPU, the process peak RSS on the CPU."""

    peak_memory_bytes: int | None = None
    memory_source: str | None = None
    allocator_peak_bytes: int | None = None
    nvml_process_memory_bytes: int | None = None
    peak_rss_bytes: int | None = None

    def to_dict(self) -> dict:
        if self.memory_source is None:  # nothing measured it: the headline only (null)
            return {"peak_memory_bytes": self.peak_memory_bytes}
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict, where: str = "memory") -> Memory:
        return cls(**{k: d.get(k) for k in cls.json_keys()})

    @classmethod
    def json_keys(cls) -> list[str]:
        return [f.name for f in dataclasses.fields(cls)]


@dataclass
class Energy(Part):
    """NVML energy over a window (trackers.energy): every figure null when not measured,
    with the note saying why. Its headline copies are train.energy_j and each point's
    energy_j_per_1000_images."""

    _where = "energy"
    energy_j: float | None = always()
    mean_w: float | None = always()
    j_per_1000_images: float | None = always()
    j_per_epoch: float | None = always()
    window_s: float | None = always()
    method: str | None = always()
    note: str | None = always()
    extra: dict = field(default_factory=dict)


@dataclass
class Epoch(Part):
    epoch: int | None = always()
    loss: float | None = always()
    accuracy: float | None = always()
    val_loss: float | None = always()
    val_accuracy: float | None = always()
    time_s: float | None = always()
    extra: dict = field(default_factory=dict)


@dataclass
class BatchNormPass(Part):
    """train.batchnorm: the BatchNorm statistics recomputed over the training split after
    training (engines.training.batchnorm), and the validation figures before and after."""

    _where = "train.batchnorm"
    recomputed: bool = always(True)
    rule: str | None = always()
    layers: int | None = always()
    images: int | None = always()
    batches: int | None = always()
    time_s: float | None = always()
    val_loss_before: float | None = always()
    val_accuracy_before: float | None = always()
    val_loss_after: float | None = always()
    val_accuracy_after: float | None = always()
    extra: dict = field(default_factory=dict)


@dataclass
class Train(Part):
    """The "train" object: the engine's history and clock, plus what the trackers saw."""

    _where = "train"
    epochs: list[Epoch] = _listed(part=Epoch, many=True)
    compile_time_s: float | None = always()
    total_time_s: float | None = always()
    images_per_s: float | None = always()
    energy_j: float | None = always()
    memory: Memory = field(default_factory=Memory, metadata={"flatten": True, "part": Memory})
    input_pipeline: str | None = always()
    steps_per_epoch: int | None = optional()
    first_step_losses: list[float] | None = optional()
    notes: list[str] | None = optional()
    energy: Energy | None = optional(part=Energy)
    cpu_cores_used: float | None = optional()
    other_cpu_cores: float | None = optional()  # other processes' CPU use in the window (trackers.cpu)
    noisy: bool | None = optional()  # other work held more than the set share of the cores
    batchnorm: BatchNormPass | None = optional(part=BatchNormPass)
    extra: dict = field(default_factory=dict)

    def set_energy(self, energy: Energy) -> None:
        self.energy, self.energy_j = energy, energy.energy_j


@dataclass
class ClassMetrics(Part):
    class_: str | None = always(key="class")
    precision: float | None = always()
    recall: float | None = always()
    f1: float | None = always()
    support: int | None = always()
    extra: dict = field(default_factory=dict)


@dataclass
class Averages(Part):
    precision: float | None = always()
    recall: float | None = always()
    f1: float | None = always()
    extra: dict = field(default_factory=dict)


@dataclass
class Evaluation(Part):
    """The "evaluation" object: metrics from the test split's probabilities."""

    _where = "evaluation"
    accuracy: float | None = always()
    auc: float | None = always()
    per_class: list[ClassMetrics] | None = always(part=ClassMetrics, many=True)
    macro: Averages | None = always(part=Averages)
    weighted: Averages | None = always(part=Averages)
    confusion_matrix: list[list[int]] | None = always()
    test_inference_time_s: float | None = always()
    extra: dict = field(default_factory=dict)


@dataclass
class InferencePoint(Part):
    """One batch size of the "inference" list; an out-of-memory size is a data point."""

    batch_size: int | None = always()
    status: str = always("ok")
    message: str | None = always()
    latency_ms: Latency | None = always(part=Latency)
    throughput_images_per_s: float | None = always()
    first_call_s: float | None = always()
    memory: Memory = field(default_factory=Memory, metadata={"flatten": True, "part": Memory})
    energy_j_per_1000_images: float | None = always()
    energy: Energy | None = optional(part=Energy)
    cpu_cores_used: float | None = optional()
    other_cpu_cores: float | None = optional()
    noisy: bool | None = optional()
    warmup_iters: int | None = optional()
    measured_iters: int | None = optional()
    window_s: float | None = optional()
    notes: list[str] | None = optional()
    extra: dict = field(default_factory=dict)

    @classmethod
    def failed(cls, batch_size: int, status: str, message: str) -> InferencePoint:
        """A size that did not give figures (out of memory, an error, not run)."""
        return cls(batch_size=batch_size, status=status, message=message)


@dataclass
class Environment(Part):
    """What the framework computed on (device: engines.devices' label, null when no engine
    started), the CPU threads every engine used, whether any timing was noisy, and the
    machine's fingerprint."""

    _where = "environment"
    device: str | None = always()
    cpu_threads: int | None = always()  # engines.threads: one count for every engine
    noisy: bool | None = always()  # any measured window of this result (trackers.cpu.any_noisy)
    gpu: str | None = always()
    driver: str | None = always()
    cuda: str | None = always()
    cpu: str | None = always()
    python: str | None = always()
    host: str | None = always()  # the machine it ran on (a Ray node, say)
    gpu_index: int | None = always()  # which of its GPUs (NVML's index), null on the CPU
    versions: dict = _listed(dict)
    cpu_threads_applied: dict | None = optional()  # the runtime's pools as set (runtimes.set_threads)
    worker_env: dict | None = optional()
    extra: dict = field(default_factory=dict)


@dataclass
class ModelInfo(Part):
    """Parameters and FLOPs from the architecture's single definition; the count in the
    framework beside it once an engine built the model."""

    _where = "model"
    architecture: str | None = always()
    parameters: int | None = always()
    flops_per_image: int | None = always()
    parameters_in_framework: int | None = optional()
    initial_weights: str | None = optional()  # pretrained weights: which file, and what was adapted
    extra: dict = field(default_factory=dict)

    @classmethod
    def describe(cls, architecture: str, resolution: int, channels: int, classes: int) -> ModelInfo:
        """From the definition (the same numbers for every framework); nulls where the
        definition does not fit the input (the result's message says why)."""
        import models

        try:
            d = models.describe(architecture, resolution, channels, classes)
        except Exception:  # noqa: BLE001 - unknown architecture or too small an input
            return cls(architecture=architecture)
        return cls(architecture=architecture, parameters=int(d["parameters"]),
                   flops_per_image=int(d["flops_per_image"]))


# -- the result ------------------------------------------------------------------------------
@dataclass
class RunResult(Part):
    """One framework's run of one job (DESIGN.md schema 1)."""

    _where = "result"
    schema: int = always(SCHEMA)
    key: str | None = always()
    framework: str | None = always()
    status: str = always("ok")
    message: str | None = always()
    spec: dict = _listed(dict)  # the job's RunSpec.to_dict()
    environment: Environment | None = always(part=Environment)
    model: ModelInfo | None = always(part=ModelInfo)
    train: Train | None = always(part=Train)
    evaluation: Evaluation | None = always(part=Evaluation)
    inference: list[InferencePoint] = _listed(part=InferencePoint, many=True)
    created_at: float | None = optional()  # when the store took it
    # The launcher's: when the job ran, and its worker (null when none started).
    started_at: float | None = always()
    finished_at: float | None = always()
    worker_pid: int | None = always()
    worker_time_s: float | None = optional()
    weights_file: str | None = optional()
    weights_in: str | None = optional()
    train_reused_from: str | None = optional()
    weights_rejected: str | None = optional()  # why cached weights (weights_in) did not load
    notes: list[str] | None = optional()
    extra: dict = field(default_factory=dict)

    @classmethod
    def failed(cls, job, status: str, message: str | None, *, key: str | None = None,
               environment: Environment | dict | None = None) -> RunResult:
        """A result without figures: a job that could not start, never ran, or whose worker
        gave nothing back. `job` is the RunSpec of the job, its dict, or None when even
        that could not be read."""
        spec = job.to_dict() if hasattr(job, "to_dict") else dict(job) if isinstance(job, dict) else {}
        frameworks = spec.get("frameworks")
        framework = frameworks[0] if isinstance(frameworks, (list, tuple)) and frameworks else None
        if isinstance(environment, dict):
            environment = Environment.from_dict(environment)
        return cls(key=key, framework=framework, status=status, message=message, spec=spec,
                   environment=environment)

    @property
    def seed(self) -> int:
        return int(self.spec.get("seed") or 0)

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    def summary(self) -> dict:
        """The row of the runs table: what it is, how it went and its headline figures.
        The store's index keeps it, so that the list of runs reads no result file."""
        spec, ev, tr, model, env = self.spec or {}, self.evaluation, self.train, self.model, self.environment
        timed = [p for p in self.inference if p.throughput_images_per_s is not None]
        best = max(timed, key=lambda p: p.throughput_images_per_s) if timed else None
        return {"key": self.key, "created_at": self.created_at, "dataset": spec.get("dataset"),
                "resolution": spec.get("resolution"),
                "architecture": spec.get("architecture") or (model.architecture if model else None),
                "framework": self.framework, "seed": self.seed, "status": self.status, "message": self.message,
                "epochs": spec.get("epochs"), "precision": spec.get("precision"),
                "accuracy": ev.accuracy if ev else None, "auc": ev.auc if ev else None,
                "train_time_s": tr.total_time_s if tr else None,
                "best_throughput_images_per_s": best.throughput_images_per_s if best else None,
                "best_batch_size": best.batch_size if best else None,
                "parameters": model.parameters if model else None,
                "flops_per_image": model.flops_per_image if model else None,
                "device": env.device if env else None, "gpu": env.gpu if env else None,
                "cpu_threads": env.cpu_threads if env else None, "noisy": env.noisy if env else None,
                "host": env.host if env else None, "gpu_index": env.gpu_index if env else None}

    def problems(self) -> list[str]:
        """What makes this not a result the store keeps, as messages; empty when usable."""
        from engines.frameworks import FRAMEWORKS

        out = []
        if self.schema != SCHEMA:
            out.append(f"schema is {self.schema!r}, this lab reads {SCHEMA}")
        if self.framework not in FRAMEWORKS:
            out.append(f"framework {self.framework!r} is not one of {', '.join(FRAMEWORKS)}")
        if self.status not in RESULT_STATUSES:
            out.append(f"status {self.status!r} is not one of {', '.join(RESULT_STATUSES)}")
        if not isinstance(self.spec, dict):
            out.append("spec is missing")
        if not isinstance(self.inference, list):
            out.append("inference must be a list")
        for p in self.inference if isinstance(self.inference, list) else []:
            if p.status not in POINT_STATUSES:
                out.append(f"inference at batch size {p.batch_size}: status {p.status!r} is not one of "
                           f"{', '.join(POINT_STATUSES)}")
        return out

    @classmethod
    def parse(cls, d) -> RunResult:
        """from_dict, then problems(): a ResultError that lists them, or a usable result."""
        result = cls.from_dict(d)
        problems = result.problems()
        if problems:
            raise ResultError("; ".join(problems))
        return result

    def to_json(self, **kwargs) -> str:
        """The JSON text (NaN and infinity written as null: JSON has neither)."""
        return json.dumps(clean(self.to_dict()), allow_nan=False, default=str, **kwargs)


def clean(v):
    """A value as JSON can hold it: non-finite floats become null, NumPy scalars plain numbers."""
    if isinstance(v, float) and not math.isfinite(v):
        return None
    if isinstance(v, dict):
        return {k: clean(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [clean(x) for x in v]
    if hasattr(v, "item") and callable(v.item):
        return clean(v.item())
    return v
