"""The Ray executor: each (spec, framework) task of the queue as a Ray task on a cluster.

    executor = RayExecutor(address="10.0.0.5:6379")   # None: a local Ray instance
    JobQueue(executor=executor)                        # the queue runs its jobs on Ray

Why Ray and not a scheduler of our own: Ray already places tasks on GPUs across machines
(a task asks for one GPU and gets CUDA_VISIBLE_DEVICES set to it), cancels them, notices
dead workers and nodes, and has a dashboard (DESIGN.md, "Examples to learn from").

What a task does on its node (`_task`, a Ray generator task): it runs the same launcher as
the local queue (runs.launcher.run_job: a fresh `python -m engines.runs.worker` with the
job's environment set before the interpreter starts), so every toggle applies exactly as
it does locally, and it yields the worker's progress events as they come, then the result
and the trained weights' files. Nothing but JSON-able dicts and bytes crosses the wire.

- Keys: the queue keys a task with the submitting machine's fingerprint, so a Ray result
  is a local cache hit and the reverse wherever the node is the same kind of machine (the
  local Ray instance, a cluster of identical workstations). A node of another kind (GPU,
  driver, CUDA, CPU, Python, versions) keys its result with its own fingerprint instead,
  and the result says so: it is never served as this machine's.
- Environment: the node's launcher builds the worker's environment as it does here
  (runs.workerenv, from the job and the lab's LAB_* settings, which travel with the task):
  the worker sees the GPU Ray gave the task, and the lab's one CPU thread count
  (LAB_CPU_THREADS, part of the key) replaces the OMP_NUM_THREADS=1 Ray sets in its workers.
- Weights travel as bytes: cached weights to the node, trained weights back into the
  store, so a node needs no shared folder.
- Resources: on a cluster with GPUs each task asks for one GPU (Ray pins it); on a CPU
  cluster for the CPUs of its smallest node, so a node runs one task at a time, as timing
  needs. The queue's lanes (runs.lanes) are the cluster's capacity.
- Failures: a Ray worker or node that dies (WorkerCrashedError, NodeDiedError, Ray's
  out-of-memory killer, ...) is retried once on a fresh task, then the task is "crashed"
  with both reasons. Ray's own retries are off (max_retries=0) so that the lab knows and
  says what happened. A worker started by a killed Ray worker dies with it (the kernel's
  parent-death signal: runs.worker.die_with_parent).
- Cancel: ray.cancel (the task's KeyboardInterrupt stops its worker's process group),
  then a forced cancel if it has not ended within CANCEL_GRACE_S.
- On the submitting machine itself (a local Ray instance, or a head node that also runs
  the app), a task holds the local queue's lock of its GPU while it runs, so a Ray task
  and a local one never share a GPU.

`ray` is imported only here, and only when a RayExecutor connects: the app and the CLI
without `--executor ray` never import it.
"""
from __future__ import annotations

import contextlib
import os
import queue
import shutil
import signal
import socket
import tempfile
import threading
import time
from pathlib import Path

from engines.paths import REPO_ROOT, cache_dir
from engines.runs import lanes as lanes_
from engines.runs.result import RunResult
from engines.runs.spec import RunSpec, environment_fingerprint

HOST = socket.gethostname()
POLL_S = 0.2  # how often the driver looks at the task's stream, its cancel flag and its deadline
CANCEL_GRACE_S = 10.0  # after ray.cancel, how long before the task is cancelled by force
START_GRACE_S = 300.0  # beyond LAB_TASK_TIMEOUT_S: time to be placed and to start (the node enforces the limit)
ATTEMPTS = 2  # a task whose Ray worker or node died is run once more
EXCLUDES = ["cache/", ".git/", ".venv/", "test-artifacts/", "__pycache__/", "*.pyc", "reference/"]


class RayUnavailable(RuntimeError):
    """Ray is not installed, or the cluster cannot be reached."""


def lab_environment() -> dict[str, str]:
    """The lab's settings for the node's launcher and worker: every LAB_* variable of this
    process, with the cache folder made absolute (results never go there, but data and the
    worker's scratch files do: on a local instance they are the ones this machine uses)."""
    env = {k: v for k, v in os.environ.items() if k.startswith("LAB_")}
    env["LAB_CACHE_DIR"] = str(cache_dir().resolve())
    return env


class RayExecutor:
    """run_job's contract (runs.launcher), with each task a Ray task (see module doc)."""

    kind = "ray"
    rekeys = True  # a node of another kind keys its result with its own fingerprint

    def __init__(self, address: str | None = None, *, num_gpus: int | None = None, num_cpus: int | None = None,
                 dashboard: bool | None = None, queue_folder: str | os.PathLike | None = None):
        self.address = address
        self.local_resources = {k: v for k, v in (("num_gpus", num_gpus), ("num_cpus", num_cpus)) if v is not None}
        self.dashboard = dashboard
        self._queue_folder = Path(queue_folder) if queue_folder is not None else None
        self._started = False  # we started the Ray instance (and stop it in close())
        self._remote = None
        self._resources: dict | None = None
        self._dashboard: str | None = None
        self._guard = threading.Lock()

    @property
    def queue_folder(self) -> Path:
        """The local queue's folder (its GPU locks), read when a task starts."""
        return self._queue_folder if self._queue_folder is not None else cache_dir() / "queue"

    # -- the cluster ---------------------------------------------------------------------
    def connect(self) -> None:
        """Connect to the cluster at `address`, or start a local Ray instance; the lab's
        code travels with each task (runtime_env working_dir), so a node runs the code of
        the submitting side. Raises RayUnavailable with the reason."""
        with self._guard:
            if self._remote is not None:
                return
            try:
                import ray
            except ImportError:
                raise RayUnavailable("Ray is not installed: pip install -r requirements.txt "
                                     "(it pins ray[default])") from None
            if not ray.is_initialized():
                kwargs = {"address": self.address or os.environ.get("RAY_ADDRESS") or "local",
                          "runtime_env": {"working_dir": str(REPO_ROOT), "excludes": EXCLUDES},
                          "namespace": "lab", "log_to_driver": False, "logging_level": "warning"}
                if kwargs["address"] == "local":
                    kwargs.update(self.local_resources)
                    if self.dashboard is not None:
                        kwargs["include_dashboard"] = self.dashboard
                try:
                    context = ray.init(**kwargs)
                except Exception as e:  # noqa: BLE001 - ConnectionError, a bad address, a version mismatch
                    where = f"the Ray cluster at {self.address}" if self.address else "a local Ray instance"
                    hint = ("; a cluster with token authentication also needs RAY_AUTH_MODE=token here and its "
                            "token (README, \"More than one GPU\")" if self.address and not os.environ.get(
                                "RAY_AUTH_MODE") else "")
                    raise RayUnavailable(f"could not connect to {where}: {type(e).__name__}: "
                                         f"{(str(e).strip().splitlines() or [''])[0]}{hint}") from None
                self._started = True
                self._dashboard = getattr(context, "dashboard_url", None) or None
            self._remote = ray.remote(_task)

    def close(self) -> None:
        """Stop the Ray instance if this executor started it (a cluster goes on)."""
        if self._started:
            import ray

            ray.shutdown()
            self._started = False
            self._remote = None

    def resources(self) -> dict:
        """What one task asks for: a GPU where the cluster has GPUs, else the CPUs of its
        smallest node. Read once per connection."""
        self.connect()
        if self._resources is None:
            import ray

            gpus = int(ray.cluster_resources().get("GPU", 0))
            if gpus:
                self._resources = {"num_gpus": 1, "num_cpus": 1, "lanes": gpus}
            else:
                cpus = [n["Resources"]["CPU"] for n in ray.nodes() if n.get("Alive") and n["Resources"].get("CPU")]
                self._resources = {"num_gpus": 0, "num_cpus": min(cpus) if cpus else 1, "lanes": max(1, len(cpus))}
        return self._resources

    def lanes(self) -> list[lanes_.Lane]:
        """One lane per task the cluster runs at once (the queue keeps that many in flight)."""
        return [lanes_.Lane(f"ray{i}", f"ray-{i}.lock") for i in range(self.resources()["lanes"])]

    def dashboard_url(self) -> str | None:
        """Ray's dashboard of the instance this executor started (a cluster's is the head
        node's, port 8265 unless `ray start --dashboard-port` says otherwise)."""
        url = self._dashboard
        return f"http://{url}" if url and not url.startswith("http") else url

    # -- one task --------------------------------------------------------------------------
    def __call__(self, job: RunSpec, *, key=None, on_event=None, timeout_s=None, weights_in=None, weights_out=None,
                 cancel: threading.Event | None = None, **_) -> RunResult:
        on_event = on_event or (lambda event: None)
        job = (job if isinstance(job, RunSpec) else RunSpec.from_dict(job)).as_job()
        framework = job.framework
        key = key or job.job_key(environment_fingerprint(framework))
        started = time.time()
        try:
            self.connect()
            resources = self.resources()
        except RayUnavailable as e:
            return _failed(job, key, "error", str(e), started)
        shipped = _read_weights(weights_in)
        failures: list[str] = []
        for attempt in range(1, ATTEMPTS + 1):
            outcome = self._attempt(job, key, resources, shipped, weights_out, timeout_s, cancel, on_event, attempt)
            if isinstance(outcome, RunResult):
                if failures:
                    outcome.notes = [*(outcome.notes or []), f"run a second time on Ray: {failures[0]}"]
                    outcome.message = _join(outcome.message, f"retried once on Ray ({failures[0]})")
                return outcome
            failures.append(outcome)
            if attempt < ATTEMPTS:
                on_event({"event": "stage", "stage": f"retrying on Ray ({outcome})", "framework": framework})
        return _failed(job, key, "crashed", "the Ray task died twice, so it is not run a third time: first "
                                            f"{failures[0]}; then {failures[1]}", started)

    def _attempt(self, job: RunSpec, key, resources, shipped, weights_out, timeout_s, cancel, on_event,
                 attempt) -> RunResult | str:
        """One Ray task: its result, or why its Ray worker or node died (a string)."""
        import ray
        from ray import exceptions as rex

        framework = job.framework
        stream = self._remote.options(
            num_gpus=resources["num_gpus"], num_cpus=resources["num_cpus"], max_retries=0,
            name=f"lab {framework} seed {job.seed}", runtime_env={"env_vars": lab_environment()},
        ).remote(job.to_dict(), key, timeout_s, shipped, Path(weights_out).name if weights_out else None,
                 {"host": HOST, "folder": str(self.queue_folder)})
        submitted = time.time()
        on_event({"event": "stage", "stage": "waiting for Ray to place it", "framework": framework})
        deadline = submitted + timeout_s + START_GRACE_S if timeout_s else None
        node = {}
        while True:
            if cancel is not None and cancel.is_set():
                return self._cancel(job, key, stream, submitted, node)
            if deadline is not None and time.time() > deadline:
                ray.cancel(stream, force=True)
                return _failed(job, key, "timed_out", f"no result from Ray within {timeout_s:g} s (+ "
                                                      f"{START_GRACE_S:g} s to be placed); the task was stopped",
                               submitted, node)
            ready, _ = ray.wait([stream], timeout=POLL_S)
            if not ready:
                continue
            try:
                item = ray.get(next(stream))
            except StopIteration:
                return "the Ray task ended without a result"
            except rex.TaskCancelledError:
                return _failed(job, key, "cancelled", "cancelled; the Ray task was stopped", submitted, node)
            except (rex.RayTaskError, rex.RuntimeEnvSetupError, rex.TaskUnschedulableError) as e:
                return _failed(job, key, "error", f"the Ray task failed: {_first_line(e)}", submitted, node)
            except rex.RayError as e:  # the worker or its node died, or Ray's memory monitor killed it
                where = f" on {node['host']}" if node.get("host") else ""
                return f"attempt {attempt}: {type(e).__name__}{where}: {_first_line(e)}"
            if "result" in item:
                return self._finish(job, key, item, weights_out, node)
            if item.get("event") == "ray_started":
                node = item
                gpu = ",".join(item["gpu_ids"]) or "none"
                on_event({"event": "stage", "stage": f"on Ray node {item['host']} (GPU {gpu})", "framework": framework,
                          "host": item["host"], "gpu_ids": item["gpu_ids"], "ray_pid": item["pid"],
                          "attempt": attempt})
            else:
                on_event(_local_event(item, node))

    def _cancel(self, job, key, stream, submitted, node) -> RunResult:
        """ray.cancel, and a forced one if the task has not ended within CANCEL_GRACE_S."""
        import ray
        from ray import exceptions as rex

        ray.cancel(stream)
        end = time.monotonic() + CANCEL_GRACE_S
        while time.monotonic() < end:
            ready, _ = ray.wait([stream], timeout=POLL_S)
            if ready:
                try:
                    ray.get(next(stream))
                except (StopIteration, rex.RayError):
                    break
        else:
            ray.cancel(stream, force=True)
        return _failed(job, key, "cancelled", "cancelled; the Ray task was stopped", submitted, node)

    def _finish(self, job: RunSpec, key: str, item: dict, weights_out, node: dict) -> RunResult:
        """The node's result: its weights written into the store, keyed by the node's
        fingerprint when the node is another kind of machine."""
        result = RunResult.from_dict(item["result"])
        expected, theirs = environment_fingerprint(job.framework), node.get("fingerprint")
        result.notes = [*(result.notes or []), f"ran on Ray node {node.get('host', '?')} "
                                               f"(GPU {','.join(node.get('gpu_ids') or []) or 'none'})"]
        if theirs and theirs != expected:
            result.key = job.job_key(theirs)
            result.weights_file = None  # weights trained on that machine are not this machine's training
            result.notes.append(f"the node's machine differs from the submitting one's (fingerprint {theirs}, here "
                                f"{expected}): stored under its own key {result.key}, not served as this machine's")
            return result
        result.key = key
        files = item.get("weights") or {}
        if weights_out and files and result.weights_file:
            folder = Path(weights_out).parent
            for name, data in files.items():
                _write_atomic(folder / Path(name).name, data)
            result.weights_file = str(folder / Path(result.weights_file).name)
        else:
            result.weights_file = None
        return result


# -- the task, on its node ----------------------------------------------------------------
def _let_cancel_interrupt() -> None:
    """ray.cancel interrupts a running task the way Ctrl-C does (CPython's SIGINT handler), and
    a process that inherited SIGINT as ignored never sees it: a local Ray instance started by
    an app or CLI run in the background (`nohup ... &`, a shell without job control) gives its
    workers that disposition, the cancel waited for the forced kill, and the task stayed running."""
    if threading.current_thread() is threading.main_thread() and signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)


def _task(job: dict, key: str, timeout_s, weights_in: dict | None, weights_stem: str | None, submitter: dict):
    """A Ray generator task: where it runs, then the worker's events, then {"result",
    "weights"}. Runs the launcher (a fresh worker process) in a thread; ray.cancel raises
    KeyboardInterrupt here, which stops that worker's process group before the task ends."""
    import ray

    from engines.runs.launcher import run_job

    _let_cancel_interrupt()
    framework = (job.get("frameworks") or [None])[0]
    gpu_ids = [str(g) for g in ray.get_gpu_ids()]
    yield {"event": "ray_started", "host": HOST, "pid": os.getpid(), "gpu_ids": gpu_ids,
           "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES"),
           "fingerprint": environment_fingerprint(framework)}
    tmp = tempfile.mkdtemp(prefix="lab-ray-")
    with _local_gpu_lock(submitter, gpu_ids) as waited:
        if waited:
            yield {"event": "stage", "stage": "waited for this machine's local queue to free the GPU"}
        try:
            w_in = _write_weights(weights_in, Path(tmp, "in"))
            w_out = str(Path(tmp, "out", weights_stem)) if weights_stem else None
            events: queue.Queue = queue.Queue()
            cancel = threading.Event()
            box: dict = {}

            def run():
                try:
                    box["result"] = run_job(job, key=key, on_event=events.put, timeout_s=timeout_s, weights_in=w_in,
                                            weights_out=w_out, cancel=cancel, die_with_parent=True)
                finally:
                    events.put(None)

            thread = threading.Thread(target=run, name="lab-ray-launcher", daemon=True)
            thread.start()
            try:
                while True:
                    try:
                        event = events.get(timeout=POLL_S)
                    except queue.Empty:
                        continue
                    if event is None:
                        break
                    yield event
            except BaseException:  # ray.cancel (KeyboardInterrupt), or the generator closed
                cancel.set()
                thread.join(CANCEL_GRACE_S)
                raise
            thread.join()
            result = box["result"]
            yield {"result": result.to_dict(), "weights": _read_folder(Path(tmp, "out")) if result.weights_file else {}}
        finally:
            shutil.rmtree(tmp, ignore_errors=True)


@contextlib.contextmanager
def _local_gpu_lock(submitter: dict, gpu_ids: list[str]):
    """On the submitting machine, hold the local queue's lane of this task's GPU (the CPU
    lane without one) while the task runs: a Ray task and a local task never share a
    device. Elsewhere (another node) nothing to hold. Yields whether it had to wait."""
    folder = Path(submitter.get("folder") or "")
    if submitter.get("host") != HOST or not folder.is_dir() or len(gpu_ids) > 1:
        yield False
        return
    lane = lanes_.Lane(f"gpu{gpu_ids[0]}", f"gpu-{gpu_ids[0]}.lock") if gpu_ids else lanes_.Lane("cpu",
                                                                                                    lanes_.CPU_LOCK)
    held, waited = lanes_.try_take(lane, folder), False
    while held is None:
        waited = True
        time.sleep(POLL_S)
        held = lanes_.try_take(lane, folder)
    try:
        yield waited
    finally:
        held.release()


# -- small helpers ------------------------------------------------------------------------
def _local_event(event: dict, node: dict) -> dict:
    """A node's event for the queue here: a worker pid means a process of this machine
    only when the node is this machine (the queue may stop an orphaned one by pid)."""
    if event.get("event") == "worker_started" and node.get("host") != HOST:
        return {**event, "pid": None, "node_pid": event.get("pid")}
    return event


def _read_weights(weights_in: str | None) -> dict | None:
    """The files of cached weights (a format may write several: TensorFlow's checkpoint
    has .index and .data files), by name, for the node."""
    if not weights_in:
        return None
    path = Path(weights_in)
    files = {p.name: p.read_bytes() for p in path.parent.glob(f"{path.name}*") if p.is_file()}
    return {"name": path.name, "files": files} if files else None


def _write_weights(shipped: dict | None, folder: Path) -> str | None:
    if not shipped:
        return None
    folder.mkdir(parents=True, exist_ok=True)
    for name, data in shipped["files"].items():
        (folder / Path(name).name).write_bytes(data)
    return str(folder / Path(shipped["name"]).name)


def _read_folder(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.glob("*")) if p.is_file()} if folder.is_dir() else {}


def _write_atomic(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def _failed(job: RunSpec, key, status: str, message: str, started: float, node: dict | None = None) -> RunResult:
    """A result made here when the node gave none (see launcher._fallback_result), naming
    the node it was on when known."""
    from engines.runs.launcher import _fallback_result

    result = _fallback_result(job, key, status, message)
    if result.environment is not None and node and node.get("host"):
        result.environment.host, result.environment.gpu_index = node["host"], None
        result.environment.gpu = None
    result.key, result.started_at, result.finished_at = key, started, time.time()
    return result


def _first_line(e: BaseException) -> str:
    return (str(e).strip().splitlines() or [type(e).__name__])[0][:300]


def _join(message: str | None, note: str) -> str:
    return f"{message}; {note}" if message else note
