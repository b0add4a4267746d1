"""The local queue on a machine with several GPUs (issue 18): one task per GPU at once, each
worker pinned to its GPU, never two on one GPU; the lanes from LAB_GPUS; recovery per lane.

The GPUs are declared with LAB_GPUS on this CPU machine (without NVML the named GPUs are
taken as given). Two tasks "at once" is proved by a barrier that the first two tasks must
pass together, not by timing: a queue that ran one task at a time would break it."""
import collections
import dataclasses
import threading
from pathlib import Path

import pytest
import queue_fakes as qs
from helpers import wait_for

from engines import machine
from engines.runs import lanes
from engines.runs.followers import Follower
from engines.runs.queue import JobQueue, QueueFull
from engines.runs.workerenv import worker_env
from engines.settings import SettingsError, gpus

REPO = Path(__file__).resolve().parent.parent
BARRIER_S = 60  # a barrier that is never met fails the test after this long


class GpuExecutor(qs.FakeExecutor):
    """The fake executor, recording the GPU each task was given and how many tasks ran at
    once, in all and per GPU. Each pair of tasks meets at a barrier before working, so a
    queue that runs fewer than two at once fails (BrokenBarrierError) instead of passing."""

    def __init__(self, meet: int = 2, **kw):
        super().__init__(**kw)
        self.barrier = threading.Barrier(meet, timeout=BARRIER_S) if meet > 1 else None
        self.guard = threading.Lock()
        self.now: collections.Counter = collections.Counter()
        self.peak_total = 0
        self.peak_per_gpu: collections.Counter = collections.Counter()
        self.gpus: list[str | None] = []

    def __call__(self, job, *, gpu=None, **kw):
        with self.guard:
            self.now[gpu] += 1
            self.gpus.append(gpu)
            self.peak_total = max(self.peak_total, sum(self.now.values()))
            self.peak_per_gpu[gpu] = max(self.peak_per_gpu[gpu], self.now[gpu])
        try:
            if self.barrier is not None:
                self.barrier.wait()
            return super().__call__(job, gpu=gpu, **kw)
        finally:
            with self.guard:
                self.now[gpu] -= 1


def follower(name: str) -> Follower:
    return dataclasses.replace(Follower.this_process(), token=name, submitter=name)


@pytest.fixture
def two_gpus(monkeypatch):
    monkeypatch.setenv("LAB_GPUS", "0,1")
    monkeypatch.setattr(machine, "read_gpus_once", lambda: ([], None, None, "no NVIDIA driver"))


def test_one_job_runs_two_tasks_at_once_one_per_gpu(two_gpus):
    ex = GpuExecutor(sleep_s=0.05)
    q = JobQueue(executor=ex)
    assert [lane.name for lane in q.lanes] == ["gpu0", "gpu1"]
    job = q.submit(qs.demo_spec(1, repeats=4))
    st = q.wait(job, poll_s=0.02)
    assert st["state"] == "done" and [t["state"] for t in st["tasks"]] == ["ok"] * 4
    assert ex.peak_total == 2 and set(ex.peak_per_gpu.values()) == {1}  # two at once, never two on one GPU
    assert sorted(set(ex.gpus)) == ["0", "1"]
    assert {t["lane"] for t in st["tasks"]} == {"gpu0", "gpu1"}  # each task records where it ran


def test_two_submitters_jobs_run_side_by_side_on_two_gpus(two_gpus):
    ex = GpuExecutor(sleep_s=0.05)
    alice, bob = follower("alice"), follower("bob")
    qa, qb = JobQueue(executor=ex), JobQueue(executor=ex)  # two processes' queues, one database
    ja, jb = qa.submit(qs.demo_spec(1), follower=alice), qb.submit(qs.demo_spec(2), follower=bob)
    states = {}
    waiters = [threading.Thread(target=lambda q=q, j=j, f=f: states.setdefault(j, q.wait(j, poll_s=0.02, follower=f)))
               for q, j, f in ((qa, ja, alice), (qb, jb, bob))]
    for w in waiters:
        w.start()
    for w in waiters:
        w.join(BARRIER_S * 2)
    assert states[ja]["state"] == states[jb]["state"] == "done"
    assert ex.peak_total == 2 and max(ex.peak_per_gpu.values()) == 1
    assert {states[ja]["lane"], states[jb]["lane"]} == {"gpu0", "gpu1"}


def test_a_sweeps_own_jobs_run_side_by_side(two_gpus):
    """One waiter (a CLI running a sweep) runs its own later jobs on the free GPU."""
    ex = GpuExecutor(sleep_s=0.05)
    q = JobQueue(executor=ex)
    jobs = [q.submit(qs.demo_spec(e)) for e in (1, 2, 3, 4)]
    for job in jobs:
        assert q.wait(job, poll_s=0.02)["state"] == "done"
    assert ex.peak_total == 2 and max(ex.peak_per_gpu.values()) == 1 and len(ex.calls) == 4


def test_one_gpu_is_one_task_at_a_time(monkeypatch):
    monkeypatch.setenv("LAB_GPUS", "1")
    monkeypatch.setattr(machine, "read_gpus_once", lambda: ([], None, None, "no NVIDIA driver"))
    ex = GpuExecutor(meet=1, sleep_s=0.02)
    q = JobQueue(executor=ex)
    st = q.wait(q.submit(qs.demo_spec(1, repeats=3)), poll_s=0.02)
    assert st["state"] == "done" and ex.peak_total == 1 and ex.gpus == ["1", "1", "1"]


def test_a_cpu_machine_keeps_one_lane_and_passes_no_gpu():
    ex = GpuExecutor(meet=1, sleep_s=0.02)
    q = JobQueue(executor=ex)
    assert [(lane.name, lane.lock_name) for lane in q.lanes] == [("cpu", "gpu.lock")]
    st = q.wait(q.submit(qs.demo_spec(1, repeats=2)), poll_s=0.02)
    assert st["state"] == "done" and ex.peak_total == 1 and ex.gpus == [None, None]


def test_a_task_being_computed_on_another_gpu_waits_and_is_served_from_the_cache(two_gpus):
    """Job A computes PyTorch's task; job B (PyTorch and JAX) starts meanwhile on the other
    GPU: its PyTorch task waits (JAX runs first) and is then served from A's result."""
    jax_started = threading.Event()

    class Ex(qs.FakeExecutor):
        def __call__(self, job, **kw):
            if job.framework == "jax":
                jax_started.set()
            else:
                assert jax_started.wait(BARRIER_S), "job B never ran its JAX task beside A's PyTorch one"
            return super().__call__(job, **kw)

    ex = Ex(sleep_s=0.05)
    qa, qb = JobQueue(executor=ex), JobQueue(executor=ex)
    a = qa.submit(qs.demo_spec(1), follower=follower("alice"))
    runner_a = threading.Thread(target=qa.run_next)
    runner_a.start()
    wait_for(lambda: qa.status(a)["tasks"][0]["state"] == "running")
    b = qb.submit(qs.demo_spec(1).replace(frameworks=("pytorch", "jax")), follower=follower("bob"))
    st = qb.wait(b, poll_s=0.02, follower=follower("bob"))
    runner_a.join(BARRIER_S)
    assert st["state"] == "done" and [t["state"] for t in st["tasks"]] == ["cached", "ok"]
    assert [c["framework"] for c in ex.calls].count("pytorch") == 1


def test_a_job_on_a_free_lane_is_recovered_one_on_a_held_lane_is_not(two_gpus):
    q = JobQueue(executor=qs.FakeExecutor(sleep_s=0.02))
    job = q.submit(qs.demo_spec(1))
    with q._tx() as con:  # as if a runner on GPU 1 had claimed it
        con.execute("UPDATE jobs SET state='running', runner_pid=1, runner='1:0', lane='gpu1' WHERE id=?", (job,))
        con.execute("UPDATE tasks SET state='running', lane='gpu1' WHERE job_id=?", (job,))
    held = lanes.try_take(q.lanes[1], q.path)  # ... and were still alive, holding GPU 1
    assert held is not None
    q.run_next()  # takes GPU 0: the job on GPU 1 has a live runner
    assert q.status(job)["state"] == "running"
    held.release()  # that runner dies
    assert q.wait(job, poll_s=0.02)["state"] == "done"
    assert q.status(job)["tasks"][0]["attempts"] == 1


class RayLikeExecutor(qs.FakeExecutor):
    """What the queue sees of runs.rayexec.RayExecutor (kind "ray", a lane per GPU of the
    cluster), without Ray."""

    kind = "ray"

    def lanes(self):
        return [lanes.Lane(f"ray{i}", f"ray-{i}.lock") for i in range(2)]


def test_a_ray_job_whose_runner_died_is_recovered_by_a_ray_runner_only():
    on_ray, local = JobQueue(executor=RayLikeExecutor(sleep_s=0.02)), JobQueue(executor=qs.FakeExecutor())
    job = on_ray.submit(qs.demo_spec(1))
    with on_ray._tx() as con:  # as if a Ray runner had claimed it on its lane ray1, then died
        con.execute("UPDATE jobs SET state='running', runner_pid=1, runner='1:0', lane='ray1' WHERE id=?", (job,))
        con.execute("UPDATE tasks SET state='running', lane='ray1' WHERE job_id=?", (job,))
    assert not local.run_next()  # this machine's queue neither recovers a Ray job nor runs it
    assert on_ray.status(job)["state"] == "running"
    assert on_ray.wait(job, poll_s=0.02)["state"] == "done"  # a Ray runner does, the task once more
    assert on_ray.status(job)["tasks"][0]["attempts"] == 1 and len(on_ray.executor.calls) == 1
    assert local.executor.calls == []


def test_ray_jobs_count_against_the_same_caps_and_owners(monkeypatch):
    """Issue 14's rules hold for a queue on Ray (the real executor, never connected:
    submitting and cancelling need no cluster): one submitter's queued jobs are counted
    wherever they run, and only an owner cancels."""
    from engines.runs.rayexec import RayExecutor

    monkeypatch.setenv("LAB_MAX_QUEUED_JOBS", "2")
    local, on_ray = JobQueue(executor=qs.FakeExecutor()), JobQueue(executor=RayExecutor())
    alice, someone = follower("alice"), follower("someone with the link")
    local.submit(qs.demo_spec(1), follower=alice)
    job = on_ray.submit(qs.demo_spec(2), follower=alice)
    with pytest.raises(QueueFull, match="LAB_MAX_QUEUED_JOBS=2"):
        on_ray.submit(qs.demo_spec(3), follower=alice)
    assert on_ray.follow(job, someone) == "watcher" and not on_ray.cancel(job, someone)
    assert on_ray.status(job)["state"] == "queued"
    assert on_ray.cancel(job, alice) and on_ray.status(job)["state"] == "cancelled"


def test_lab_gpus_is_read_and_checked(monkeypatch):
    monkeypatch.setenv("LAB_GPUS", "0, 2")
    assert gpus() == (0, 2)
    monkeypatch.setenv("LAB_GPUS", "none")
    assert gpus() == ()
    for bad in ("a,b", "1,1", "-1", ","):
        monkeypatch.setenv("LAB_GPUS", bad)
        with pytest.raises(SettingsError, match="LAB_GPUS"):
            gpus()


def test_the_lanes_follow_the_gpus_found(monkeypatch):
    found = [machine.GpuInfo(name="NVIDIA H200", memory_bytes=1, index=i) for i in range(3)]
    monkeypatch.setattr(machine, "read_gpus_once", lambda: (found, "570", "12.8", None))
    monkeypatch.delenv("LAB_GPUS", raising=False)
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    assert [lane.gpu for lane in lanes.local_lanes()] == ["0", "1", "2"]
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "2,0")
    assert [lane.name for lane in lanes.local_lanes()] == ["gpu2", "gpu0"]
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    assert [lane.name for lane in lanes.local_lanes()] == ["cpu"]
    monkeypatch.setenv("LAB_GPUS", "1")
    assert [lane.name for lane in lanes.local_lanes()] == ["gpu1"]
    monkeypatch.setenv("LAB_GPUS", "none")
    assert [lane.name for lane in lanes.local_lanes()] == ["cpu"]
    monkeypatch.setenv("LAB_GPUS", "0,5")
    with pytest.raises(SettingsError, match="LAB_GPUS names GPU 5"):
        lanes.local_lanes()


def test_the_worker_is_pinned_to_its_lanes_gpu():
    job = qs.demo_spec(1).job("pytorch", 0)
    assert worker_env(job, {"CUDA_VISIBLE_DEVICES": "0,1"}, gpu="1")["CUDA_VISIBLE_DEVICES"] == "1"
    assert worker_env(job, {}, gpu=None)["CUDA_VISIBLE_DEVICES"] == "0"


# -- choosing the executor (no Ray needed) ------------------------------------------------------
def test_the_cli_refuses_a_ray_address_without_ray_and_a_malformed_one(tmp_path, capsys, monkeypatch):
    from engines import cli

    args = ["run", "--dataset", "synthetic", "--size", "8", "--arch", "fan_arch1", "--frameworks", "pytorch"]
    assert cli.main([*args, "--executor", "local", "--ray-address", "10.0.0.5:6379"]) == 2
    assert "goes with --executor ray" in capsys.readouterr().err
    assert cli.main([*args, "--ray-address", "10.0.0.5"]) == 2
    assert "--ray-address must be HOST:PORT" in capsys.readouterr().err
    monkeypatch.setenv("LAB_EXECUTOR", "slurm")
    assert cli.main(args) == 2
    assert "LAB_EXECUTOR must be one of local, ray" in capsys.readouterr().err


def test_without_ray_the_ray_executor_says_how_to_get_it(monkeypatch, capsys):
    import sys

    from engines import cli
    from engines.runs.rayexec import RayExecutor, RayUnavailable

    monkeypatch.setitem(sys.modules, "ray", None)  # as if it were not installed
    with pytest.raises(RayUnavailable, match="Ray is not installed"):
        RayExecutor().connect()
    args = ["run", "--dataset", "synthetic", "--size", "8", "--arch", "fan_arch1", "--frameworks", "pytorch"]
    assert cli.main([*args, "--executor", "ray"]) == 1
    assert "error: Ray is not installed" in capsys.readouterr().err


def test_a_ray_task_that_inherited_sigint_ignored_can_still_be_cancelled():
    """ray.cancel interrupts a task through CPython's SIGINT handler: a Ray worker started from
    a background app (SIGINT ignored, inherited) must install it again, or cancel waits for the
    forced kill (the task stayed running in tests/ray_cases.py run from `pytest &`)."""
    import signal

    from engines.runs.rayexec import _let_cancel_interrupt

    before = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        _let_cancel_interrupt()
        assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    finally:
        signal.signal(signal.SIGINT, before)


def test_ray_stays_out_of_the_app_and_the_local_cli():
    """Only the Ray executor imports ray: the app's pages and the CLI's local path never do."""
    import subprocess
    import sys

    code = """
import sys
from streamlit.testing.v1 import AppTest
for page in ("app.py", "pages/run.py", "pages/runs.py"):
    AppTest.from_file(page, default_timeout=120).run()
from engines import cli
from engines.runs.queue import JobQueue
args = cli.build_parser().parse_args(["sweep", "grid.yaml"])
assert cli.executor_choice(args) == ("local", None)
JobQueue().lanes
assert "ray" not in sys.modules, "ray was imported"
print("no ray")
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600, cwd=REPO)
    assert out.returncode == 0 and "no ray" in out.stdout, out.stderr[-3000:]


def test_the_runs_page_filters_by_machine(monkeypatch):
    """Results name where they ran (environment.host, gpu_index); the Runs page filters on it."""
    from sample_results import make_result
    from streamlit.testing.v1 import AppTest

    import labui.backend
    from engines.runs.store import ResultStore

    monkeypatch.setattr(labui.backend, "start_runner", lambda: None)
    store = ResultStore()
    for i, (host, gpu) in enumerate((("node-a", 0), ("node-a", 1), ("node-b", 0))):
        r = make_result("pytorch", seed=i)
        r["environment"].update(host=host, gpu_index=gpu)
        store.put(f"run-{i}", r)
    at = AppTest.from_file(str(REPO / "app.py"), default_timeout=90).run()
    at.switch_page("pages/runs.py").run()
    assert not at.exception, at.exception
    machines = at.multiselect(key="f_host")
    assert machines.options == ["node-a", "node-b"]
    machines.set_value(["node-b"]).run()
    table = at.dataframe[0].value
    assert list(table["host"]) == ["node-b"] and list(table["gpu_index"]) == [0]
