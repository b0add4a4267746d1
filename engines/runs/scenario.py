"""The scenario a worker runs, top to bottom:

    load data -> build -> train under the trackers -> evaluate -> each batch size
    measured under the trackers

`run(job)` is the worker's whole job; `run_framework` is the same scenario from the
build on, for a caller that holds its data and its TrainConfig in this process (the
engine tests, the training benchmarks). Every expected failure (a framework that is not
installed, an architecture too big for the resolution, a batch larger than the split, a
NaN loss, weights that do not load, running out of memory) becomes the result's status
and message in one place, `failures_become_status`, never a traceback.

Batch sizes run in increasing order (JAX cannot reset its peak-memory counter, so each
size's peak is then its own). A size that runs out of memory is a point with status
"oom", and the larger sizes are recorded as "oom" without running: they would only fail
again, slowly, and might leave the device in a worse state. Energy and CPU use are
windows of exactly the measured calls (trackers.timing.measure), memory the whole size
(its inputs included).
"""
from __future__ import annotations

import contextlib
import functools
import gc
import time

from engines import devices, machine
from engines.frameworks import FRAMEWORKS, get_engine
from engines.runs.result import (
    BatchNormPass,
    Energy,
    Environment,
    Evaluation,
    InferencePoint,
    Latency,
    Memory,
    ModelInfo,
    RunResult,
    Train,
)
from engines.trackers.cpu import CpuUse, any_noisy
from engines.trackers.energy import MIN_WINDOW_S, EnergyMeter
from engines.trackers.memory import MemoryTracker, is_oom
from engines.trackers.timing import measure
from engines.training.config import ConfigError, TrainConfig
from engines.training.engine import EngineError, WeightsError
from engines.training.events import EventCallback, make_event, null_callback

CPU_ENERGY_NOTE = "not measured: the run used the CPU (NVML reads NVIDIA GPUs only)"
TRAIN_ENERGY_NOTE = "whole training call: compile and validation included"


def run(job, *, key: str | None = None, weights_in: str | None = None, weights_out: str | None = None,
        emit: EventCallback = null_callback) -> RunResult:
    """One job (a RunSpec for one framework and seed) in this process: the worker calls
    this once its environment is set. Trains unless the job is inference-only or
    `weights_in` holds trained weights; saves them to `weights_out` when it trains."""
    from engines.datasets import load_dataset

    emit(make_event("stage", stage="loading data", dataset=job.dataset, resolution=job.resolution))
    try:
        dataset = load_dataset(job.dataset, job.resolution, seed=job.seed, **dict(job.dataset_options))
    except Exception as e:  # noqa: BLE001 - DatasetError and friends: the message says which
        from engines.datasets import DownloadFailed

        message = str(e) if isinstance(e, DownloadFailed) else f"dataset {job.dataset}: {e}"  # it names it
        return RunResult.failed(job, "error", message, key=key,
                                environment=machine.fingerprint(framework=job.framework))
    return run_framework(job.framework, dataset, job.train_config(), spec=job.to_dict(), key=key,
                         train=not job.inference_only, weights_in=weights_in, weights_out=weights_out,
                         batch_sizes=job.batch_sizes, warmup_iters=job.warmup_iters,
                         measure_iters=job.measure_iters, require_gpu=job.require_gpu, on_event=emit)


def run_framework(framework: str, dataset, config: TrainConfig | dict, *, spec: dict | None = None,
                  key: str | None = None, train: bool = True, evaluate: bool = True,
                  weights_in: str | None = None, weights_out: str | None = None, batch_sizes=(),
                  warmup_iters: int = 20, measure_iters: int = 100, require_gpu: bool = False,
                  on_event: EventCallback = null_callback) -> RunResult:
    """Build -> train (or load `weights_in`) under the trackers -> evaluate -> measure each
    of `batch_sizes` (none: no timing). `train=False` without weights keeps the initial
    weights (an inference-only run: nothing to evaluate). `require_gpu` refuses (status
    "error") a framework that would compute on the CPU on a machine with a GPU. Emits
    "stage" events."""
    result = RunResult(key=key, framework=framework, spec=dict(spec or {}), weights_in=weights_in,
                       environment=Environment.from_dict(machine.fingerprint(framework=framework)))

    def stage(name, **fields):
        on_event(make_event("stage", framework=framework, stage=name, **fields))

    with failures_become_status(result, on_event):
        config = config if isinstance(config, TrainConfig) else TrainConfig.from_dict(config)
        result.model = ModelInfo.describe(config.architecture, dataset.resolution, dataset.channels,
                                          dataset.num_classes)
        stage("importing the framework")  # a worker started ahead has done it already
        engine = get_engine(framework, config)
        applied = apply_cpu_threads(framework, result.environment.cpu_threads)  # before the runtime starts
        result.environment = Environment.from_dict(
            machine.fingerprint(device=engine.device(), versions=engine.versions(), framework=framework))
        result.environment.cpu_threads_applied = applied
        if require_gpu:
            refuse_cpu_fallback(framework, result.environment)
        stage("building")
        result.model.initial_weights = build(engine, config, dataset, canonical=weights_in is None)
        result.model.parameters_in_framework = engine.parameters()
        if weights_in is not None:
            load_weights(engine, weights_in, result)
        elif train:
            stage("training")
            result.train = train_under_trackers(engine, framework, config, dataset, on_event)
            if config.recompute_batchnorm:
                stage("recomputing BatchNorm statistics")
                result.train.batchnorm = recompute_batchnorm(engine, config, dataset, result.train)
        if evaluate and (result.train is not None or weights_in is not None):
            stage("evaluating")
            result.evaluation = Evaluation.from_dict(engine.evaluate(dataset))
        if weights_out is not None and result.train is not None:
            result.weights_file = engine.save(weights_out)
        if batch_sizes:
            stage("timing", batch_sizes=list(batch_sizes))
            result.inference = measure_batch_sizes(engine, framework, batch_sizes, warmup=warmup_iters,
                                                   iters=measure_iters, images=dataset.test.x, on_event=on_event)
            result.message = summary_message(result.inference)
    result.environment.noisy = any_noisy([result.train.noisy if result.train else None]
                                         + [p.noisy for p in result.inference])
    return result


# -- the stages ---------------------------------------------------------------------------------
def build(engine, config: TrainConfig, dataset, *, canonical: bool) -> str | None:
    """The model from its single definition. With `canonical`, every framework starts from
    the same framework-neutral weights: the pretrained ones when the run names them, else
    one draw from the seed (same_init); otherwise from the framework's own initializers
    (weights that will be loaded over it, or same_init off). Returns where pretrained
    weights came from, for the result."""
    import models

    try:  # before any weights are drawn: an architecture that does not fit, by name
        models.check_input(config.architecture, resolution=dataset.resolution, channels=dataset.channels)
    except ValueError as e:
        raise EngineError(str(e)) from None
    weights, origin = None, None
    dims = dict(resolution=dataset.resolution, channels=dataset.channels, num_classes=dataset.num_classes,
                seed=config.seed)
    if canonical and config.pretrained:
        from engines.pretrained import weights_for

        weights, origin = weights_for(config.pretrained, config.architecture, **dims)
    elif canonical and config.same_init:
        weights = models.init_weights(config.architecture, **dims)
    engine.build(config.architecture, dataset.resolution, dataset.channels, dataset.num_classes, weights)
    return origin


def load_weights(engine, weights_in: str, result: RunResult) -> None:
    """Cached trained weights into the model. Weights that do not load (a file saved
    broken passes its SHA-256) are recorded in `weights_rejected`, so that the queue drops
    them and trains again instead of failing every later run the same way."""
    try:
        engine.load(weights_in)
    except Exception as e:  # noqa: BLE001 - each framework fails in its own way
        text = (str(e).strip().splitlines() or [""])[0]
        result.weights_rejected = f"{type(e).__name__}: {text}"[:500]
        raise WeightsError(f"the cached trained weights did not load ({result.weights_rejected})") from None


def apply_cpu_threads(framework: str, n: int | None) -> dict | None:
    """The one CPU thread count (engines.threads) on the framework's runtime pools, before
    its first computation; what is in effect (None for a framework the table does not
    know, a test's fake)."""
    known = FRAMEWORKS.get(framework)
    if known is None or n is None:
        return None
    from engines.frameworks import runtimes

    return runtimes.set_threads(known.runtime, n)


def refuse_cpu_fallback(framework: str, environment: Environment) -> None:
    """--require-gpu: an EngineError (the result's "error") when the framework would
    compute on the CPU although this machine has a GPU; nothing on a machine without one."""
    if environment.gpu is None or not devices.on_cpu(environment.device):
        return
    known = FRAMEWORKS.get(framework)
    raise EngineError(f"refused (GPU required): {known.label if known else framework} would compute on the CPU "
                      f"although this machine has {environment.gpu}; {devices.gpu_fix(framework)}")


def _trackers(engine, framework: str) -> tuple[MemoryTracker, functools.partial]:
    """A memory tracker for the framework's allocator and a maker of energy meters; on the
    CPU neither reads NVML (energy is then "not measured", memory the process's RSS)."""
    on_gpu = not devices.on_cpu(engine.device())
    known = FRAMEWORKS.get(framework)
    memory = MemoryTracker(known.allocator if known else "", on_gpu=on_gpu)
    return memory, functools.partial(EnergyMeter, enabled=on_gpu, reason="" if on_gpu else CPU_ENERGY_NOTE)


def train_under_trackers(engine, framework: str, config: TrainConfig, dataset, on_event: EventCallback) -> Train:
    """engine.train with memory, energy and CPU use tracked over the whole call."""
    memory, energy_meter = _trackers(engine, framework)
    with memory, energy_meter() as meter, CpuUse() as cpu:
        train = Train.from_dict(engine.train(dataset, on_event))
    images = len(train.epochs) * (train.steps_per_epoch or 0) * config.batch_size
    energy = Energy.from_dict(meter.result(images=images, epochs=len(train.epochs)))
    if energy.energy_j is not None:
        energy.note = "; ".join(filter(None, [energy.note, TRAIN_ENERGY_NOTE]))
    train.set_energy(energy)
    train.memory = Memory.from_dict(memory.reading)
    train.cpu_cores_used, train.other_cpu_cores, train.noisy = cpu.cores_used, cpu.other_cores, cpu.noisy
    return train


def recompute_batchnorm(engine, config: TrainConfig, dataset, train: Train) -> BatchNormPass:
    """The BatchNorm statistics of the trained model recomputed over the training split
    (engines.training.batchnorm), before it is evaluated and saved; what the running
    averages gave on the validation split (the last epoch's) kept beside the new figure."""
    from engines.training import batchnorm

    last = train.epochs[-1] if train.epochs else None
    before = (last.val_loss, last.val_accuracy) if last is not None else None
    return BatchNormPass.from_dict(batchnorm.recompute(engine, dataset, config, before).to_dict())


def measure_batch_sizes(engine, framework: str, batch_sizes, *, warmup: int, iters: int, images=None,
                        memory: MemoryTracker | None = None, energy=None,
                        on_event: EventCallback = null_callback, clock=time.perf_counter) -> list[InferencePoint]:
    """One inference point per batch size, in increasing order (see the module doc).
    `energy` makes a fresh meter per size; when it can measure, the window is extended to
    at least MIN_WINDOW_S so that the counter's ~100 ms updates do not dominate."""
    if memory is None or energy is None:
        memory, energy = _trackers(engine, framework)
    inference_fn = functools.cache(engine.inference_fn)  # built by the first size, kept for the others
    points: list[InferencePoint] = []
    oom_at = None
    for bs in sorted(batch_sizes):
        if oom_at is not None:
            point = InferencePoint.failed(bs, "oom", f"not run: batch size {oom_at} already ran out of memory")
        else:
            point = _measure_one(engine, inference_fn, bs, warmup=warmup, iters=iters, images=images,
                                 memory=memory, meter=energy(), clock=clock)
            if point.status == "oom":
                oom_at = bs
        points.append(point)
        on_event(make_event("inference", **{k: v for k, v in point.to_dict().items() if k != "notes"}))
    return points


def _measure_one(engine, inference_fn, bs: int, *, warmup, iters, images, memory, meter, clock) -> InferencePoint:
    cpu = CpuUse(clock)
    failure = None
    try:
        with memory:
            m = _timed(engine, inference_fn(), bs, images, warmup=warmup, iters=iters, clock=clock,
                       min_window_s=MIN_WINDOW_S if meter.available else 0.0, windows=(meter, cpu))
    except Exception as e:  # noqa: BLE001 - one size failing is a data point
        text = (str(e).strip().splitlines() or [type(e).__name__])[0]
        failure = ("oom", f"out of memory at batch size {bs}: {text}") if is_oom(e) \
            else ("error", f"batch size {bs}: {type(e).__name__}: {text}")
    if failure:
        # Outside the except block: the traceback (and the tensors its frames hold) is
        # gone, so the allocator can give the memory back.
        gc.collect()
        memory.release()
        return InferencePoint.failed(bs, *failure)
    s = m.summary()
    energy = Energy.from_dict(meter.result(images=bs * m.iterations))
    return InferencePoint(batch_size=bs, latency_ms=Latency.from_dict(s["latency_ms"]),
                          throughput_images_per_s=s["throughput_images_per_s"], first_call_s=s["first_call_s"],
                          memory=Memory.from_dict(memory.reading), energy_j_per_1000_images=energy.j_per_1000_images,
                          energy=energy, cpu_cores_used=cpu.cores_used, other_cpu_cores=cpu.other_cores,
                          noisy=cpu.noisy, warmup_iters=s["warmup_iters"],
                          measured_iters=s["measured_iters"], window_s=s["window_s"], notes=m.notes)


def _timed(engine, call, bs: int, images, **kwargs):
    """measure() on fresh device-resident inputs, which go when this frame does (on an
    error too), so the next batch size starts with their memory back."""
    inputs = engine.inference_inputs(bs, images)
    return measure(call, engine.sync, inputs, batch_size=bs, **kwargs)


def summary_message(points: list[InferencePoint]) -> str | None:
    """"inference: out of memory at batch size 1024" and the like, for the result's message."""
    parts = []
    oom = [p.batch_size for p in points if p.status == "oom"]
    if oom:
        parts.append(f"inference: out of memory at batch size {oom[0]}"
                     + (" (larger sizes not run)" if len(oom) > 1 else ""))
    errors = [p for p in points if p.status == "error"]
    if errors:
        parts.append("inference: " + "; ".join(p.message for p in errors))
    return "; ".join(parts) or None


# -- failures become a status --------------------------------------------------------------------
@contextlib.contextmanager
def failures_become_status(result: RunResult, on_event: EventCallback = null_callback):
    """Run the block; any exception ends it and becomes `result`'s status and message:
    an expected failure "error" (or its own status), running out of memory "oom",
    anything else "crashed" with the exception's first line."""
    try:
        yield result
    except Exception as e:  # noqa: BLE001 - the worker must report, not die
        result.status, result.message = status_of(e, result.framework)
        with contextlib.suppress(Exception):  # a broken event stream must not hide the failure
            on_event(make_event("error", framework=result.framework, status=result.status, message=result.message))


def status_of(e: Exception, framework: str | None) -> tuple[str, str]:
    if isinstance(e, (EngineError, ConfigError)):
        return getattr(e, "status", "error"), str(e)
    if is_oom(e):
        text = (str(e).strip().splitlines() or [type(e).__name__])[0]
        return "oom", f"{framework}: out of memory: {text}"
    known = _known_failure(e)
    if known:
        return "error", known
    text = (str(e).strip().splitlines() or [""])[0]
    return "crashed", f"{framework}: unexpected {type(e).__name__}: {text}"


def _known_failure(e: Exception) -> str | None:
    """Messages for failures raised by libraries we call (models/, datasets)."""
    if type(e).__name__ in ("DatasetError", "ModelError", "ArchitectureError", "InputTooSmall"):
        return str(e)
    if isinstance(e, (ValueError, KeyError)) and e.__class__.__module__.startswith("models"):
        return str(e)
    return None
