"""The launcher and the worker as separate processes: failures turned into results (bad
spec, SIGKILL, an exception inside the worker, a timeout, a cancel), the spec's XLA flags
reaching the worker's environment, and one real end-to-end job per framework (PyTorch,
JAX) on a tiny synthetic set. The failure tests stop the worker before any framework is
imported (engines.runs.worker's test hook), so each costs about a second."""
import os
import signal
import threading
import time
import types

import pytest
from helpers import alive, needs_framework

from engines.runs import launcher
from engines.runs.spec import RunSpec
from engines.runs.worker import TEST_FAULT_VARIABLE

pytestmark = pytest.mark.heavy(seconds=45)  # its wall time in the parallel suite: see conftest.py

SCHEMA_FIELDS = {"schema", "key", "framework", "status", "message", "spec", "environment", "model",
                 "train", "evaluation", "inference", "started_at", "finished_at", "worker_pid"}
INFERENCE_FIELDS = {"batch_size", "status", "latency_ms", "throughput_images_per_s", "first_call_s",
                    "peak_memory_bytes", "energy_j_per_1000_images"}


def tiny_job(framework="pytorch", **changes):
    fields = dict(dataset="synthetic", resolution=28, architecture="fan_arch1", frameworks=(framework,),
                  batch_sizes=(1, 8), epochs=1, warmup_iters=2, measure_iters=5,
                  dataset_options={"train": 64, "val": 16, "test": 16, "classes": 3, "channels": 1})
    fields.update(changes)
    return RunSpec(**fields).job(framework, 0).to_dict()


def run_job(job, **kwargs) -> dict:
    """The launcher's RunResult as its schema-1 JSON: what these tests check."""
    return launcher.run_job(job, **kwargs).to_dict()


def test_invalid_spec_is_an_error_without_a_worker():
    events = []
    job = tiny_job()
    job["batch_sizes"] = [0]
    r = run_job(job, on_event=events.append)
    assert r["status"] == "error" and "batch_sizes" in r["message"]
    assert r["worker_pid"] is None and events == []
    assert r["schema"] == 1 and r["finished_at"] >= r["started_at"]
    two = tiny_job()
    two["frameworks"] = ["pytorch", "jax"]
    assert run_job(two)["status"] == "error"


def test_worker_killed_by_sigkill_is_crashed_with_stderr_tail(monkeypatch):
    monkeypatch.setenv(TEST_FAULT_VARIABLE, "hang")
    events = []

    def on_event(e):
        events.append(e)
        if e.get("stage") == "test fault":  # sent after the hook's stderr line
            os.kill(events[0]["pid"], signal.SIGKILL)

    r = run_job(tiny_job(), on_event=on_event, timeout_s=60)
    assert r["status"] == "crashed"
    assert "SIGKILL" in r["message"] and "fault 'hang'" in r["message"]  # the stderr tail
    assert events[0] == {"event": "worker_started", "pid": r["worker_pid"], "framework": "pytorch",
                         "started_ahead": False, "time": events[0]["time"]}
    assert r["model"]["parameters"] > 0 and r["inference"] == []  # the parent's own part


def test_exception_inside_worker_is_crashed_with_traceback(monkeypatch):
    monkeypatch.setenv(TEST_FAULT_VARIABLE, "raise")
    r = run_job(tiny_job())
    assert r["status"] == "crashed"
    assert "exited with code 1" in r["message"] and "RuntimeError: injected failure" in r["message"]


def test_worker_exit_without_result_is_crashed(monkeypatch):
    monkeypatch.setenv(TEST_FAULT_VARIABLE, "exit")
    r = run_job(tiny_job())
    assert r["status"] == "crashed" and "exited with code 3 and wrote no result" in r["message"]


def test_timeout_kills_the_worker(monkeypatch):
    """The deadline runs on the launcher's clock. Here that clock stands still until the
    worker is known to hang (its hook's event), then jumps past the deadline: the outcome
    does not depend on how fast the worker starts on a busy machine."""
    monkeypatch.setenv(TEST_FAULT_VARIABLE, "hang")
    now = [0.0]
    monkeypatch.setattr(launcher, "time", types.SimpleNamespace(time=time.time, monotonic=lambda: now[0]))

    def on_event(e):
        if e.get("stage") == "test fault":
            now[0] += 3.0

    cancel = threading.Event()
    safety = threading.Timer(120, cancel.set)  # a broken deadline fails as "cancelled" instead of hanging
    safety.start()
    try:
        r = run_job(tiny_job(), timeout_s=2, on_event=on_event, cancel=cancel)
    finally:
        safety.cancel()
    assert r["status"] == "timed_out" and "no result within 2 s" in r["message"]
    assert "fault 'hang'" in r["message"]
    assert not alive(r["worker_pid"])


def test_cancel_kills_the_worker(monkeypatch):
    monkeypatch.setenv(TEST_FAULT_VARIABLE, "hang")
    cancel = threading.Event()
    r = run_job(tiny_job(), cancel=cancel,
                on_event=lambda e: e["event"] == "worker_started" and cancel.set())
    assert r["status"] == "cancelled" and not alive(r["worker_pid"])


def test_on_event_raising_kills_the_worker_and_propagates(monkeypatch):
    monkeypatch.setenv(TEST_FAULT_VARIABLE, "hang")
    pids = []

    def on_event(e):
        pids.append(e["pid"])
        raise KeyboardInterrupt  # as a stopped Streamlit script or Ctrl-C

    with pytest.raises(KeyboardInterrupt):
        run_job(tiny_job(), on_event=on_event)
    assert not alive(pids[0])


# -- real runs --------------------------------------------------------------------------------
def _check_result(r, framework, events):
    assert r["status"] == "ok", r["message"]
    assert set(r) >= SCHEMA_FIELDS
    assert r["framework"] == framework and r["schema"] == 1 and len(r["key"]) == 32
    assert r["spec"]["frameworks"] == [framework]
    env = r["environment"]
    assert env["device"] == "cpu" and env["cpu"] and env["python"] and env["versions"]
    assert r["model"]["architecture"] == "fan_arch1"
    assert r["model"]["parameters"] == r["model"]["parameters_in_framework"] > 0
    assert r["model"]["flops_per_image"] > 0
    t = r["train"]
    assert len(t["epochs"]) == 1 and t["energy_j"] is None  # CPU: not measured, not 0
    assert t["peak_memory_bytes"] > 0 and t["cpu_cores_used"] > 0
    assert 0 <= r["evaluation"]["accuracy"] <= 1
    inf = r["inference"]
    assert [e["batch_size"] for e in inf] == [1, 8]
    for e in inf:
        assert set(e) >= INFERENCE_FIELDS and e["status"] == "ok"
        assert e["measured_iters"] == 5 and e["warmup_iters"] == 2
        lat = e["latency_ms"]
        assert 0 < lat["p50"] <= lat["p95"] <= lat["p99"]
        assert e["throughput_images_per_s"] > 0 and e["first_call_s"] > 0
        assert e["energy_j_per_1000_images"] is None and e["peak_memory_bytes"] > 0

    assert events[0]["event"] == "worker_started" and events[0]["pid"] == r["worker_pid"]
    assert all(e["framework"] == framework for e in events)
    stages = [e["stage"] for e in events if e["event"] == "stage"]
    assert stages == ["loading data", "importing the framework", "building", "training", "evaluating", "timing"]
    assert [e["batch_size"] for e in events if e["event"] == "inference"] == [1, 8]
    assert any(e["event"] == "epoch" for e in events)
    assert r["started_at"] <= r["finished_at"]


@needs_framework("pytorch")
def test_end_to_end_pytorch(tmp_path):
    events = []
    # compile off: torch.compile on the CPU spends tens of seconds in the C++ compiler
    r = run_job(tiny_job("pytorch", compile=False), on_event=events.append,
                weights_out=str(tmp_path / "w"))
    _check_result(r, "pytorch", events)
    assert os.path.isfile(r["weights_file"]) and r["weights_file"].endswith(".pt")
    assert r["environment"]["worker_env"]["TORCHDYNAMO_DISABLE"] == "1"


@needs_framework("jax")
def test_end_to_end_jax_with_xla_flags():
    events = []
    r = run_job(tiny_job("jax", xla_autotune=2), on_event=events.append)
    _check_result(r, "jax", events)
    seen = r["environment"]["worker_env"]  # os.environ as the worker saw it
    assert "--xla_gpu_autotune_level=2" in seen["XLA_FLAGS"].split()
    assert seen["XLA_PYTHON_CLIENT_PREALLOCATE"] == "false"
    assert seen["TF_FORCE_GPU_ALLOW_GROWTH"] == "true"
    assert r["environment"]["versions"]["jax"]


@needs_framework("pytorch")
def test_weights_in_skips_training_and_inference_only(tmp_path):
    first = run_job(tiny_job("pytorch", compile=False), weights_out=str(tmp_path / "w"))
    again = run_job(tiny_job("pytorch", compile=False), weights_in=first["weights_file"])
    assert again["status"] == "ok" and again["train"] is None
    assert again["evaluation"]["accuracy"] == first["evaluation"]["accuracy"]
    only = run_job(tiny_job("pytorch", compile=False, inference_only=True, epochs=0))
    assert only["status"] == "ok" and only["train"] is None and only["evaluation"] is None
    assert [e["status"] for e in only["inference"]] == ["ok", "ok"]
