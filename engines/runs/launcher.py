"""Starts one worker per job and turns whatever happens into a result.

    run_job(job, key=..., on_event=..., timeout_s=..., weights_in=..., weights_out=...,
            cancel=...) -> RunResult (DESIGN.md schema 1)

The worker is a fresh interpreter (`python -m engines.runs.worker`), never a fork: a process
that has started CUDA cannot be forked safely, and XLA reads its flags once per process.
It may have been started ahead of the task (a spare of runs.spares that has imported its
framework and waits): only when its environment is exactly the one this task's worker gets,
and it serves this one task (its "worker_started" event says started_ahead).
Its environment comes from runs.workerenv, set before the interpreter starts. It runs in
its own process group, so a timeout or a cancel kills it and any compiler processes it
started. Events arrive on its stdout as JSON lines and are passed to `on_event` in the
calling thread as they arrive; the result comes back through a file. The parent never
raises for a worker failure: a dead worker is status "crashed" with the tail of its
stderr, a slow one "timed_out", a cancelled one "cancelled".
"""
from __future__ import annotations

import contextlib
import json
import os
import queue
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time

from engines.paths import REPO_ROOT
from engines.runs import spares
from engines.runs.result import ModelInfo, RunResult
from engines.runs.spec import RunSpec

ROOT = str(REPO_ROOT)
STDERR_TAIL_LINES = 40
STDERR_TAIL_CHARS = 4000
POLL_S = 0.1


def _stderr_tail(path: str) -> str:
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - 64 * 1024))
            text = f.read().decode("utf-8", "replace")
    except OSError:
        return ""
    lines = [line for line in text.splitlines() if line.strip()][-STDERR_TAIL_LINES:]
    return "\n".join(lines)[-STDERR_TAIL_CHARS:]


def _exit_description(rc: int | None) -> str:
    if rc is None:
        return "did not exit"
    if rc < 0:
        try:
            return f"was killed by signal {signal.Signals(-rc).name}"
        except ValueError:
            return f"was killed by signal {-rc}"
    return f"exited with code {rc}"


def _kill_group(proc: subprocess.Popen) -> None:
    """SIGKILL the worker's whole process group (torch.compile's and XLA's helper
    processes included), then reap the worker."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=10)


def _fallback_result(job, key, status: str, message: str) -> RunResult:
    """A result made by the parent when the worker gave none: the job, the machine and
    the model's size from its definition, no measurements."""
    from engines import machine

    framework = getattr(job, "framework", None)
    try:
        env = machine.fingerprint(framework=framework)
    except Exception:  # noqa: BLE001 - NVML trouble must not hide the worker's failure
        env = None
    result = RunResult.failed(job, status, message, key=key, environment=env)
    if isinstance(job, RunSpec):
        try:
            from engines.datasets import get_info

            info = get_info(job.dataset)
            options = dict(job.dataset_options)
            result.model = ModelInfo.describe(job.architecture, job.resolution, options.get("channels", info.channels),
                                              options.get("classes", len(info.class_names)))
        except Exception:  # noqa: BLE001 - a folder dataset without its folder, say
            result.model = None
    return result


def run_job(job: RunSpec | dict, *, key: str | None = None, on_event=None, timeout_s: float | None = None,
            weights_in: str | None = None, weights_out: str | None = None,
            cancel: threading.Event | None = None, gpu: str | None = None,
            die_with_parent: bool = False) -> RunResult:
    """Run one job (a RunSpec for one framework and seed, or its dict) in a fresh worker
    (a spare from runs.spares.SPARES when one matches); always returns a RunResult (see
    module doc).

    `gpu`: the GPU the worker sees (its CUDA_VISIBLE_DEVICES; the queue's lane), default
    the first this process may see. `die_with_parent`: the worker is killed when the
    thread that started it dies (a Ray worker killed with SIGKILL has no chance to stop it).

    Besides schema 1's fields the result has started_at and finished_at (unix times),
    worker_pid (None when no worker started) and weights_file when saved.
    """
    from engines.runs.spec import environment_fingerprint
    from engines.runs.workerenv import with_lab_path, worker_env

    started_at = time.time()
    on_event = on_event or (lambda event: None)

    def finish(result: RunResult, pid=None) -> RunResult:
        result.key, result.started_at, result.finished_at = key, started_at, time.time()
        result.worker_pid = result.worker_pid or pid
        return result

    try:
        job = (job if isinstance(job, RunSpec) else RunSpec.from_dict(job)).as_job()
    except Exception as e:  # noqa: BLE001 - SpecError, or a field of the wrong type
        return finish(_fallback_result(job, key, "error", f"invalid job: {e}"))
    framework = job.framework
    if key is None:
        key = job.job_key(environment_fingerprint(framework))

    tmp = tempfile.mkdtemp(prefix="lab-job-")
    job_path, result_path = os.path.join(tmp, "job.json"), os.path.join(tmp, "result.json")
    with open(job_path, "w", encoding="utf-8") as f:
        json.dump(job.to_dict(), f)
    arguments = {"job": job_path, "result": result_path, "key": key,
                 "weights_in": os.path.abspath(weights_in) if weights_in else None,
                 "weights_out": os.path.abspath(weights_out) if weights_out else None}
    env = worker_env(job, gpu=gpu)
    # A Ray task's worker must die with the task's thread: never a spare (started elsewhere).
    spare = None if die_with_parent else spares.SPARES.take(framework, env)
    stderr_path = spare.stderr_path if spare else os.path.join(tmp, "stderr.txt")

    proc = None
    try:
        if spare is not None:
            proc = spare.proc
            spare.hand_over(arguments)
            outcome = _follow(proc, framework, on_event, timeout_s, cancel)
        else:
            with open(stderr_path, "wb") as stderr_file:
                proc = subprocess.Popen(_command(arguments, die_with_parent), cwd=ROOT, env=with_lab_path(env),
                                        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=stderr_file,
                                        start_new_session=True)
                outcome = _follow(proc, framework, on_event, timeout_s, cancel)
        # The worker is gone (or killed): sweep up anything it left in its group.
        _kill_group(proc)
        return finish(_collect(job, key, framework, proc, outcome, result_path, stderr_path), proc.pid)
    except BaseException:
        # on_event raised (Streamlit stops a script this way), or the parent was
        # interrupted: never leave a worker running on the GPU.
        if proc is not None:
            _kill_group(proc)
        raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        if spare is not None:
            spare.stop()  # reaped, its stderr folder removed


def _command(arguments: dict, die_with_parent: bool) -> list[str]:
    cmd = [sys.executable, "-m", "engines.runs.worker"]
    for name, value in arguments.items():
        if value is not None:
            cmd += [f"--{name.replace('_', '-')}", value]
    if die_with_parent:
        cmd += ["--parent-pid", str(os.getpid())]
    return cmd


def _follow(proc, framework, on_event, timeout_s, cancel) -> tuple[str, str] | None:
    """Pass events on until the worker exits; (status, message) if it had to be stopped."""
    lines: queue.Queue = queue.Queue()

    def read():
        for raw in proc.stdout:
            lines.put(raw)
        lines.put(None)

    threading.Thread(target=read, name=f"worker-{proc.pid}-events", daemon=True).start()
    deadline = time.monotonic() + timeout_s if timeout_s else None
    eof = False
    while True:
        if cancel is not None and cancel.is_set():
            _kill_group(proc)
            return "cancelled", "cancelled; the worker was stopped"
        if deadline is not None and time.monotonic() > deadline:
            _kill_group(proc)
            return "timed_out", f"no result within {timeout_s:g} s; the worker was stopped"
        if eof:
            try:
                proc.wait(timeout=POLL_S)
                return None
            except subprocess.TimeoutExpired:
                continue
        try:
            raw = lines.get(timeout=POLL_S)
        except queue.Empty:
            continue
        if raw is None:
            eof = True
            continue
        event = _parse_line(raw)
        if event is not None:
            event.setdefault("framework", framework)
            on_event(event)


def _parse_line(raw: bytes) -> dict | None:
    line = raw.decode("utf-8", "replace").strip()
    if not line.startswith("{"):
        return None
    try:
        obj = json.loads(line)
    except json.JSONDecodeError:
        return None
    return obj if isinstance(obj, dict) and "event" in obj else None


def _collect(job, key, framework, proc, outcome, result_path, stderr_path) -> RunResult:
    tail = _stderr_tail(stderr_path)
    if outcome is not None:
        status, message = outcome
        if tail and status == "timed_out":
            message += f"\n--- worker stderr (last lines) ---\n{tail}"
        return _fallback_result(job, key, status, message)
    try:
        with open(result_path, encoding="utf-8") as f:
            result = RunResult.from_dict(json.load(f))
    except FileNotFoundError:
        result, why = None, "wrote no result"
    except (OSError, ValueError) as e:  # JSONDecodeError and ResultError are ValueErrors
        result, why = None, f"wrote a corrupt result ({e})"
    if result is None:
        message = f"the {framework} worker {_exit_description(proc.returncode)} and {why}"
        if tail:
            message += f"\n--- worker stderr (last lines) ---\n{tail}"
        return _fallback_result(job, key, "crashed", message)
    if proc.returncode not in (0, None):
        result.notes = [*(result.notes or []), f"worker {_exit_description(proc.returncode)} after writing its result"]
    return result
