"""One (spec, framework) run in its own fresh interpreter: `python -m engines.runs.worker`.

    python -m engines.runs.worker --job JOB.json --result RESULT.json [--key K]
                             [--weights-in FILE] [--weights-out PATH]

JOB.json is a job spec (RunSpec.job_spec: one framework, one seed). The worker sets its
environment from the spec before any framework import (harness.env; the launcher has
already set it, this makes a hand-started worker the same), then: load data -> build ->
train (or load weights) -> evaluate -> time inference at each batch size, and writes the
RunResult (DESIGN.md schema 1) to RESULT.json. Progress goes to stdout as JSON lines,
the first being {"event": "worker_started", "pid": ...}; anything else that writes to
stdout (a framework's own prints) is sent to stderr, so the event stream stays clean.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time

from engines.runs.spec import SCHEMA
from engines.training.events import JsonLinesEmitter, _clean, make_event

# Read by the test hook only: makes the worker fail in a chosen way before any real work
# (tests of the launcher's crash, timeout and cancel handling, without framework imports).
TEST_FAULT_VARIABLE = "LAB_TEST_WORKER_FAULT"


def _test_fault() -> None:
    fault = os.environ.get(TEST_FAULT_VARIABLE)
    if not fault:
        return
    print(f"worker test hook: fault {fault!r}", file=sys.stderr, flush=True)
    if fault == "raise":
        raise RuntimeError("injected failure (test hook)")
    if fault == "exit":
        os._exit(3)
    if fault == "hang":
        while True:
            time.sleep(1)
    raise ValueError(f"unknown {TEST_FAULT_VARIABLE} value {fault!r}")


def train_config(spec):
    """The RunSpec's training fields as the engines' TrainConfig; the architecture's paper
    defaults where the spec leaves learning rate or batch size unset."""
    from engines.training.config import TrainConfig

    return TrainConfig(
        architecture=spec.architecture, epochs=max(1, spec.epochs),
        batch_size=spec.resolved_train_batch_size, optimizer=spec.optimizer,
        learning_rate=float(spec.resolved_learning_rate), weight_decay=float(spec.weight_decay),
        lr_schedule=spec.lr_schedule, class_weights=spec.class_weights, seed=spec.seed,
        precision=spec.precision, compile=spec.compile, pipeline=spec.pipeline,
        cudnn_benchmark=spec.cudnn_benchmark, channels_last=spec.channels_last,
        same_init=spec.same_init)


def describe_model(architecture: str, resolution: int, channels: int, classes: int) -> dict:
    """{"architecture", "parameters", "flops_per_image"} from the single definition (the
    same numbers for every framework); nulls where the definition does not fit."""
    import models

    try:
        d = models.describe(architecture, resolution, channels, classes)
        return {"architecture": architecture, "parameters": int(d["parameters"]),
                "flops_per_image": int(d["flops_per_image"])}
    except Exception:  # noqa: BLE001 - unknown architecture or too small an input
        return {"architecture": architecture, "parameters": None, "flops_per_image": None}


def empty_result(job: dict, *, key: str | None, framework: str | None, status: str,
                 message: str | None, environment: dict | None = None) -> dict:
    return {"schema": SCHEMA, "key": key, "framework": framework, "status": status,
            "message": message, "spec": job, "environment": environment, "model": None,
            "train": None, "evaluation": None, "inference": []}


class WorkerHooks:
    """Measures around run_engine's stages: memory, energy and CPU use of training, then
    the inference sweep (engines.training.engine.RunHooks' protocol)."""

    def __init__(self, spec, config, images, emit):
        self.spec, self.config, self.images, self.emit = spec, config, images, emit
        self.device = None

    def _trackers(self, engine):
        from engines.trackers.energy import EnergyMeter
        from engines.trackers.memory import MemoryTracker

        self.device = engine.device()
        on_gpu = self.device != "cpu"
        memory = MemoryTracker(engine.name, on_gpu=on_gpu)
        reason = "" if on_gpu else "not measured: the run used the CPU (NVML reads NVIDIA GPUs only)"
        return memory, (lambda: EnergyMeter(enabled=on_gpu, reason=reason))

    def before_train(self, engine) -> None:
        from engines.trackers.timing import CpuUse

        self.memory, self.energy = self._trackers(engine)
        self.memory.reset()
        self.meter, self.cpu = self.energy(), CpuUse()
        self.cpu.start()
        self.meter.start()

    def after_train(self, engine, train: dict) -> None:
        self.meter.stop()
        self.cpu.stop()
        images = len(train["epochs"]) * train["steps_per_epoch"] * self.config.batch_size
        energy = self.meter.result(images=images, epochs=len(train["epochs"]))
        if energy["energy_j"] is not None:
            energy["note"] = "; ".join(filter(None, [energy["note"], "whole training call: compile and validation included"]))
        train["energy_j"] = energy["energy_j"]
        train["energy"] = energy
        train.update(self.memory.read())
        train["cpu_cores_used"] = self.cpu.cores_used

    def after_run(self, engine, out: dict) -> None:
        from engines.runs.scenario import inference_sweep

        memory, energy = self._trackers(engine)
        self.emit(make_event("stage", stage="timing", batch_sizes=list(self.spec.batch_sizes)))
        engine.prepare_inference(self.config)
        out["inference"] = inference_sweep(
            engine, self.spec.batch_sizes, warmup=self.spec.warmup_iters,
            iters=self.spec.measure_iters, images=self.images, memory=memory, energy=energy,
            on_event=self.emit)
        out["device"] = self.device


def run(job: dict, *, key: str | None, weights_in: str | None, weights_out: str | None,
        emit) -> dict:
    from engines.runs import workerenv as harness_env
    from engines.runs.spec import RunSpec

    framework = (job.get("frameworks") or [None])[0] if isinstance(job, dict) else None
    try:
        spec = RunSpec.from_job_spec(job)
        if len(spec.frameworks) != 1:
            raise ValueError(f"a worker runs exactly one framework, got {list(spec.frameworks)}")
    except Exception as e:  # noqa: BLE001 - SpecError, or a value of the wrong type
        return empty_result(job, key=key, framework=framework, status="error", message=str(e))
    framework = spec.frameworks[0]
    worker_env = harness_env.apply(spec)  # before the first framework import (in run_engine)

    from engines import machine as environment
    from engines.datasets import load_dataset
    from engines.runs.scenario import summary_message
    from engines.training.engine import run_engine

    job = spec.to_dict()
    emit(make_event("stage", stage="loading data", dataset=spec.dataset, resolution=spec.resolution))
    try:
        dataset = load_dataset(spec.dataset, spec.resolution, seed=spec.seed,
                               **dict(spec.dataset_options))
    except Exception as e:  # noqa: BLE001 - DatasetError and friends: the message says which
        return empty_result(job, key=key, framework=framework, status="error",
                            message=f"dataset {spec.dataset}: {e}", environment=environment.fingerprint())
    config = train_config(spec)
    hooks = WorkerHooks(spec, config, dataset.test.x, emit)
    trains = not spec.inference_only
    out = run_engine(framework, dataset, config, on_event=emit, weights_path=weights_in,
                     save_path=weights_out if trains else None, train=trains, hooks=hooks)
    result = empty_result(job, key=key, framework=framework, status=out["status"], message=out["message"])
    result["environment"] = {**environment.fingerprint(out.get("device") or hooks.device, out.get("versions")),
                             "worker_env": worker_env}
    result["model"] = describe_model(spec.architecture, dataset.resolution, dataset.channels,
                                     dataset.num_classes)
    if out.get("model"):
        result["model"]["parameters_in_framework"] = out["model"]["parameters"]
    result["train"], result["evaluation"] = out["train"], out["evaluation"]
    result["inference"] = out.get("inference") or []
    if out["status"] == "ok":
        result["message"] = summary_message(result["inference"])
    if out.get("weights_file"):
        result["weights_file"] = out["weights_file"]
    if weights_in:
        result["weights_in"] = weights_in
    return result


def write_json_atomic(path: str, obj: dict) -> None:
    tmp = f"{path}.tmp{os.getpid()}"
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(json.dumps(_clean(obj), allow_nan=False, default=str))
    os.replace(tmp, path)  # the parent never reads half a result


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m engines.runs.worker", description=__doc__.splitlines()[0])
    ap.add_argument("--job", required=True, help="the job spec as a JSON file")
    ap.add_argument("--result", required=True, help="where to write the RunResult JSON")
    ap.add_argument("--key")
    ap.add_argument("--weights-in")
    ap.add_argument("--weights-out")
    args = ap.parse_args(argv)

    # Events get the real stdout; fd 1 itself now points at stderr, so prints from the
    # frameworks (or C libraries writing to fd 1) cannot break a JSON line.
    events = os.fdopen(os.dup(1), "w", buffering=1, encoding="utf-8")
    os.dup2(2, 1)
    with open(args.job, encoding="utf-8") as f:
        job = json.load(f)
    framework = (job.get("frameworks") or [None])[0] if isinstance(job, dict) else None
    emit = JsonLinesEmitter(events, framework=framework)
    emit(make_event("worker_started", pid=os.getpid(), framework=framework))
    _test_fault()
    started = time.time()
    result = run(job, key=args.key, weights_in=args.weights_in, weights_out=args.weights_out, emit=emit)
    result["worker_pid"] = os.getpid()
    result["worker_time_s"] = time.time() - started
    write_json_atomic(args.result, result)
    emit(make_event("finished", status=result["status"]))
    events.flush()
    sys.stderr.flush()
    # Skip interpreter teardown: TensorFlow and XLA can crash while unloading, after the
    # result is safely written; that must not turn a good run into a "crashed" one.
    os._exit(0)


if __name__ == "__main__":
    main()
