"""Workers started ahead of their tasks (engines.runs.spares): a spare serves exactly one
task whose environment is its own, a job's workers import together before its first task,
a dead or unwanted spare never costs a result, and none outlives the lab."""
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from helpers import alive, needs_framework, wait_for

from engines.runs import queue as queue_
from engines.runs import spares as spares_
from engines.runs.launcher import run_job
from engines.runs.queue import STARTING_AHEAD, JobQueue, LocalExecutor
from engines.runs.spec import RunSpec
from engines.runs.workerenv import COMPILE, worker_env

pytestmark = pytest.mark.heavy(seconds=50)  # its wall time in the parallel suite: see conftest.py

REPO = spares_.REPO_ROOT
TINY = dict(dataset="synthetic", resolution=8, architecture="fan_arch1", epochs=1, batch_sizes=(1,), warmup_iters=1,
            measure_iters=2, compile=False,  # seconds, not a compile: what is checked is the worker
            dataset_options={"train": 32, "val": 8, "test": 8, "classes": 2, "channels": 1})


IDLE = JobQueue.idle


@pytest.fixture(autouse=True)
def _no_runner_keeps_warm(monkeypatch):
    """Runner threads that earlier tests of this process started (the app's, for a page
    test) keep serving their queues; with LAB_WARM_WORKERS=1 set here their idle passes
    would add spares to the pool under test."""
    monkeypatch.setattr(JobQueue, "idle", lambda self: None)


@pytest.fixture
def pool(monkeypatch):
    monkeypatch.setenv("LAB_WARM_WORKERS", "1")
    pool = spares_.SparePool()
    monkeypatch.setattr(spares_, "SPARES", pool)  # the pool run_job takes from
    yield pool
    pool.close()


def job(framework="pytorch", **changes):
    return RunSpec(**dict(TINY, frameworks=(framework,), **changes)).job(framework, 0)


@needs_framework("pytorch")
def test_a_spare_serves_the_one_task_of_its_environment(pool):
    [spare] = pool.prepare([job()])
    assert spare.ready.is_set() and spare.alive()  # prepare returns once it has imported
    other = run_job(job(precision="fp32"))  # NVIDIA_TF32_OVERRIDE=0: another environment
    assert other.status == "ok" and other.worker_pid != spare.proc.pid and len(pool) == 1
    events = []
    served = run_job(job(), on_event=events.append)
    assert served.status == "ok", served.message
    assert served.worker_pid == spare.proc.pid and len(pool) == 0
    assert events[0]["event"] == "worker_started" and events[0]["started_ahead"] is True
    wait_for(lambda: not alive(spare.proc.pid))  # used once: out of the pool, and gone


def test_a_spare_kept_warm_imports_on_idle_cpu_and_waits_at_the_normal_priority(pool):
    """A real `--idle` spare (of a framework that does not exist, so its import is over at
    once even on a busy machine) says it is ready from a main thread at the normal
    priority, the one its task would run at."""
    spare = spares_.start_spare("nonexistent-framework", worker_env(job()), idle=True)
    try:
        assert spare.proc.args[-1] == "--idle"
        wait_for(spare.ready.is_set, timeout_s=60)
        assert os.sched_getscheduler(spare.proc.pid) == os.SCHED_OTHER  # its main thread
    finally:
        spare.stop()


def test_on_idle_cpu_runs_its_work_on_idle_cpu_and_gives_back_its_error():
    from engines.runs.worker import on_idle_cpu

    seen = []
    on_idle_cpu(lambda: seen.append(os.sched_getscheduler(0)))
    assert seen == [os.SCHED_IDLE] and os.sched_getscheduler(0) == os.SCHED_OTHER

    def fails():
        raise ImportError("no such framework")

    with pytest.raises(ImportError, match="no such framework"):
        on_idle_cpu(fails)


@needs_framework("pytorch")
def test_a_spare_that_died_while_waiting_costs_nothing(pool):
    [spare] = pool.prepare([job()])
    spare.proc.kill()
    spare.proc.wait()
    result = run_job(job())
    assert result.status == "ok" and result.worker_pid != spare.proc.pid


def test_a_spare_ends_with_the_process_that_started_it(tmp_path):
    """Its stdin is the parent's pipe: the parent gone (even killed), the spare reads the
    end of its input and exits, instead of waiting for ever beside the next lab."""
    code = f"""
import os, sys
sys.path.insert(0, {str(REPO)!r})
from engines.runs.spares import start_spare
from engines.runs.workerenv import worker_env
from engines.runs.spec import RunSpec
job = RunSpec(frameworks=("pytorch",)).job("pytorch", 0)
spare = start_spare("nonexistent-framework", worker_env(job))
spare.ready.wait(120)
print(spare.proc.pid, spare.ready.is_set(), flush=True)
os._exit(0)  # no atexit, no close: as if killed
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=180,
                         env={"LAB_CACHE_DIR": str(tmp_path), "PATH": "/usr/bin:/bin"})
    pid, ready = out.stdout.split()
    assert ready == "True", out.stderr  # an unknown framework still waits: its job would report it
    wait_for(lambda: not alive(int(pid)), timeout_s=30)


class _FakeProc:
    """A process stand-in: a real `sleep`, so that stopping it is real."""

    def __init__(self):
        self._p = subprocess.Popen(["sleep", "300"], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                   start_new_session=True)
        self.pid, self.stdin, self.stdout = self._p.pid, self._p.stdin, self._p.stdout

    def poll(self):
        return self._p.poll()

    def wait(self, timeout=None):
        return self._p.wait(timeout)


def _fake_start(started: list, ready: bool):
    def start(framework, env, idle=False):
        spare = spares_.Spare(framework, env, _FakeProc(), folder="/nonexistent")
        spare.idle = idle  # how it was asked to import
        if ready:
            spare.ready.set()
        started.append(spare)
        return spare
    return start


def test_a_job_stops_kept_warm_spares_still_importing_and_waits_for_its_own(monkeypatch):
    """A spare kept warm that is still importing is stopped when a job starts, wanted or
    not: unwanted, it would import beside the job's timings; wanted, it imports on idle CPU,
    which the job must not wait on. The job waits for the ones it starts itself."""
    monkeypatch.setenv("LAB_WARM_WORKERS", "1")
    started: list = []
    pool = spares_.SparePool(start=_fake_start(started, ready=False))
    # Another lane's job (GPU 1) is still importing its own worker: that one is left alone.
    other_lane = spares_.Spare("jax", worker_env(job("jax"), gpu="1"), _FakeProc(), "/nonexistent")
    pool._spares.append(other_lane)
    started.append(other_lane)
    try:
        importing = pool.keep_warm([job("jax")])
        assert importing is None  # one import at a time
        other_lane.ready.set()
        importing = pool.keep_warm([job("jax")])
        assert importing is not None and pool.keep_warm([job("jax"), job()]) is None
        assert importing.idle  # kept warm for no job yet: on idle CPU
        done = threading.Event()
        t = threading.Thread(target=lambda: (pool.prepare([job("jax"), job()], timeout_s=30), done.set()))
        t.start()
        wait_for(lambda: len(started) == 4)
        assert not alive(importing.proc.pid)  # wanted, but importing on idle CPU: replaced
        assert alive(other_lane.proc.pid)
        own = started[2:]
        assert [s.framework for s in own] == ["jax", "pytorch"] and not any(s.idle for s in own)
        assert not done.is_set()  # the job's own spares are still importing: its first task waits
        for spare in own:
            spare.ready.set()
        t.join(10)
        assert done.is_set()
        assert pool.take("pytorch", worker_env(job())) is own[1] and pool.take("jax", worker_env(job("jax"))) is own[0]
    finally:
        pool.close()
        for spare in started:
            spare.stop()


def test_warm_workers_off_means_no_spare(monkeypatch):
    monkeypatch.setenv("LAB_WARM_WORKERS", "0")
    started: list = []
    pool = spares_.SparePool(start=_fake_start(started, ready=True))
    assert pool.prepare([job()]) == [] and pool.keep_warm([job()]) is None
    assert pool.take("pytorch", worker_env(job())) is None and started == []


def test_an_idle_queue_keeps_workers_warm_a_busy_one_does_not(monkeypatch):
    monkeypatch.setenv("LAB_WARM_WORKERS", "1")
    calls = []

    class Executor(LocalExecutor):
        def __call__(self, job, **kwargs):  # never reached: nothing runs here
            raise AssertionError

        @staticmethod
        def keep_warm(gpu=None):
            calls.append(gpu)

    q = JobQueue(executor=Executor())
    q.submit(RunSpec(**dict(TINY, frameworks=("pytorch",))))
    IDLE(q)
    assert calls == []  # a job is queued: its own workers come first
    q.cancel(q.jobs()[0]["id"])
    IDLE(q)
    assert calls == [q.lanes[0].gpu]


@needs_framework("pytorch")
@needs_framework("jax")
def test_the_queue_starts_a_jobs_workers_together_before_its_first_task(pool, monkeypatch):
    prepared = []
    real_prepare = pool.prepare

    def prepare(jobs, gpu=None, timeout_s=spares_.READY_TIMEOUT_S):
        started = real_prepare(jobs, gpu, timeout_s)
        prepared.append((time.time(), [(s.framework, s.proc.pid, s.ready.is_set()) for s in started]))
        return started

    monkeypatch.setattr(pool, "prepare", prepare)
    q = JobQueue()
    job_id = q.submit(RunSpec(**dict(TINY, frameworks=("pytorch", "jax"))))
    stages = []
    real_update = q._update_task

    def update(job_id, idx, **fields):
        if "progress" in fields:
            stages.append(fields["progress"])
        real_update(job_id, idx, **fields)

    monkeypatch.setattr(q, "_update_task", update)
    assert q.run_next()
    st = q.status(job_id)
    assert [t["state"] for t in st["tasks"]] == ["ok", "ok"], st
    [(returned_at, started)] = prepared
    assert [fw for fw, _, _ in started] == ["pytorch", "jax"] and all(ready for *_, ready in started)
    results = q.results(job_id)
    assert sorted(r.worker_pid for r in results) == sorted(pid for _, pid, _ in started)
    assert all(r.started_at >= returned_at for r in results)  # no task began before every import ended
    assert any(STARTING_AHEAD in p for p in stages) and len(pool) == 0


def test_the_workers_kept_warm_are_the_ones_the_default_comparison_takes(monkeypatch):
    """keep_warm's environment per framework is exactly that of the default comparison's
    tasks (the home page's button), so its workers are taken, one per framework."""
    from engines.frameworks import FRAMEWORKS, installed
    from engines.runs.spec import default_request

    monkeypatch.setenv("LAB_WARM_WORKERS", "1")
    monkeypatch.setattr(queue_, "_default_jobs", (float("-inf"), ()))
    started: list = []
    pool = spares_.SparePool(start=_fake_start(started, ready=True))
    monkeypatch.setattr(spares_, "SPARES", pool)
    try:
        for _ in FRAMEWORKS:
            LocalExecutor.keep_warm(gpu=None)
        assert [s.framework for s in started] == [fw for fw in FRAMEWORKS if installed(fw)]
        request = default_request()
        for fw in request.frameworks:
            assert pool.take(fw, worker_env(request.job(fw, 0))) is not None, fw
    finally:
        pool.close()


def test_the_default_jobs_are_built_once_a_minute_and_see_a_new_framework(monkeypatch):
    """The idle runner's pass reads the installed frameworks and builds the default jobs at
    most once per DEFAULT_JOBS_TTL_S, and a framework installed meanwhile is in the next
    answer."""
    from engines import frameworks

    monkeypatch.setattr(queue_, "_default_jobs", (float("-inf"), ()))
    asked: list[str] = []

    def installed(name):
        asked.append(name)
        return name == "pytorch" or (name == "jax" and len(asked) > len(frameworks.FRAMEWORKS))

    monkeypatch.setattr(frameworks, "installed", installed)
    first = queue_.default_jobs(now=1000.0)
    assert [j.framework for j in first] == ["pytorch"] and len(asked) == len(frameworks.FRAMEWORKS)
    assert queue_.DEFAULT_JOBS_TTL_S > 30
    assert queue_.default_jobs(now=1030.0) is first
    assert len(asked) == len(frameworks.FRAMEWORKS)  # nothing read again within the minute
    later = queue_.default_jobs(now=1000.0 + queue_.DEFAULT_JOBS_TTL_S)
    assert [j.framework for j in later] == ["pytorch", "jax"]  # "installed" since: seen
    assert later[0].to_dict() == RunSpec(frameworks=("pytorch", "jax")).job("pytorch", 0).to_dict()

@pytest.mark.parametrize("warm", ["0", "1"])
def test_a_job_stops_the_home_pages_probe_before_its_first_task(monkeypatch, warm):
    """The device probe imports every framework in the background; a job that starts
    meanwhile stops it and waits until it has ended (with or without workers started
    ahead), so that none of its imports shares the cores with a timing."""
    from engines.runs.result import RunResult

    monkeypatch.setenv("LAB_WARM_WORKERS", warm)
    monkeypatch.setattr(LocalExecutor, "prepare", staticmethod(lambda jobs, gpu=None: []))
    probing = []

    class Executor(LocalExecutor):
        def __call__(self, job, key=None, **kwargs):
            probing.append(len(spares_._stoppers))
            return RunResult.failed(job, "error", "not run: a test", key=key)

    q = JobQueue(executor=Executor())
    job_id = q.submit(RunSpec(**dict(TINY, frameworks=("pytorch",))))
    stop = threading.Event()

    def probe():
        with spares_.background_imports(stop.set):
            stop.wait(60)

    prober = threading.Thread(target=probe)
    prober.start()
    wait_for(lambda: spares_._stoppers)
    assert q.run_next()
    prober.join(10)
    assert stop.is_set() and probing == [0] and q.status(job_id)["tasks"][0]["state"] == "error"


def test_a_stopped_probe_says_so_and_the_home_page_probes_again_once_the_queue_is_idle(monkeypatch):
    from engines import doctor
    from labui import doctor as doctor_ui

    calls, busy = [], [True, True, False]

    def probe_all(idle=False):
        assert idle  # the app's probe yields the CPU to everything else
        calls.append(1)
        error = doctor.PROBE_STOPPED if len(calls) == 1 else None
        return [doctor.Probe("pytorch", error=error, device="cpu")]

    monkeypatch.setattr(doctor, "probe_all", probe_all)
    monkeypatch.setattr(doctor_ui, "IDLE_POLL_S", 0.01)
    probing = doctor_ui.Probing(busy=lambda: busy.pop(0) if busy else False)
    wait_for(lambda: probing.done)
    assert probing.error is None and len(calls) == 2 and busy == []
    stop = threading.Event()
    stop.set()
    stopped = doctor.run_probe("pytorch", stop=stop)
    assert stopped.error == doctor.PROBE_STOPPED


def test_a_queued_task_says_its_worker_is_starting_only_while_it_starts(monkeypatch):
    from engines.runs.result import RunResult

    monkeypatch.setenv("LAB_WARM_WORKERS", "1")
    seen = []

    class Executor(LocalExecutor):
        def prepare(self, jobs, gpu=None):
            seen.append(("prepare", [t.get("message") for t in q.status(job_id)["tasks"]]))
            return []

        def __call__(self, job, key=None, **kwargs):
            seen.append((job.framework, [t.get("message") for t in q.status(job_id)["tasks"]]))
            return RunResult.failed(job, "error", "not run: a test", key=key)

    q = JobQueue(executor=Executor())
    job_id = q.submit(RunSpec(**dict(TINY, frameworks=("pytorch", "jax"))))
    assert q.run_next()
    starting = "its worker is starting, with the job's other frameworks"
    assert seen == [("prepare", [starting, starting]), ("pytorch", [None, None]),
                    ("jax", ["not run: a test", None])]


@pytest.mark.parametrize("compile_", [True, False])
def test_a_spare_imports_what_its_tasks_first_compiled_call_would(monkeypatch, compile_):
    """A spare started with a compiling task's environment imports the framework's compiler
    while it waits (PyTorch: TorchDynamo and Inductor, 2.8 s that were the building stage
    of every compiled task); with compile off, nothing more than the framework."""
    import io

    from engines.runs import worker

    asked = []

    class FakeEngine:
        @classmethod
        def import_ahead(cls, compile):
            asked.append(compile)

    env = worker_env(job(compile=compile_))
    for name in COMPILE[False]:  # the task's compile variables, as the spare is started with them
        if name in env:
            monkeypatch.setenv(name, env[name])
        else:
            monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(worker, "pin_cpu_threads", lambda: None)
    monkeypatch.setattr("engines.frameworks.engine_class", lambda name: FakeEngine)
    monkeypatch.setattr(sys, "stdin", io.StringIO('{"job": "j.json", "result": "r.json"}\n'))
    events = io.StringIO()
    args = worker.wait_for_job("pytorch", events)
    assert asked == [compile_] and args.job == "j.json" and "spare_ready" in events.getvalue()


@needs_framework("pytorch")
def test_the_pytorch_engine_imports_its_compiler_only_for_a_compiled_run():
    code = ("import sys; from engines.frameworks.torch_engine import TorchEngine as E; "
            "E.import_ahead(False); off = 'torch._inductor.compile_fx' in sys.modules; "
            "E.import_ahead(True); print(off, 'torch._inductor.compile_fx' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, cwd=REPO)
    assert out.stdout.split() == ["False", "True"], out.stderr


@needs_framework("pytorch")
def test_a_worker_compiles_in_a_fresh_folder_of_its_own_and_removes_it(tmp_path):
    """torch.compile's cache (TorchInductor's, /tmp/torchinductor_USER by default) would
    let a second run load the first's compiled code and report that as its compile time:
    a worker gives it a new folder (workerenv.fresh_compile_cache) before importing the
    compiler, and removes it when it ends. Seen in a spare of a compiled PyTorch task,
    which imports Inductor ahead (Inductor makes its folder on import). A folder left by
    a worker that was killed (a process id that no process has) goes when a worker starts."""
    from engines.runs.workerenv import COMPILE_CACHE_VARIABLE, with_lab_path

    env = with_lab_path(worker_env(job(compile=True)))
    env.pop(COMPILE_CACHE_VARIABLE, None)  # the suite's shared one (conftest): none, as in the lab
    env["TMPDIR"] = str(tmp_path)  # where both the default folder and a fresh one would be made
    root = tmp_path / f"lab-torch-compile-{os.getuid()}"
    (root / "99999999-killed").mkdir(parents=True)  # above any pid_max: no such process
    proc = subprocess.Popen([sys.executable, "-m", "engines.runs.worker", "--spare", "pytorch"], cwd=REPO, env=env,
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert "spare_ready" in proc.stdout.readline(), proc.stderr.read()
        assert [p.name for p in tmp_path.iterdir()] == [root.name]  # no torchinductor_USER
        [mine] = root.iterdir()
        assert mine.name.startswith(f"{proc.pid}-")
        proc.stdin.write("\n")  # not wanted: the spare ends
        proc.stdin.flush()
        assert proc.wait(60) == 0
    finally:
        proc.kill()
    assert list(root.iterdir()) == []


def test_an_operators_compile_cache_is_kept(tmp_path, monkeypatch):
    """TORCHINDUCTOR_CACHE_DIR set by the operator (or by this suite) is a shared cache
    chosen on purpose: kept, and no folder made; unset, each call makes a new, empty one,
    and a live process's folder is left alone."""
    from engines.runs.workerenv import COMPILE_CACHE_VARIABLE, fresh_compile_cache

    chosen = {COMPILE_CACHE_VARIABLE: str(tmp_path / "shared")}
    assert fresh_compile_cache(chosen) is None and chosen == {COMPILE_CACHE_VARIABLE: str(tmp_path / "shared")}
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    monkeypatch.setattr("tempfile.tempdir", None)  # tempfile reads TMPDIR again
    a, b = {}, {}
    made = fresh_compile_cache(a), fresh_compile_cache(b)
    assert made[0] != made[1] and [a[COMPILE_CACHE_VARIABLE], b[COMPILE_CACHE_VARIABLE]] == list(made)
    root = tmp_path / f"lab-torch-compile-{os.getuid()}"
    assert sorted(root.iterdir()) == sorted(map(Path, made)) and not any(Path(made[0]).iterdir())
