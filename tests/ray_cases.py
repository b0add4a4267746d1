"""The Ray executor on a local Ray instance declared with two GPUs (issue 18): a sweep of 8
tiny tasks never runs more than 2 at once, each task's worker sees its own
CUDA_VISIBLE_DEVICES, its results have the local queue's schema and keys and are cached
(a Ray result is a local cache hit and the reverse); a killed Ray worker gives "crashed"
after one retry; cancel stops the Ray task.

One Ray instance serves the whole module (starting one takes seconds). The tasks are real
workers (PyTorch, 8 px synthetic images, one epoch, compile off); the GPUs are declared, so
each worker is pinned to "its" GPU and computes on the CPU."""
import dataclasses
import json
import os
import signal
import socket
import threading

import pytest
from helpers import alive, needs_framework, wait_for

ray = pytest.importorskip("ray", reason="ray is not installed (pip install -r requirements.txt)")

from benchmarks.timeline import most_at_once  # noqa: E402
from engines import cli  # noqa: E402 - after the skip: nothing here runs without Ray
from engines.runs.queue import JobQueue  # noqa: E402
from engines.runs.rayexec import RayExecutor  # noqa: E402
from engines.runs.result import (  # noqa: E402
    Environment,
    Evaluation,
    InferencePoint,
    ModelInfo,
    RunResult,
    Train,
)
from engines.runs.spec import RunSpec  # noqa: E402
from engines.threads import allowed_cpus, cpu_threads  # noqa: E402

pytestmark = needs_framework("pytorch")

TINY = {"dataset": "synthetic", "resolution": 8, "architecture": "fan_arch1", "frameworks": ["pytorch"], "epochs": 1,
        "batch_sizes": [1], "compile": False, "warmup_iters": 1, "measure_iters": 5,
        "dataset_options": {"train": 64, "val": 16, "test": 16, "classes": 3}}
THREADS = min(2, len(allowed_cpus()))  # LAB_CPU_THREADS for the sweep: more than the 1 Ray sets, where CPUs allow
TASK_S = 600  # a deadline for one tiny task on a loaded machine, never a timing under test


@pytest.fixture(scope="module")
def cluster():
    executor = RayExecutor(num_gpus=2, num_cpus=2, dashboard=False)
    executor.connect()
    yield executor, ray.get_runtime_context().gcs_address
    executor.close()


def device(r: dict) -> str:
    return r["environment"]["worker_env"]["CUDA_VISIBLE_DEVICES"]


def _required(part: type) -> set[str]:
    """The keys a part always writes (runs.result's always() fields): optional ones (a noisy
    verdict, other processes' CPU, notes) come and go with what was measured, on Ray or here."""
    return {f.metadata.get("key", f.name) for f in dataclasses.fields(part)
            if f.metadata.get("always") and not f.metadata.get("flatten")}


def shape(r: dict) -> dict:
    """The schema of a result: the keys it and its parts always have."""
    parts = {"environment": Environment, "model": ModelInfo, "train": Train, "evaluation": Evaluation}
    got = {"top": set(r) & _required(RunResult), "inference": set(r["inference"][0]) & _required(InferencePoint)}
    got.update({name: set(r[name]) & _required(part) for name, part in parts.items()})
    assert all(got.values()), got  # each part has keys to compare
    return got


def but_its_gpu(r: dict) -> dict:
    """The environment the worker ran in (runs.workerenv's variables), but for its GPU."""
    return {k: v for k, v in r["environment"]["worker_env"].items() if k != "CUDA_VISIBLE_DEVICES"}


def test_a_sweep_of_8_tasks_on_ray_shares_the_local_cache(cluster, tmp_path, capsys, monkeypatch):
    executor, address = cluster
    # Ray sets OMP_NUM_THREADS=1 in its workers; the lab's worker must use the lab's one
    # thread setting instead, as it does locally.
    monkeypatch.setenv("LAB_CPU_THREADS", str(THREADS))
    grid = tmp_path / "grid.json"
    grid.write_text(json.dumps({**TINY, "seed": list(range(8))}))
    assert cli.main(["sweep", str(grid), "--ray-address", address, "--json"]) == 0, capsys.readouterr().err[-4000:]
    on_ray = json.loads(capsys.readouterr().out)
    assert len(on_ray) == 8 and {r["status"] for r in on_ray} == {"ok"} and len({r["key"] for r in on_ray}) == 8
    assert most_at_once(on_ray) <= 2  # two GPUs: never more than two tasks at once
    assert {device(r) for r in on_ray} <= {"0", "1"}
    for a in on_ray:  # tasks that ran at the same time ran on different GPUs
        for b in on_ray:
            if a is not b and a["started_at"] < b["finished_at"] and b["started_at"] < a["finished_at"]:
                assert device(a) != device(b)
    assert all(any(n.startswith("ran on Ray node") for n in r["notes"]) for r in on_ray)
    for r in on_ray:  # where it ran, and with what, as a local result says it
        env = r["environment"]
        assert (env["host"], env["gpu_index"], env["device"], env["cpu_threads"]) == (socket.gethostname(), None,
                                                                                      "cpu", THREADS)
        assert env["worker_env"]["OMP_NUM_THREADS"] == env["worker_env"]["LAB_CPU_THREADS"] == str(THREADS)

    # The same sweep on this machine's queue: every result from the cache, key for key.
    assert cli.main(["sweep", str(grid), "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == on_ray

    # The reverse: a task computed by the local queue (two declared GPUs) is a cache hit on Ray.
    monkeypatch.setenv("LAB_GPUS", "0,1")
    spec = RunSpec.from_dict({**TINY, "seed": 8})
    local = JobQueue()
    st = local.wait(local.submit(spec), poll_s=0.2)
    assert st["state"] == "done", st["tasks"][0]["message"]
    here = local.results(st["id"])[0].to_dict()
    assert device(here) == "0" and st["tasks"][0]["lane"] == "gpu0"
    assert shape(here) == shape(on_ray[0])  # the same schema
    assert but_its_gpu(here) == but_its_gpu(on_ray[0])  # the same worker environment
    assert here["environment"]["cpu_threads"] == cpu_threads() == THREADS
    queued_on_ray = JobQueue(executor=executor)
    again = queued_on_ray.status(queued_on_ray.submit(spec))
    assert again["state"] == "done" and again["tasks"][0]["state"] == "cached"
    assert queued_on_ray.results(again["id"])[0].key == here["key"]


def test_a_killed_ray_worker_is_retried_once_then_crashed(cluster, monkeypatch):
    executor, _ = cluster
    monkeypatch.setenv("LAB_TEST_WORKER_FAULT", "hang")  # the worker waits to be killed
    ray_pids, worker_pids = [], []

    def kill_its_ray_worker(event):
        if event.get("ray_pid"):
            ray_pids.append(event["ray_pid"])
        if event.get("event") == "worker_started":
            worker_pids.append(event["pid"])
        if event.get("stage") == "test fault":
            os.kill(ray_pids[-1], signal.SIGKILL)

    job = RunSpec.from_dict(TINY).job("pytorch", 0)
    result = executor(job, on_event=kill_its_ray_worker, timeout_s=TASK_S)
    assert isinstance(result, RunResult) and result.status == "crashed"
    assert "died twice" in result.message and "WorkerCrashedError" in result.message
    assert len(ray_pids) == 2 and ray_pids[0] != ray_pids[1]  # one retry, on a fresh Ray worker
    assert len(worker_pids) == 2
    for pid in worker_pids:  # each worker died with the Ray worker that started it
        wait_for(lambda pid=pid: not alive(pid), timeout_s=30)


def test_cancel_stops_the_ray_task_and_its_worker(cluster, monkeypatch):
    executor, _ = cluster
    monkeypatch.setenv("LAB_TEST_WORKER_FAULT", "hang")
    q = JobQueue(executor=executor)
    job = q.submit(RunSpec.from_dict(TINY))
    runner = threading.Thread(target=q.run_next)
    runner.start()
    wait_for(lambda: q.status(job)["tasks"][0]["progress"].get("stage") == "test fault", timeout_s=TASK_S)
    worker = q._connect().execute("SELECT worker FROM tasks WHERE job_id=?", (job,)).fetchone()[0]
    assert q.cancel(job)
    runner.join(120)
    st = q.status(job)
    assert st["state"] == "cancelled" and st["tasks"][0]["state"] == "cancelled"
    assert "Ray task was stopped" in st["tasks"][0]["message"]
    wait_for(lambda: not alive(int(worker.split(":")[0])), timeout_s=30)
