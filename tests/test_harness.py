"""The trackers and the scenario in one process, no framework imported: latency
statistics and the measured loop on a fake clock, the batch sizes' out-of-memory handling
with a fake allocator error, the scenario's stages and statuses with a fake engine, the
energy meter against a fake NVML, memory readings, the worker environment built from a
job, and the environment fingerprint."""
import os
import threading
import time

import numpy as np
import pytest
from helpers import wait_for

from engines.runs import scenario
from engines.runs import workerenv as harness_env
from engines.runs.scenario import measure_batch_sizes, run_framework, summary_message
from engines.trackers.cpu import CpuUse, process_cpu_time
from engines.trackers.energy import COUNTER, SAMPLING, EnergyMeter
from engines.trackers.memory import Allocator, MemoryTracker, is_oom, nvml_process_memory_bytes
from engines.trackers.timing import latency_stats, measure
from engines.training.config import TrainConfig
from engines.training.engine import WeightsError


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


def test_cpu_use_is_cpu_time_over_wall_time():
    clock, cpu_time = FakeClock(), FakeClock(50.0)
    with CpuUse(clock, cpu_time) as cpu:
        clock.advance(2.0)
        cpu_time.advance(3.0)  # two threads busy for 1.5 s each
    assert cpu.cores_used == pytest.approx(1.5)


def test_cpu_use_sees_this_process_working():
    # Whatever else the machine does: the process's own CPU time grows while it computes.
    with CpuUse() as cpu:
        start = process_cpu_time()
        while process_cpu_time() - start < 0.05:
            pass
    assert cpu.cores_used > 0


# -- inference sweep: an out-of-memory batch size is a data point -------------------------
class OutOfMemoryError(RuntimeError):  # named as torch.cuda's
    pass


class FakeEngine:
    """The engine interface's inference part, failing like an allocator above a size. A
    batch here is its batch size; a call takes 1 ms per image on the test's clock."""

    def __init__(self, clock, oom_from=None, error_at=None):
        self.clock, self.oom_from, self.error_at = clock, oom_from, error_at
        self.attempted, self.compiled = [], 0

    def inference_fn(self):
        self.compiled += 1

        def call(bs):
            if self.oom_from is not None and bs >= self.oom_from:
                raise OutOfMemoryError(f"CUDA out of memory. Tried to allocate {bs * 2} MiB")
            if bs == self.error_at:
                raise ValueError("bad shape")
            self.clock.advance(0.001 * bs)
        return call

    def inference_inputs(self, bs, images=None):
        self.attempted.append(bs)
        return [bs, bs]

    def sync(self, outputs):
        pass


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
    points = measure_batch_sizes(engine, "fake", sizes, warmup=1, iters=5,
                                 memory=MemoryTracker("fake", on_gpu=True, allocator=alloc, nvml=False),
                                 energy=lambda: EnergyMeter(enabled=False),
                                 on_event=(events if events is not None else []).append, clock=engine.clock)
    return points


def test_sweep_records_oom_and_stops_growing():
    eng, alloc, events = FakeEngine(FakeClock(), oom_from=8), FakeAllocator(), []
    points = _sweep(eng, [32, 1, 8], alloc, events)
    entries = [p.to_dict() for p in points]  # as the result's JSON has them
    assert [e["batch_size"] for e in entries] == [1, 8, 32]  # increasing order
    assert eng.compiled == 1  # one inference function for every size
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
    assert summary_message(points) == "inference: out of memory at batch size 8 (larger sizes not run)"


def test_sweep_other_error_is_an_entry_and_goes_on():
    entries = [p.to_dict() for p in _sweep(FakeEngine(FakeClock(), error_at=8), [1, 8, 16])]
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


# -- the scenario with a fake engine: its stages, its trackers, failures as statuses ----------
class ScenarioEngine:
    """The Engine interface (ISSUE13.md section 7) without a framework: records what the
    scenario asks of it, in order; `fail` makes one method raise."""

    def __init__(self, config, fail=None, log=None):
        self.config, self.fail = config, fail or {}
        self.log = log if log is not None else []

    def _call(self, name, value=None):
        self.log.append(name)
        if name in self.fail:
            raise self.fail[name]
        return value

    def versions(self):
        return {"fakelib": "1.0"}

    def device(self):
        return "cpu"

    def build(self, architecture, resolution, channels, num_classes, weights=None):
        self._call("build")
        self.canonical = weights is not None

    def parameters(self):
        return 123

    def train(self, dataset, on_event):
        self._call("train")
        return {"epochs": [{"epoch": 1, "loss": 0.5, "accuracy": 0.8, "val_loss": 0.6, "val_accuracy": 0.7,
                            "time_s": 0.1}], "compile_time_s": 0.2, "total_time_s": 0.4, "images_per_s": 100.0,
                "energy_j": None, "peak_memory_bytes": None, "input_pipeline": "fake", "steps_per_epoch": 2}

    def evaluate(self, dataset, batch_size=256):
        self._call("evaluate")
        return {"accuracy": 0.5, "auc": None, "per_class": [], "macro": None, "weighted": None,
                "confusion_matrix": [[1]], "test_inference_time_s": 0.01}

    def save(self, path):
        return self._call("save", path + ".fake")

    def load(self, path):
        self._call("load")

    def inference_fn(self):
        self._call("inference_fn")
        return lambda x: x

    def inference_inputs(self, batch_size, images=None):
        return [np.zeros(batch_size)]

    def sync(self, outputs):
        pass


@pytest.fixture
def fake_engines(monkeypatch):
    """scenario.get_engine makes ScenarioEngines; returns what each was made with."""
    made = []

    def get_engine(name, config):
        made.append(ScenarioEngine(config, fail=made_fail.get("fail")))
        return made[-1]

    made_fail = {}
    monkeypatch.setattr(scenario, "get_engine", get_engine)
    return made, made_fail


def _tiny_data():
    from engines.datasets import make_synthetic

    return make_synthetic(28, channels=1, classes=3, train=16, val=8, test=8)


def test_scenario_stages_and_trackers(fake_engines, tmp_path):
    made, _ = fake_engines
    events = []
    cfg = TrainConfig("fan_arch1", batch_size=8)
    r = run_framework("fake", _tiny_data(), cfg, weights_out=str(tmp_path / "w"), batch_sizes=(4, 2),
                      warmup_iters=1, measure_iters=3, on_event=events.append)
    assert r.status == "ok", r.message
    assert made[0].config == cfg and made[0].canonical  # same_init: the one draw from the seed
    assert made[0].log == ["build", "train", "evaluate", "save", "inference_fn"]
    assert [e["stage"] for e in events if e["event"] == "stage"] == ["importing the framework", "building",
                                                                     "training", "evaluating", "timing"]
    assert r.weights_file == str(tmp_path / "w") + ".fake" and r.model.parameters_in_framework == 123
    t = r.train.to_dict()  # the trackers' figures beside the engine's own
    assert t["peak_memory_bytes"] == t["peak_rss_bytes"] > 0 and "RSS" in t["memory_source"]
    assert t["cpu_cores_used"] is not None and t["energy_j"] is None and "not measured" in t["energy"]["note"]
    assert [p.batch_size for p in r.inference] == [2, 4] and all(p.status == "ok" for p in r.inference)
    assert r.environment.device == "cpu" and r.environment.versions["fakelib"] == "1.0"


def test_loaded_weights_are_evaluated_by_an_engine_made_with_the_runs_config(fake_engines):
    made, _ = fake_engines
    cfg = TrainConfig("fan_arch1", batch_size=8, precision="bf16", compile=False)
    r = run_framework("fake", _tiny_data(), cfg, weights_in="/cached/w.fake", batch_sizes=(1,))
    assert r.status == "ok" and r.train is None and r.evaluation.accuracy == 0.5
    assert made[0].config == cfg and not made[0].canonical  # the framework's init: the file overwrites it
    assert made[0].log == ["build", "load", "evaluate", "inference_fn"]


@pytest.mark.parametrize("failure, status, words", [
    (OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB"), "oom", "out of memory"),
    (WeightsError("cached weights do not load"), "error", "do not load"),
    (RuntimeError("segfault-ish"), "crashed", "unexpected RuntimeError: segfault-ish"),
])
def test_a_failure_becomes_the_results_status(fake_engines, failure, status, words):
    made, fail = fake_engines
    fail["fail"] = {"train": failure}
    events = []
    r = run_framework("fake", _tiny_data(), TrainConfig("fan_arch1", batch_size=8), batch_sizes=(1,),
                      on_event=events.append)
    assert r.status == status and words in r.message
    assert [e["stage"] for e in events if e["event"] == "stage"] == ["importing the framework", "building", "training"]
    assert events[-1]["event"] == "error" and events[-1]["status"] == status
    assert r.inference == [] and r.model.architecture == "fan_arch1"


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
    """The sampler thread reads power on its own; the window's length is the test's clock,
    moved once the thread has sampled twice (however long the thread took to get there)."""
    clock = FakeClock(1000.0)
    meter = EnergyMeter(nvml=FakeNvml(clock, watts=100.0, counter=False), sample_interval_s=0.5, clock=clock)
    assert meter.method == SAMPLING and meter.interval <= 0.1  # never coarser than 100 ms
    meter.start()
    wait_for(lambda: len(meter._samples) >= 3)  # the start's reading and two from the thread
    clock.advance(0.35)
    meter.stop()
    r = meter.result(images=100)
    assert len(meter._samples) >= 4 and r["window_s"] == pytest.approx(0.35)
    assert r["energy_j"] == pytest.approx(35.0) and r["mean_w"] == pytest.approx(100.0)
    assert r["j_per_1000_images"] == pytest.approx(350.0)
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


def test_the_jobs_framework_adds_its_own_variables():
    base = {"KERAS_BACKEND": "jax"}  # inherited: replaced or dropped, never passed on
    assert harness_env.worker_env({"frameworks": ["keras"]}, base)["KERAS_BACKEND"] == "tensorflow"
    assert "KERAS_BACKEND" not in harness_env.worker_env({"frameworks": ["pytorch"]}, base)


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
