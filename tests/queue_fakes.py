"""The job queue without a framework: a fake executor and the queue's failure scenarios,
run by tests/test_runs_queue.py (and friends) and printed by benchmarks/queue_stress.py.

The fake executor keeps run_job's contract: it starts a real worker subprocess (a Python
that sleeps), reports worker_started/step/epoch events, honours `cancel`, and returns a
RunResult (schema 1). The scenarios:

1. concurrent_submitters: fresh interpreters submit a few distinct specs at once; each
   spec executes once, the running intervals never overlap, every submitter gets results.
2. sigkill_runner: a runner process killed mid-job; the lock is free, the next runner
   kills the orphaned worker and runs the task again for the job's follower (this
   process), then the next job. sigkill_worker: a worker killed mid-task; that task
   crashes, the queue goes on.
3. corrupt_entry: a truncated result file is detected on read, dropped with a warning,
   recomputed.

Scenario 1 and 2 start processes with `python -m queue_fakes submit|runner` (this
module's main), with tests/ and the repository on PYTHONPATH.
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import threading
import time
import warnings
from pathlib import Path

from helpers import alive, wait_for

from engines.runs.queue import JobQueue
from engines.runs.result import RunResult
from engines.runs.spec import RunSpec

TESTS = Path(__file__).resolve().parent
REPO = TESTS.parent


def demo_spec(epochs: int, **changes) -> RunSpec:
    return RunSpec(dataset="synthetic", resolution=32, architecture="cifar_cnn", frameworks=("pytorch",),
                   batch_sizes=(1, 8), epochs=epochs,
                   dataset_options={"train": 32, "val": 8, "test": 8, "classes": 3}, **changes)


class FakeExecutor:
    """run_job's contract without a framework: a sleeping worker process per task.
    `sleep_s` is how long that worker lives unless cancelled; a test that needs a task
    still running uses one far longer than the test (and cancels it)."""

    def __init__(self, log_path: str | os.PathLike | None = None, sleep_s: float = 0.3, status: str = "ok"):
        self.log_path = str(log_path) if log_path else None
        self.sleep_s = sleep_s
        self.status = status
        self.calls: list[dict] = []

    def __call__(self, job: RunSpec, *, key=None, on_event=None, timeout_s=None, weights_in=None,
                 weights_out=None, cancel: threading.Event | None = None, gpu: str | None = None) -> RunResult:
        on_event = on_event or (lambda e: None)
        start = time.time()
        worker = subprocess.Popen([sys.executable, "-c", f"import time; time.sleep({self.sleep_s})"])
        fw = job.framework
        on_event({"event": "worker_started", "pid": worker.pid, "framework": fw})
        epochs = job.epochs
        on_event({"event": "stage", "stage": "training"})
        for epoch in range(1, epochs + 1):
            on_event({"event": "step", "epoch": epoch, "step": 1, "steps": 1, "loss": 1.0 / epoch})
            on_event({"event": "epoch", "epoch": epoch, "epochs": epochs, "loss": 1.0 / epoch, "accuracy": 0.5,
                      "val_loss": 1.0, "val_accuracy": 0.5, "time_s": 0.01})
        status, message = self.status, None
        while worker.poll() is None:
            if cancel is not None and cancel.wait(0.02):
                worker.kill()
                worker.wait()
                status, message = "cancelled", "cancelled while running"
                break
        if status == "ok" and worker.returncode and worker.returncode < 0:
            status, message = "crashed", f"the worker was killed by signal {-worker.returncode}"
        end = time.time()
        weights_file = None
        if weights_out and status == "ok":
            weights_file = weights_out + ".fake"
            Path(weights_file).write_text("fake weights")
        call = {"key": key, "framework": fw, "epochs": epochs, "start": start, "end": end, "runner_pid": os.getpid(),
                "weights_in": weights_in, "weights_out": weights_out, "status": status, "gpu": gpu}
        self.calls.append(call)
        if self.log_path:
            with open(self.log_path, "a", encoding="utf-8") as fh:  # one short line: atomic with O_APPEND
                fh.write(json.dumps(call) + "\n")
        trained = status == "ok" and weights_in is None and not job.inference_only
        return RunResult.from_dict({
            "schema": 1, "key": key, "framework": fw, "status": status, "message": message,
            "spec": job.to_dict(),
            "environment": {"device": "cpu", "gpu": None, "driver": None, "cuda": None, "cpu": "fake",
                            "python": sys.version.split()[0], "versions": {}},
            "model": {"architecture": job.architecture, "parameters": 1000, "flops_per_image": None},
            "train": {"epochs": [{"epoch": e, "loss": 1.0 / e, "accuracy": 0.5, "val_loss": 1.0, "val_accuracy": 0.5,
                                  "time_s": 0.01} for e in range(1, epochs + 1)],
                      "compile_time_s": 0.0, "total_time_s": end - start, "images_per_s": 100.0, "energy_j": None,
                      "peak_memory_bytes": None, "input_pipeline": "idiomatic"} if trained else None,
            "evaluation": {"accuracy": 0.5, "auc": 0.6} if status == "ok" else None,
            "inference": [{"batch_size": b, "status": "ok", "latency_ms": {"p50": 1.0 * b, "p95": 1.1 * b,
                                                                          "p99": 1.2 * b, "mean": 1.0 * b, "std": 0.1},
                           "throughput_images_per_s": 1000.0, "first_call_s": 0.1, "peak_memory_bytes": None,
                           "energy_j_per_1000_images": None} for b in job.batch_sizes] if status == "ok" else [],
            "started_at": start, "finished_at": end, "worker_pid": worker.pid, "weights_file": weights_file,
        })


def read_calls(log_path) -> list[dict]:
    path = Path(log_path)
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def overlaps(calls: list[dict]) -> list[tuple[dict, dict]]:
    spans = sorted(calls, key=lambda c: c["start"])
    return [(a, b) for a, b in zip(spans, spans[1:]) if b["start"] < a["end"]]


# -- subprocess entry points (python -m queue_fakes submit|runner) ----------------------
def _cmd_submit(args) -> int:
    """One submitter: submit, wait (running jobs itself when it gets the lock), print."""
    q = JobQueue(executor=FakeExecutor(args.log, sleep_s=args.sleep))
    job_id = q.submit(demo_spec(args.epochs), submitter=f"pid {os.getpid()}")
    st = q.wait(job_id, poll_s=0.05)
    print(json.dumps({"pid": os.getpid(), "job": job_id, "state": st["state"],
                      "results": [r.status for r in q.results(job_id)]}))
    return 0 if st["state"] == "done" else 1


def _cmd_runner(args) -> int:
    """A runner that runs one job with a slow fake (the SIGKILL scenario kills it)."""
    q = JobQueue(executor=FakeExecutor(args.log, sleep_s=args.sleep))
    return 0 if q.run_next() else 1


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m queue_fakes", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("submit")
    p.add_argument("--epochs", type=int, required=True)
    p.add_argument("--log", required=True)
    p.add_argument("--sleep", type=float, default=0.3)
    p = sub.add_parser("runner")
    p.add_argument("--log", required=True)
    p.add_argument("--sleep", type=float, default=60)
    args = parser.parse_args(argv)
    return _cmd_submit(args) if args.cmd == "submit" else _cmd_runner(args)


def spawn(cmd: str, *extra: str) -> subprocess.Popen:
    """This module's main in a fresh interpreter, seeing tests/ and the repository."""
    env = os.environ.copy()
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(TESTS), str(REPO), env.get("PYTHONPATH")]))
    return subprocess.Popen([sys.executable, "-m", "queue_fakes", cmd, *extra],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)


# -- the scenarios ----------------------------------------------------------------------
def concurrent_submitters(log_path, n: int = 8, distinct: int = 3, sleep_s: float = 0.3) -> dict:
    procs = [spawn("submit", "--epochs", str(1 + i % distinct), "--log", str(log_path), "--sleep", str(sleep_s))
             for i in range(n)]
    outputs = []
    for p in procs:
        out, err = p.communicate(timeout=120)
        if p.returncode != 0:
            raise RuntimeError(f"submitter failed ({p.returncode}): {err[-2000:]}")
        outputs.append(json.loads(out.strip().splitlines()[-1]))
    calls = read_calls(log_path)
    return {"submitters": outputs, "executions": calls, "overlaps": overlaps(calls),
            "jobs": sorted({o["job"] for o in outputs})}


def sigkill_runner(log_path) -> dict:
    """Kill a runner process mid-job; the next runner recovers the job (this process
    still follows it: its task runs again) and then runs the next one."""
    q = JobQueue(executor=FakeExecutor(log_path, sleep_s=0.2))
    doomed = q.submit(demo_spec(7))
    following = q.submit(demo_spec(8))
    runner = spawn("runner", "--log", str(log_path), "--sleep", "60")
    st = wait_for(lambda: (s := q.status(doomed))["tasks"][0]["progress"].get("stage") == "training" and s)
    lock_held_while_running = not q.lock_free()
    worker_pid = int(q._connect().execute("SELECT worker FROM tasks WHERE job_id=?", (doomed,))
                     .fetchone()[0].split(":")[0])
    os.kill(runner.pid, signal.SIGKILL)
    runner.wait()
    lock_free_after_kill = wait_for(q.lock_free, timeout_s=5)
    ran = q.run_next() and q.run_next()  # the recovered job, then the next one
    return {"running_before_kill": st["state"], "lock_held_while_running": lock_held_while_running,
            "lock_free_after_kill": lock_free_after_kill, "run_next": ran,
            "doomed": q.status(doomed), "following": q.status(following),
            "orphan_worker_alive": alive(worker_pid)}


def sigkill_worker(log_path) -> dict:
    """Kill the worker process of a running task: that task crashes, the queue goes on."""
    q = JobQueue(executor=FakeExecutor(log_path, sleep_s=30))
    doomed = q.submit(demo_spec(5))
    runner = threading.Thread(target=q.run_next)
    runner.start()
    worker = wait_for(lambda: q._connect().execute("SELECT worker FROM tasks WHERE job_id=?", (doomed,)).fetchone()[0])
    os.kill(int(worker.split(":")[0]), signal.SIGKILL)
    runner.join(timeout=20)
    q.executor = FakeExecutor(log_path, sleep_s=0.1)
    following = q.submit(demo_spec(6))
    lock_free = q.lock_free()
    ran = q.run_next()
    return {"doomed": q.status(doomed), "lock_free": lock_free, "run_next": ran, "following": q.status(following)}


def corrupt_entry(log_path) -> dict:
    """Truncate the file of a cached result: the next submit recomputes it."""
    executor = FakeExecutor(log_path, sleep_s=0.05)
    q = JobQueue(executor=executor)
    first = q.submit(demo_spec(2))
    q.wait(first, poll_s=0.05)
    key = q.status(first)["tasks"][0]["key"]
    value_file = q.store.result_path(key)
    size_before = value_file.stat().st_size
    with open(value_file, "r+b") as fh:
        fh.truncate(size_before // 2)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        second = q.submit(demo_spec(2))
    st = q.wait(second, poll_s=0.05)
    third = q.submit(demo_spec(2))
    return {"value_file": str(value_file), "size_before": size_before, "size_after_truncate": size_before // 2,
            "warnings": [str(w.message) for w in caught], "second_state": st["state"],
            "second_task": st["tasks"][0]["state"], "executions": len(executor.calls),
            "third_task": q.status(third)["tasks"][0]["state"]}


if __name__ == "__main__":
    sys.exit(main())
