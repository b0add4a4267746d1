"""The measurement harness in one process, no framework imported: latency statistics and
the measured loop on a fake clock, the inference sweep's out-of-memory handling with a
fake allocator error, the energy meter against a fake NVML, memory readings, the worker
environment built from a spec, and the environment fingerprint."""
import os
import threading
import time

import numpy as np
import pytest

from engines.runs import workerenv as harness_env
from engines.runs.scenario import inference_sweep, summary_message
from engines.trackers.energy import COUNTER, SAMPLING, EnergyMeter
from engines.trackers.memory import Allocator, MemoryTracker, is_oom, nvml_process_memory_bytes
from engines.trackers.timing import CpuUse, latency_stats, measure
from engines.training.config import TrainConfig
from engines.training.engine import Engine, RunHooks, run_engine


class FakeClock:
    def __init__(self, t=100.0):
        self.t = t
        self.lock = threading.Lock()

    def __call__(self):
        with self.lock:
            return self.t

    def advance(self, dt):
        with self.lock:
            self.t += dt


# -- timing -------------------------------------------------------------------------------
def test_latency_stats_percentiles_in_ms():
    s = latency_stats([i / 1000 for i in range(1, 101)])  # 1..100 ms
    assert s["p50"] == pytest.approx(50.5)
    assert s["p95"] == pytest.approx(95.05)
    assert s["p99"] == pytest.approx(99.01)
    assert s["mean"] == pytest.approx(50.5)
    assert s["std"] == pytest.approx(np.std(np.arange(1, 101), ddof=1))
    assert latency_stats([0.002])["std"] == 0.0
    with pytest.raises(ValueError):
        latency_stats([])


def test_measure_on_fake_clock_first_call_warmup_rotation_throughput():
    clock = FakeClock()
    durations = iter([5.0] + [9.0] * 3 + [0.010, 0.020, 0.030, 0.040])  # first, warm-up, measured
    seen, synced = [], []

    def call(x):
        seen.append(x)
        clock.advance(next(durations))
        return ("out", x)

    m = measure(call, synced.append, ["a", "b", "c"], batch_size=8, warmup=3, iters=4, clock=clock)
    assert m.first_call_s == pytest.approx(5.0)
    assert m.durations_s == pytest.approx([0.010, 0.020, 0.030, 0.040])  # warm-up not in them
    assert seen == ["a", "b", "c", "a", "a", "b", "c", "a"]  # rotates among the batches
    assert len(synced) == 8  # every call synchronized, warm-up included
    assert m.window_s == pytest.approx(0.100)
    assert m.throughput_images_per_s == pytest.approx(8 * 4 / 0.100)
    s = m.summary()
    assert s["latency_ms"]["p50"] == pytest.approx(25.0) and s["measured_iters"] == 4


def test_measure_extends_window_for_energy():
    clock = FakeClock()

    def call(x):
        clock.advance(0.125)

    m = measure(call, lambda out: None, [0], batch_size=1, warmup=0, iters=3, clock=clock,
                min_window_s=1.0)
    assert m.iterations == 8 and m.window_s == pytest.approx(1.0)
    assert "extended" in m.notes[0]


def test_windows_see_exactly_the_measured_calls():
    clock = FakeClock()
    log = []

    class W:
        def start(self):
            log.append(("start", clock()))

        def stop(self):
            log.append(("stop", clock()))

    def call(x):
        clock.advance(1.0)

    measure(call, lambda o: None, [0], batch_size=1, warmup=2, iters=5, clock=clock, windows=[W()])
    assert log == [("start", 103.0), ("stop", 108.0)]  # first call + 2 warm-up before it


def test_cpu_use_counts_busy_cores():
    cpu = CpuUse()
    cpu.start()
    t = time.perf_counter()
    while time.perf_counter() - t < 0.2:
        pass
    cpu.stop()
    assert 0.3 < cpu.cores_used < 2.5


# -- inference sweep: an out-of-memory batch size is a data point -------------------------
class OutOfMemoryError(RuntimeError):  # named as torch.cuda's
    pass


class FakeEngine:
    """time_inference as the engines have it, failing like an allocator above a size."""

    name = "fake"

    def __init__(self, oom_from=None, error_at=None):
        self.oom_from, self.error_at = oom_from, error_at
        self.attempted = []

    def time_inference(self, bs, *, warmup, iters, images, clock, min_window_s, windows):
        self.attempted.append(bs)
        if self.oom_from is not None and bs >= self.oom_from:
            raise OutOfMemoryError(f"CUDA out of memory. Tried to allocate {bs * 2} MiB")
        if bs == self.error_at:
            raise ValueError("bad shape")

        def call(x):
            clock.advance(0.001 * bs)

        return measure(call, lambda o: None, [0, 1], batch_size=bs, warmup=warmup, iters=iters,
                       clock=clock, min_window_s=min_window_s, windows=windows)


class FakeAllocator(Allocator):
    source = "fake allocator"

    def __init__(self):
        self.resets, self.released, self.value = 0, 0, 0

    def reset(self):
        self.resets += 1

    def peak(self):
        self.value += 1000
        return self.value

    def release(self):
        self.released += 1


def _sweep(engine, sizes, alloc=None, events=None):
    alloc = alloc or FakeAllocator()
    return inference_sweep(engine, sizes, warmup=1, iters=5,
                           memory=MemoryTracker("fake", on_gpu=True, allocator=alloc, nvml=False),
                           energy=lambda: EnergyMeter(enabled=False),
                           on_event=(events if events is not None else []).append, clock=FakeClock())


def test_sweep_records_oom_and_stops_growing():
    eng, alloc, events = FakeEngine(oom_from=8), FakeAllocator(), []
    entries = _sweep(eng, [32, 1, 8], alloc, events)
    assert [e["batch_size"] for e in entries] == [1, 8, 32]  # increasing order
    assert [e["status"] for e in entries] == ["ok", "oom", "oom"]
    assert eng.attempted == [1, 8]  # 32 was not tried
    ok, oom, skipped = entries
    assert ok["throughput_images_per_s"] == pytest.approx(1 / 0.001)
    assert ok["latency_ms"]["p50"] == pytest.approx(1.0)
    assert ok["peak_memory_bytes"] == 1000 and ok["memory_source"] == "fake allocator"
    assert ok["energy_j_per_1000_images"] is None and "not measured" in ok["energy"]["note"]
    assert "out of memory at batch size 8" in oom["message"] and oom["latency_ms"] is None
    assert "not run" in skipped["message"]
    assert alloc.released == 1 and alloc.resets == 2
    assert [e["batch_size"] for e in events if e["event"] == "inference"] == [1, 8, 32]
    assert summary_message(entries) == "inference: out of memory at batch size 8 (larger sizes not run)"


def test_sweep_other_error_is_an_entry_and_goes_on():
    entries = _sweep(FakeEngine(error_at=8), [1, 8, 16])
    assert [e["status"] for e in entries] == ["ok", "error", "ok"]
    assert "ValueError: bad shape" in entries[1]["message"]


def test_is_oom_recognizes_the_frameworks_errors():
    class XlaRuntimeError(Exception):
        pass

    class ResourceExhaustedError(Exception):
        pass

    assert is_oom(OutOfMemoryError("x"))
    assert is_oom(XlaRuntimeError("RESOURCE_EXHAUSTED: Out of memory while trying to allocate 1.2GiB"))
    assert is_oom(ResourceExhaustedError("OOM when allocating tensor"))
    assert is_oom(MemoryError())
    assert not is_oom(ValueError("shapes do not match"))


def test_run_engine_turns_training_oom_into_status(monkeypatch):
    class OomEngine(Engine):
        name = model_framework = "fake"

        def versions(self):
            return {}

        def _build_model(self, weights):
            return object()

        def parameters(self):
            return 1

        def train(self, dataset, on_event=None):
            raise OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

        predict_logits = save = load = inference_fn = _device_batch = sync = lambda *a, **k: None

    import engines.frameworks as fw
    from engines.datasets import make_synthetic

    monkeypatch.setattr(fw, "get_engine", lambda name, config: OomEngine(config))
    ds = make_synthetic(28, channels=1, classes=3, train=16, val=8, test=8)
    events = []
    r = run_engine("fake", ds, TrainConfig("fan_arch1", batch_size=8), on_event=events.append,
                   hooks=RunHooks())
    assert r["status"] == "oom" and "out of memory" in r["message"]
    assert [e["stage"] for e in events if e["event"] == "stage"] == ["building", "training"]


# -- energy against a fake NVML ---------------------------------------------------------------
class NVMLError(Exception):
    pass


class FakeNvml:
    """The part of pynvml the harness calls; energy grows at `watts` on `clock`."""

    def __init__(self, clock, watts=250.0, counter=True, driver=True, pid=None):
        self.clock, self.watts, self.counter, self.driver = clock, watts, counter, driver
        self.pid = pid

    def nvmlInit(self):
        if not self.driver:
            raise NVMLError("Driver Not Loaded")

    def nvmlDeviceGetHandleByIndex(self, i):
        return ("gpu", i)

    def nvmlDeviceGetHandleByUUID(self, uuid):
        return ("gpu", uuid)

    def nvmlDeviceGetTotalEnergyConsumption(self, handle):
        if not self.counter:
            raise NVMLError("Not Supported")
        return int(self.clock() * self.watts * 1000)  # millijoules

    def nvmlDeviceGetPowerUsage(self, handle):
        return int(self.watts * 1000)  # milliwatts

    def nvmlDeviceGetComputeRunningProcesses(self, handle):
        class P:
            pid, usedGpuMemory = self.pid, 123 * 2**20
        return [P()]


@pytest.fixture
def gpu0(monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0")


def test_energy_counter_over_exactly_the_window(gpu0):
    clock = FakeClock(1000.0)
    meter = EnergyMeter(nvml=FakeNvml(clock, watts=250.0), clock=clock)
    assert meter.method == COUNTER
    clock.advance(5.0)  # before the window: not counted
    meter.start()
    clock.advance(2.0)
    meter.stop()
    clock.advance(5.0)
    r = meter.result(images=1000, epochs=2)
    assert r["method"] == COUNTER
    assert r["energy_j"] == pytest.approx(500.0)
    assert r["mean_w"] == pytest.approx(250.0)
    assert r["j_per_1000_images"] == pytest.approx(500.0)
    assert r["j_per_epoch"] == pytest.approx(250.0)
    assert r["note"] is None


def test_energy_sampling_fallback_integrates_power(gpu0):
    meter = EnergyMeter(nvml=FakeNvml(time.perf_counter, watts=100.0, counter=False), sample_interval_s=0.5)
    assert meter.method == SAMPLING and meter.interval <= 0.1  # never coarser than 100 ms
    meter.start()
    time.sleep(0.35)
    meter.stop()
    r = meter.result(images=100)
    assert len(meter._samples) >= 4
    assert r["energy_j"] == pytest.approx(100.0 * r["window_s"], rel=1e-6)
    assert r["mean_w"] == pytest.approx(100.0)
    assert "sampled" in r["note"] and "shorter than 1 s" in r["note"]


def test_energy_not_measured_is_null_never_zero(gpu0):
    for meter in (EnergyMeter(nvml=FakeNvml(time.perf_counter, driver=False)),
                  EnergyMeter(enabled=False)):
        assert not meter.available
        meter.start()
        meter.stop()
        r = meter.result(images=10, epochs=1)
        assert r["energy_j"] is None and r["j_per_1000_images"] is None and r["mean_w"] is None
        assert r["note"].startswith("not measured")


def test_energy_reads_no_gpu_when_cuda_hides_them(monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    assert not EnergyMeter(nvml=FakeNvml(time.perf_counter)).available


def test_nvml_process_memory(gpu0):
    assert nvml_process_memory_bytes(nvml=FakeNvml(time.perf_counter, pid=os.getpid())) == 123 * 2**20
    assert nvml_process_memory_bytes(nvml=FakeNvml(time.perf_counter, pid=1)) is None
    assert nvml_process_memory_bytes(nvml=FakeNvml(time.perf_counter, driver=False)) is None


def test_cpu_memory_reading_is_peak_rss():
    tracker = MemoryTracker("fake", on_gpu=False, allocator=Allocator())
    tracker.reset()
    block = np.ones(64 * 2**20, np.uint8)  # 64 MiB touched
    r = tracker.read()
    del block
    assert r["peak_memory_bytes"] == r["peak_rss_bytes"] > 64 * 2**20
    assert r["allocator_peak_bytes"] is None and r["nvml_process_memory_bytes"] is None
    assert "RSS" in r["memory_source"]


# -- the worker's environment ------------------------------------------------------------------
def test_worker_env_from_a_closed_list():
    base = {"PATH": "/bin", "XLA_FLAGS": "--xla_gpu_autotune_level=4 --xla_dump_to=/tmp/x",
            "CUDA_VISIBLE_DEVICES": "2,3", "TORCHDYNAMO_DISABLE": "1", "NVIDIA_TF32_OVERRIDE": "0"}
    env = harness_env.worker_env({"xla_autotune": 0, "precision": "tf32", "compile": True}, base)
    assert env["PATH"] == "/bin"
    assert env["XLA_FLAGS"] == "--xla_dump_to=/tmp/x --xla_gpu_autotune_level=0"
    assert env["XLA_PYTHON_CLIENT_PREALLOCATE"] == "false"
    assert env["TF_FORCE_GPU_ALLOW_GROWTH"] == "true"
    assert env["CUDA_VISIBLE_DEVICES"] == "2"  # one GPU per worker
    assert env["JAX_DEFAULT_MATMUL_PRECISION"] == "tensorfloat32"
    assert "TORCHDYNAMO_DISABLE" not in env and "NVIDIA_TF32_OVERRIDE" not in env  # inherited ones dropped

    strict = harness_env.worker_env({"precision": "fp32", "compile": False},
                                    {"XLA_FLAGS": "--xla_gpu_autotune_level=4"})
    assert strict["NVIDIA_TF32_OVERRIDE"] == "0" and strict["TORCHDYNAMO_DISABLE"] == "1"
    assert "XLA_FLAGS" not in strict  # no level in the spec: XLA's default, not the inherited one
    assert strict["CUDA_VISIBLE_DEVICES"] == "0"
    with pytest.raises(ValueError):
        harness_env.worker_env({"precision": "fp8"}, {})
    with pytest.raises(ValueError):
        harness_env.worker_env({"xla_autotune": "0 --xla_bad"}, {})


def test_apply_sets_environ_in_place_and_is_idempotent():
    environ = {"HOME": "/h"}
    view = harness_env.apply({"xla_autotune": 3, "precision": "default", "compile": True}, environ)
    assert environ["XLA_FLAGS"] == "--xla_gpu_autotune_level=3" and environ["HOME"] == "/h"
    assert view["XLA_FLAGS"] == environ["XLA_FLAGS"] and view["NVIDIA_TF32_OVERRIDE"] is None
    again = dict(environ)
    harness_env.apply({"xla_autotune": 3, "precision": "default", "compile": True}, again)
    assert again == environ


# -- environment fingerprint ---------------------------------------------------------------------
def test_fingerprint_fields_and_key():
    from engines import machine as environment

    env = environment.fingerprint(device="cpu", versions={"torch": "9.9", "cuda": None})
    assert set(env) >= {"device", "gpu", "driver", "cuda", "cpu", "python", "versions"}
    assert env["versions"]["torch"] == "9.9" and env["cpu"] and env["python"]
    key = environment.fingerprint_key(env)
    assert key == environment.fingerprint_key(dict(env, device="NVIDIA H100"))  # machine, not run
    assert key != environment.fingerprint_key(dict(env, driver="999.1"))
