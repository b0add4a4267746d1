"""One (spec, framework) run in its own fresh interpreter: `python -m engines.runs.worker`.

    python -m engines.runs.worker --job JOB.json --result RESULT.json [--key K]
                             [--weights-in FILE] [--weights-out PATH] [--parent-pid PID]
    python -m engines.runs.worker --spare FRAMEWORK   (started ahead: runs.spares)

JOB.json is a job (RunSpec.job(framework, seed).to_dict(): one framework, one seed). The
worker sets its environment from the job before any framework import (runs.workerenv; the
launcher has already set it, this makes a hand-started worker the same), then runs the
scenario (runs.scenario: load data -> build -> train or load weights -> evaluate -> time
inference at each batch size) and writes the RunResult (DESIGN.md schema 1) to RESULT.json.
Progress goes to stdout as JSON lines, the first being {"event": "worker_started", "pid":
...}; anything else that writes to stdout (a framework's own prints) is sent to stderr, so
the event stream stays clean.

A spare (`--spare FRAMEWORK`, started by runs.spares with the environment of the task it
may serve) imports its framework first, says {"event": "spare_ready"}, then reads the same
arguments as one JSON line on stdin and runs that one job as above; end of input (its
parent gone, or the spare no longer wanted) ends it.
"""
from __future__ import annotations

import argparse
import atexit
import contextlib
import json
import os
import shutil
import sys
import threading
import time

from engines.runs.result import RunResult
from engines.training.events import JsonLinesEmitter, make_event

# Read by the test hook only: makes the worker fail in a chosen way before any real work
# (tests of the launcher's crash, timeout and cancel handling, without framework imports).
TEST_FAULT_VARIABLE = "LAB_TEST_WORKER_FAULT"


def _test_fault(emit) -> None:
    fault = os.environ.get(TEST_FAULT_VARIABLE)
    if not fault:
        return
    print(f"worker test hook: fault {fault!r}", file=sys.stderr, flush=True)
    # After the stderr line: a test that acts on this event knows the line is written.
    emit(make_event("stage", stage="test fault", fault=fault))
    if fault == "raise":
        raise RuntimeError("injected failure (test hook)")
    if fault == "exit":
        end(3)
    if fault == "hang":
        while True:
            time.sleep(1)
    raise ValueError(f"unknown {TEST_FAULT_VARIABLE} value {fault!r}")


def run(job: dict, *, key: str | None, weights_in: str | None, weights_out: str | None,
        emit) -> RunResult:
    """The job as this worker reads it (validated), its environment applied before any
    framework import, then the scenario. A job that does not validate is an "error"."""
    from engines.runs import workerenv
    from engines.runs.spec import RunSpec

    try:
        spec = RunSpec.from_dict(job).as_job()
    except Exception as e:  # noqa: BLE001 - SpecError, or a value of the wrong type
        return RunResult.failed(job if isinstance(job, dict) else None, "error", str(e), key=key)
    worker_env = workerenv.apply(spec)  # before the first framework import (in the scenario)
    pin_cpu_threads()

    from engines.runs import scenario

    result = scenario.run(spec, key=key, weights_in=weights_in, weights_out=weights_out, emit=emit)
    if result.environment is not None:
        result.environment.worker_env = worker_env
    return result


def pin_cpu_threads() -> None:
    """This worker on as many CPUs as LAB_CPU_THREADS (set by workerenv) says, before a
    framework sizes its thread pools: XLA's CPU client has no other setting
    (engines.threads)."""
    from engines import threads

    threads.pin(threads.cpu_threads())


def die_with_parent(parent_pid: int) -> None:
    """Ask the kernel to SIGKILL this worker when the thread that started it ends, and
    stop at once if that parent is already gone. For a worker under a Ray task: a Ray
    worker that is killed (ray.cancel(force=True), a node's OOM killer) cannot stop it."""
    import ctypes
    import signal

    pr_set_pdeathsig = 1
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(pr_set_pdeathsig, signal.SIGKILL, 0, 0, 0)
    except (OSError, AttributeError):  # not Linux: the parent's cancel still stops it
        return
    if os.getppid() != parent_pid:
        end(1)


# This worker's torch.compile cache folder (workerenv.fresh_compile_cache), removed by end().
_COMPILE_CACHE: list[str] = []


def end(code: int) -> None:
    """Stop this worker now: its compile cache folder removed, then os._exit, which skips
    the interpreter's teardown (TensorFlow and XLA can crash while unloading, after the
    result is safely written; that must not turn a good run into a "crashed" one). The
    folder of a worker that is killed is removed by the next worker that starts."""
    remove_compile_cache()
    os._exit(code)


def remove_compile_cache() -> None:
    while _COMPILE_CACHE:
        shutil.rmtree(_COMPILE_CACHE.pop(), ignore_errors=True)


def write_json_atomic(path: str, result: RunResult) -> None:
    tmp = f"{path}.tmp{os.getpid()}"
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(result.to_json())
    os.replace(tmp, path)  # the parent never reads half a result


ARGUMENTS = ("job", "result", "key", "weights_in", "weights_out")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m engines.runs.worker", description=__doc__.splitlines()[0])
    ap.add_argument("--job", help="the job spec as a JSON file")
    ap.add_argument("--result", help="where to write the RunResult JSON")
    ap.add_argument("--key")
    ap.add_argument("--weights-in")
    ap.add_argument("--weights-out")
    ap.add_argument("--parent-pid", type=int, help="die with this process (see die_with_parent)")
    ap.add_argument("--spare", metavar="FRAMEWORK", help="import FRAMEWORK, then wait for the arguments on stdin")
    ap.add_argument("--idle", action="store_true",
                    help="a spare's import on idle CPU only (a spare kept warm for no job yet: on_idle_cpu)")
    args = ap.parse_args(argv)
    if not args.spare and not (args.job and args.result):
        ap.error("--job and --result are required (or --spare FRAMEWORK)")
    if args.parent_pid:
        die_with_parent(args.parent_pid)
    from engines.runs import workerenv

    folder = workerenv.fresh_compile_cache()  # before any framework import
    if folder:
        _COMPILE_CACHE.append(folder)
    atexit.register(remove_compile_cache)  # a worker that ends on an exception, not through end()

    # Events get the real stdout; fd 1 itself now points at stderr, so prints from the
    # frameworks (or C libraries writing to fd 1) cannot break a JSON line.
    events = os.fdopen(os.dup(1), "w", buffering=1, encoding="utf-8")
    os.dup2(2, 1)
    ahead = bool(args.spare)
    if ahead:
        args = wait_for_job(args.spare, events, idle=args.idle)
    with open(args.job, encoding="utf-8") as f:
        job = json.load(f)
    framework = (job.get("frameworks") or [None])[0] if isinstance(job, dict) else None
    emit = JsonLinesEmitter(events, framework=framework)
    emit(make_event("worker_started", pid=os.getpid(), framework=framework, started_ahead=ahead))
    _test_fault(emit)
    started = time.time()
    result = run(job, key=args.key, weights_in=args.weights_in, weights_out=args.weights_out, emit=emit)
    result.worker_pid = os.getpid()
    result.worker_time_s = time.time() - started
    write_json_atomic(args.result, result)
    emit(make_event("finished", status=result.status))
    events.flush()
    sys.stderr.flush()
    end(0)


def wait_for_job(framework: str, events, idle: bool = False) -> argparse.Namespace:
    """A spare's wait: pinned and its framework imported as a worker for that task would
    be (the launcher gave it that task's environment), then one line of arguments. The
    import is only an import: no device is touched and no thread pool sized until the job
    runs, so the job's own steps happen in the same order as in a fresh worker. `idle`:
    the import runs on idle CPU only (on_idle_cpu)."""
    pin_cpu_threads()
    if idle:
        on_idle_cpu(lambda: import_framework(framework))
    else:
        import_framework(framework)
    events.write(json.dumps(make_event("spare_ready", pid=os.getpid(), framework=framework)) + "\n")
    events.flush()
    line = sys.stdin.readline()
    if not line.strip():  # not wanted any more, or the parent is gone
        end(0)
    given = json.loads(line)
    return argparse.Namespace(**{name: given.get(name) for name in ARGUMENTS})


def import_framework(framework: str) -> None:
    """What a spare imports ahead: the framework's engine (and with it the framework), the
    modules every job uses, and what its first compiled call would import."""
    from engines.frameworks import engine_class
    from engines.runs import scenario  # noqa: F401 - the modules every job uses
    from engines.runs.workerenv import compiles

    with contextlib.suppress(Exception):  # the job, when it comes, reports it in its own words
        engine_class(framework).import_ahead(compiles(os.environ))


def on_idle_cpu(work) -> None:
    """Run `work` in a thread that gets only CPU that nothing else wants (Linux's
    SCHED_IDLE), and wait for it; its exception is raised here.

    For a spare kept warm while the queue is idle: its framework import (TensorFlow's is 8 s
    of a core) then never slows the pages that students open meanwhile (issue 16). A thread,
    because an unprivileged process cannot raise its priority again and this one runs its
    task at the normal one; a thread's scheduling policy is its own. NumPy is imported
    first, here: its BLAS starts its worker threads with the thread that imports it, and
    threads keep the policy they start with. Measured with gdb: after TensorFlow's,
    PyTorch's and JAX's imports on idle CPU, the only threads left on it are helpers no
    framework step runs on (jemalloc's purger; SciPy's own OpenBLAS workers where
    scikit-learn gets imported, which the framework table's `import_without` now avoids)."""
    import numpy  # noqa: F401 - see above

    failed: list[BaseException] = []

    def run() -> None:
        with contextlib.suppress(OSError, AttributeError):  # not Linux: the normal priority
            os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))
        try:
            work()
        except BaseException as e:  # noqa: BLE001 - raised again in the caller's thread
            failed.append(e)

    thread = threading.Thread(target=run, name="lab-import-on-idle-cpu")
    thread.start()
    thread.join()
    if failed:
        raise failed[0]


if __name__ == "__main__":
    main()
