"""Issue 15 on the CPU: honest devices, one CPU thread setting, the noisy flag, --require-gpu,
`./lab doctor` (with a fake nvidia-smi and canned probes, and one real probe), reference
figures beside the user's, and the GPU acceptance script's smoke run. Nothing here depends
on the machine's load: /proc, sysfs and nvidia-smi are fakes where a verdict is asserted."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import REPO
from helpers import markdown_tables

from engines import devices, doctor, threads
from engines.analysis import reference as ref
from engines.frameworks import FRAMEWORKS
from engines.runs.result import Environment, InferencePoint, Latency, RunResult, Train
from engines.runs.spec import RunSpec
from engines.settings import SettingsError
from engines.trackers import cpu as cpu_tracker

pytestmark = pytest.mark.heavy(seconds=90)  # its wall time in the parallel suite: see conftest.py


# -- device labels and mixed comparisons ------------------------------------------------------
def test_device_labels_and_kinds():
    assert devices.label("cuda", 0, "NVIDIA H200") == "cuda:0 NVIDIA H200"
    assert devices.label("cpu", 3, "whatever") == "cpu"
    assert devices.kind("cuda:0 NVIDIA H200") == "cuda" and devices.kind("cpu") == "cpu"
    assert devices.kind("NVIDIA H100 80GB HBM3") == "gpu"  # a bare name, as older results wrote it
    assert devices.kind(None) is None and devices.on_cpu("cpu") and not devices.on_cpu("cuda:0 X")


def _result(framework, device, **kw) -> dict:
    return {"framework": framework, "status": "ok", "spec": {}, "environment": {"device": device, **kw},
            "inference": []}


def test_mixed_devices_names_each_kind_and_the_fix():
    same = [_result("pytorch", "cuda:0 NVIDIA H200"), _result("jax", "cuda:0 NVIDIA H200")]
    assert devices.mixed(same) is None
    mix = devices.mixed([*same, _result("keras", "cpu"), _result("tensorflow", None)])  # no device: not counted
    assert mix.by_kind == {"cuda": ["PyTorch", "JAX/Flax"], "cpu": ["Keras"]}
    assert "PyTorch, JAX/Flax on cuda:0 NVIDIA H200; Keras on the CPU" in mix.reason
    assert "./lab doctor" in mix.reason and "./lab install --dry-run" in mix.reason
    one_fw_two_kinds = devices.mixed([_result("jax", "cpu"), _result("jax", "cuda:0 NVIDIA H200")])
    assert one_fw_two_kinds is not None  # two seeds of one framework on two devices


def test_gpu_fixes_point_at_lab_not_at_pip():
    for name, f in FRAMEWORKS.items():
        assert "pip install" not in (f.gpu_install_hint or "")
        fix = devices.gpu_fix(name)
        assert "./lab install" in fix and "pip" not in fix
    jax_fix = devices.gpu_fix("jax")
    assert "jax[cuda13]" in jax_fix and "requirements-gpu-cuda13.txt or -cuda12" in jax_fix
    assert "from requirements-gpu-cuda12.txt)" in devices.gpu_fix("keras", "requirements-gpu-cuda12.txt")
    assert "(it installs" not in devices.gpu_fix("pytorch")  # PyPI's build already runs on a GPU
    assert FRAMEWORKS["keras"].runtime == "tensorflow" and FRAMEWORKS["jax"].runtime == "jax"


# -- one CPU thread setting ----------------------------------------------------------------------
def fake_sysfs(root: Path, cores: dict[int, tuple[int, int]]) -> str:
    """cpuN/topology/{physical_package_id,core_id} for cpu -> (package, core)."""
    for cpu, (package, core) in cores.items():
        topo = root / f"cpu{cpu}" / "topology"
        topo.mkdir(parents=True)
        (topo / "physical_package_id").write_text(f"{package}\n")
        (topo / "core_id").write_text(f"{core}\n")
    return str(root)


def test_physical_cores_and_the_cpus_a_worker_is_pinned_to(tmp_path):
    # 2 cores with 2 hyper-threads each: CPUs 0,2 on core 0, 1,3 on core 1 (Linux's usual numbering)
    sysfs = fake_sysfs(tmp_path, {0: (0, 0), 1: (0, 1), 2: (0, 0), 3: (0, 1)})
    cpus = [0, 1, 2, 3]
    assert threads.physical_cores(cpus, sysfs) == 2
    assert threads.cpu_threads({}, cpus, sysfs) == 2  # the default: one per physical core
    assert threads.worker_cpus(2, cpus, sysfs) == [0, 1]  # one per core first
    assert threads.worker_cpus(3, cpus, sysfs) == [0, 1, 2]
    assert threads.physical_cores(cpus, str(tmp_path / "none")) == 4  # no topology: each CPU a core
    assert threads.cpu_threads({"LAB_CPU_THREADS": "3"}, cpus, sysfs) == 3
    assert threads.cpu_threads({"LAB_CPU_THREADS": "0"}, cpus, sysfs) == 2  # 0: the physical cores
    with pytest.raises(threads.ThreadsError, match="LAB_CPU_THREADS must be at most 4"):
        threads.cpu_threads({"LAB_CPU_THREADS": "5"}, cpus, sysfs)
    for bad in ("-1", "two"):
        with pytest.raises(SettingsError, match="LAB_CPU_THREADS must be a whole number"):
            threads.cpu_threads({"LAB_CPU_THREADS": bad}, cpus, sysfs)


def test_the_thread_count_keys_the_results_and_reaches_the_worker(monkeypatch):
    from engines import machine
    from engines.runs import workerenv

    monkeypatch.setenv("LAB_CPU_THREADS", "1")
    one = machine.fingerprint(framework="pytorch")
    assert one["cpu_threads"] == 1 and one["device"] is None  # null until an engine says
    env = workerenv.worker_env({"frameworks": ["pytorch"]}, {"LAB_CPU_THREADS": "1"})
    assert env["LAB_CPU_THREADS"] == env["OMP_NUM_THREADS"] == "1"
    assert machine.fingerprint_key(one) != machine.fingerprint_key(dict(one, cpu_threads=2))
    with pytest.raises(ValueError, match="LAB_CPU_THREADS"):
        workerenv.worker_env({"frameworks": ["pytorch"]}, {"LAB_CPU_THREADS": "many"})


def test_a_worker_runs_on_its_cpu_threads_and_records_them_and_its_device(monkeypatch):
    """A real PyTorch job with LAB_CPU_THREADS=1: pinned to one CPU, PyTorch's pools at 1."""
    from engines.runs.launcher import run_job

    monkeypatch.setenv("LAB_CPU_THREADS", "1")
    # Eager: what is checked is the worker's threads, and torch.compile's C++ build of even
    # this model cost 22 s of CPU with an empty Inductor cache (4 s in all without it).
    job = RunSpec(dataset="synthetic", resolution=16, architecture="fan_arch1", frameworks=("pytorch",),
                  batch_sizes=(2,), epochs=0, inference_only=True, warmup_iters=1, measure_iters=3, compile=False,
                  dataset_options={"train": 16, "val": 8, "test": 8, "classes": 3}).job("pytorch")
    r = run_job(job, timeout_s=600)
    assert r.status == "ok", r.message
    env = r.environment
    assert env.device == "cpu" and env.cpu_threads == 1
    assert env.cpu_threads_applied == {"intra_op": 1, "inter_op": 1, "cpus": 1}
    assert env.worker_env["LAB_CPU_THREADS"] == "1"
    d = r.to_dict()
    assert "noisy" in d["environment"] and "cpu_threads" in d["environment"]
    assert d["inference"][0]["other_cpu_cores"] >= 0  # read from /proc: this machine's, so no verdict here


# -- other processes' CPU time and the noisy flag ---------------------------------------------------
class FakeProc:
    """A /proc with a stat file and a process tree whose counters the test moves."""

    def __init__(self, root: Path, cpus: int = 2):
        self.root, self.cpus = root, cpus
        root.mkdir(parents=True, exist_ok=True)
        self.busy = 0  # ticks, all CPUs
        self.procs: dict[int, tuple[int, int]] = {}  # pid -> (ppid, ticks)
        self.write()

    def write(self) -> None:
        lines = [f"cpu  {self.busy} 0 0 100000 0 0 0 0 0 0"]
        lines += [f"cpu{i} 0 0 0 50000 0 0 0 0 0 0" for i in range(self.cpus)]
        (self.root / "stat").write_text("\n".join(lines) + "\nintr 0\n")
        for pid, (ppid, ticks) in self.procs.items():
            d = self.root / str(pid)
            d.mkdir(exist_ok=True)
            # pid (comm) state ppid ... utime(14) stime(15) cutime(16) cstime(17)
            fields = ["S", str(ppid)] + ["0"] * 9 + [str(ticks), "0", "0", "0"] + ["0"] * 5
            (d / "stat").write_text(f"{pid} (python with spaces) " + " ".join(fields) + "\n")

    def tick(self, own: int, other: int) -> None:
        """`own` ticks spent by process 100 and its child 101 (half each), `other` by others."""
        (p100, t100), (p101, t101) = self.procs[100], self.procs[101]
        self.procs[100], self.procs[101] = (p100, t100 + own // 2), (p101, t101 + own - own // 2)
        self.busy += own + other
        self.write()


def _window(proc: FakeProc, own: int, other: int, wall_s: float, share: float = 0.25) -> cpu_tracker.CpuUse:
    t = iter([0.0, wall_s])
    use = cpu_tracker.CpuUse(clock=lambda: next(t), cpu_time=lambda: 0.0,
                             machine=lambda: cpu_tracker.read_machine_cpu(str(proc.root), tick_s=0.01),
                             tree=lambda: cpu_tracker.read_tree_cpu(100, str(proc.root), tick_s=0.01),
                             share=share, tick_s=0.01)
    use.start()
    proc.tick(own, other)
    use.stop()
    return use


def test_other_processes_cpu_time_over_a_window_and_the_noisy_verdict(tmp_path):
    proc = FakeProc(tmp_path / "proc")
    proc.procs = {1: (0, 500), 100: (1, 0), 101: (100, 0), 200: (1, 0)}  # 200: not ours
    proc.write()
    assert cpu_tracker.read_tree_cpu(100, str(proc.root), tick_s=0.01) == 0
    quiet = _window(proc, own=200, other=10, wall_s=1.0)  # our two processes busy, others 0.1 core
    assert quiet.cores == 2 and quiet.other_cores == pytest.approx(0.1) and quiet.noisy is False
    busy = _window(proc, own=100, other=150, wall_s=1.0)  # others held 1.5 of 2 cores
    assert busy.other_cores == pytest.approx(1.5) and busy.noisy is True
    assert busy.reading() == {"other_cpu_cores": pytest.approx(1.5), "noisy": True}
    short = _window(proc, own=2, other=3, wall_s=0.05)  # 0.6 cores, resolution 0.8: cannot tell
    assert short.other_cores == pytest.approx(0.6) and short.noisy is None
    assert cpu_tracker.any_noisy([False, None, True]) is True
    assert cpu_tracker.any_noisy([False, None]) is False and cpu_tracker.any_noisy([None]) is None


def test_noisy_share_setting(monkeypatch):
    from engines import settings

    assert settings.noisy_share({}) == 0.25 and settings.noisy_share({"LAB_NOISY_SHARE": "0.5"}) == 0.5
    with pytest.raises(settings.SettingsError, match="LAB_NOISY_SHARE"):
        settings.noisy_share({"LAB_NOISY_SHARE": "2"})
    assert cpu_tracker.read_machine_cpu("/nonexistent") is None


# -- the scenario: device, noisy flags, --require-gpu -------------------------------------------------
class FakeEngine:
    """The Engine interface without a framework; `device_label` is where it says it computes."""

    device_label = "cpu"

    def __init__(self, config):
        self.config = config

    def versions(self):
        return {"fakelib": "1.0"}

    def device(self):
        return self.device_label

    def build(self, architecture, resolution, channels, num_classes, weights=None):
        pass

    def parameters(self):
        return 1

    def train(self, dataset, on_event):
        return {"epochs": [{"epoch": 1, "loss": 0.5, "accuracy": 0.8, "val_loss": 0.6, "val_accuracy": 0.7,
                            "time_s": 0.1}], "compile_time_s": 0.2, "total_time_s": 0.4, "images_per_s": 10.0,
                "energy_j": None, "peak_memory_bytes": None, "input_pipeline": "fake", "steps_per_epoch": 1}

    def evaluate(self, dataset, batch_size=256):
        return {"accuracy": 0.5, "auc": None, "per_class": [], "macro": None, "weighted": None,
                "confusion_matrix": [[1]], "test_inference_time_s": 0.01}

    def inference_fn(self):
        return lambda x: x

    def inference_inputs(self, batch_size, images=None):
        return [np.zeros(batch_size)]

    def sync(self, outputs):
        pass


class NoisyCpu:
    """CpuUse stand-in: every window was noisy, other work holding 1.5 cores."""

    def __init__(self, *a, **k):
        self.cores_used, self.other_cores, self.noisy = 1.0, 1.5, True

    def start(self):
        pass

    def stop(self):
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        pass


@pytest.fixture
def fake_scenario(monkeypatch):
    from engines.datasets import make_synthetic
    from engines.runs import scenario

    monkeypatch.setattr(scenario, "get_engine", lambda name, config: FakeEngine(config))
    monkeypatch.setattr(scenario, "CpuUse", NoisyCpu)
    return scenario, make_synthetic(16, channels=1, classes=3, train=8, val=4, test=4)


def test_the_scenario_records_the_device_and_flags_noisy_windows(fake_scenario):
    from engines.training.config import TrainConfig

    scenario, data = fake_scenario
    r = scenario.run_framework("fake", data, TrainConfig("fan_arch1", batch_size=4), batch_sizes=(1, 2),
                               warmup_iters=0, measure_iters=2)
    assert r.status == "ok", r.message
    assert r.environment.device == "cpu" and r.environment.noisy is True
    assert r.train.noisy is True and r.train.other_cpu_cores == 1.5
    assert all(p.noisy and p.other_cpu_cores == 1.5 for p in r.inference)


def test_require_gpu_refuses_a_cpu_fallback_only_where_there_is_a_gpu(fake_scenario, monkeypatch):
    from engines import machine
    from engines.training.config import TrainConfig

    scenario, data = fake_scenario
    cfg = TrainConfig("fan_arch1", batch_size=4)
    assert scenario.run_framework("fake", data, cfg, require_gpu=True).status == "ok"  # no GPU here: runs
    real = machine.fingerprint
    monkeypatch.setattr(machine, "fingerprint", lambda **kw: {**real(**kw), "gpu": "NVIDIA H200"})
    refused = scenario.run_framework("fake", data, cfg, require_gpu=True)
    assert refused.status == "error" and refused.train is None
    assert "refused (GPU required)" in refused.message and "./lab install" in refused.message
    assert scenario.run_framework("fake", data, cfg).status == "ok"  # without the setting it runs (and is marked)
    monkeypatch.setattr(FakeEngine, "device_label", "cuda:0 NVIDIA H200")
    assert scenario.run_framework("fake", data, cfg, require_gpu=True).status == "ok"


def test_require_gpu_is_a_policy_not_part_of_any_key():
    plain, strict = RunSpec(), RunSpec(require_gpu=True)
    assert plain.job("jax").job_key("fp") == strict.job("jax").job_key("fp")
    assert plain.job("jax").train_key("fp") == strict.job("jax").train_key("fp")
    assert plain.comparison_key() == strict.comparison_key()
    assert strict.job("jax").require_gpu is True  # the worker sees it
    with pytest.raises(ValueError, match="require_gpu: must be true or false"):
        RunSpec(require_gpu="yes")


def _stored(device: str, gpu: str | None) -> RunResult:
    spec = RunSpec(frameworks=("pytorch",)).job("pytorch")
    return RunResult(framework="pytorch", spec=spec.to_dict(),
                     environment=Environment(device=device, gpu=gpu, cpu="x", python="3"),
                     inference=[InferencePoint(batch_size=1, latency_ms=Latency(1, 1, 1, 1, 0),
                                               throughput_images_per_s=1.0)])


def test_a_cached_cpu_fallback_does_not_answer_a_request_that_requires_the_gpu():
    from engines.runs.queue import _serves

    strict, plain = RunSpec(require_gpu=True), RunSpec()
    fell_back = _stored("cpu", "NVIDIA H200")
    assert _serves(plain, fell_back) and not _serves(strict, fell_back)
    assert _serves(strict, _stored("cpu", None))  # a machine without a GPU: nothing fell back
    assert _serves(strict, _stored("cuda:0 NVIDIA H200", "NVIDIA H200")) and not _serves(strict, None)


# -- the command line's table -------------------------------------------------------------------------
def test_cli_table_shows_devices_marks_noisy_timings_and_mixed_devices():
    from engines.cli import conditions_lines, results_table

    gpu = _stored("cuda:0 NVIDIA H200", "NVIDIA H200")
    cpu = _stored("cpu", "NVIDIA H200")
    cpu.framework = "jax"
    cpu.train = Train(images_per_s=50.0, noisy=True, other_cpu_cores=1.2)
    cpu.inference[0].noisy, cpu.inference[0].other_cpu_cores = True, 1.4
    table = results_table([gpu, cpu])
    header, _, first, second = table.splitlines()
    assert "device" in header.split()
    assert "cuda:0 NVIDIA H200" in first and "*" not in first
    assert "50*" in second and "1*" in second.split()
    lines = conditions_lines([gpu, cpu])
    assert lines[0].startswith("warning: mixed devices: PyTorch on cuda:0 NVIDIA H200; JAX/Flax on the CPU")
    assert lines[1].startswith("* noisy:") and "jax training (1.2 cores), jax batch 1 (1.4 cores)" in lines[1]
    assert conditions_lines([gpu]) == []


def test_cli_refuses_an_unusable_thread_setting(monkeypatch, capsys):
    from engines.cli import main

    monkeypatch.setenv("LAB_CPU_THREADS", "lots")
    assert main(["run", "--frameworks", "pytorch"]) == 2
    assert "error: LAB_CPU_THREADS must be a whole number" in capsys.readouterr().err


def test_cli_require_gpu_reaches_the_spec():
    from engines.cli import build_parser, spec_from_args

    args = build_parser().parse_args(["run", "--frameworks", "pytorch", "--require-gpu"])
    assert spec_from_args(args).require_gpu is True
    assert spec_from_args(build_parser().parse_args(["run"])).require_gpu is False


# -- ./lab doctor -------------------------------------------------------------------------------------
NO_GPU = {"cpu": "Fake CPU", "logical_cpus": 2, "physical_cores": 2, "cpu_threads": "2 (LAB_CPU_THREADS unset)",
          "gpus": [], "nvml": "no NVIDIA driver", "driver": None, "driver_source": None, "cuda": None,
          "driver_notes": ["nvidia-smi is not on PATH"], "cpu_only": False, "install_plan": None,
          "install_why": "no NVIDIA driver found", "install_warnings": [], "python": "3.11"}
H200 = {**NO_GPU, "gpus": ["NVIDIA H200"], "driver": "580.82.07", "driver_source": "nvidia-smi", "driver_notes": [],
        "install_plan": "requirements-gpu-cuda13.txt", "install_why": "driver 580.82.07 meets CUDA 13"}


def canned(device_of: dict[str, str], capable: dict[str, bool] | None = None) -> list[doctor.Probe]:
    capable = capable or {}
    return [doctor.Probe(fw, device=device_of[fw], build=f"{fw} build", gpu_capable=capable.get(fw, False),
                         versions={fw: "1.0"}, threads={"cpus": 2}, seconds=1.0,
                         warnings=["failed call to cuInit: CUDA_ERROR_NO_DEVICE"] if capable.get(fw) else [])
            for fw in device_of]


def test_doctor_on_a_machine_without_a_gpu_is_ok():
    rep = doctor.report(NO_GPU, canned(dict.fromkeys(FRAMEWORKS, "cpu")))
    assert rep["ok"] and rep["mixed"] is None
    assert {r["state"] for r in rep["frameworks"]} == {"cpu"}
    assert "on the CPU (no NVIDIA GPU or driver here)" in doctor.format_report(rep)


def test_doctor_names_each_fallback_and_what_to_run():
    probes = canned({"keras": "cpu", "tensorflow": "cpu", "pytorch": "cuda:0 NVIDIA H200", "jax": "cpu"},
                    capable={"tensorflow": True})
    rep = doctor.report(H200, probes)
    rows = {r["framework"]: r for r in rep["frameworks"]}
    assert not rep["ok"] and rows["pytorch"]["state"] == "gpu" and rows["jax"]["state"] == "falls back"
    assert "./lab install" in rows["jax"]["fix"] and "jax[cuda13]" in rows["jax"]["fix"]
    assert "from requirements-gpu-cuda13.txt" in rows["jax"]["fix"]  # the file this driver gets
    assert "did not start (failed call to cuInit" in rows["tensorflow"]["verdict"]
    assert "./lab install --dry-run" in rows["tensorflow"]["fix"]
    assert "would mix devices" in rep["mixed"] and "--require-gpu" in rep["mixed"]
    text = doctor.format_report(rep)
    assert "fix:" in text and "pip install" not in text and text.rstrip().endswith("not ok: see the fix lines above")
    cpu_torch = doctor.report(H200, canned({"pytorch": "cpu"}))["frameworks"][0]
    assert "CPU-only build" in cpu_torch["fix"] and "remove .venv and run `./lab install`" in cpu_torch["fix"]
    only = doctor.report({**H200, "cpu_only": True}, canned({"jax": "cpu"}))["frameworks"][0]
    assert "LAB_CPU_ONLY=1" in only["fix"]


def test_doctor_parses_a_probes_output():
    said = ("E0000 00:00:1796178525.553922   10524 cuda_platform.cc:52] failed call to cuInit: UNKNOWN\n"
            "E0000 00:00:1796178599.000001   10524 cuda_platform.cc:52] failed call to cuInit: UNKNOWN\nunrelated\n")
    ok = doctor.parse_probe("jax", 'noise\n{"framework": "jax", "device": "cpu", "build": "b"}\n', said, 0)
    assert ok.device == "cpu" and ok.warnings == ["failed call to cuInit: UNKNOWN"]  # log prefix gone, once
    bad = doctor.parse_probe("jax", "", "Traceback\nImportError: no jaxlib\n", 1)
    assert bad.error == "the probe exited with code 1: ImportError: no jaxlib"


def fake_smi(folder: Path, driver: str = "580.82.07", name: str = "NVIDIA H200") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    exe = folder / "nvidia-smi"
    exe.write_text("#!/bin/sh\ncase \"$*\" in\n"
                   f"  *driver_version*) echo {driver} ;;\n  *compute_cap*) echo 9.0 ;;\n"
                   f"  *query-gpu=name*) echo '{name}' ;;\n  *) exit 2 ;;\nesac\n")
    exe.chmod(0o755)
    return folder


def test_doctor_command_with_a_fake_nvidia_smi(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("PATH", f"{fake_smi(tmp_path / 'bin')}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.delenv("LAB_CPU_ONLY", raising=False)
    args = doctor.argparse.Namespace(json=True, frameworks="pytorch,jax")
    rc = doctor.command(args, probe=lambda names: canned(dict.fromkeys(names, "cpu")))
    rep = json.loads(capsys.readouterr().out)
    assert rc == 1 and rep["machine"]["driver"] == "580.82.07"
    assert rep["machine"]["install_plan"] == "requirements-gpu-cuda13.txt"
    assert [r["state"] for r in rep["frameworks"]] == ["falls back", "falls back"]
    args = doctor.argparse.Namespace(json=False, frameworks="nope")
    assert doctor.command(args) == 2


def test_the_apps_probe_runs_on_idle_cpu_and_the_doctors_at_a_lower_nice():
    """The home page's background probe must not slow the pages (SCHED_IDLE); `./lab
    doctor`'s, which someone waits for in a terminal, runs at nice PROBE_NICE."""
    import shutil

    if not (shutil.which("chrt") and shutil.which("nice")):
        pytest.skip("util-linux's chrt or coreutils' nice is not installed")
    show = [sys.executable, "-c", "import os; print(os.sched_getscheduler(0) == os.SCHED_IDLE, os.nice(0))"]
    idle = subprocess.run(doctor.low_priority(show, idle=True), capture_output=True, text=True, check=True)
    niced = subprocess.run(doctor.low_priority(show, idle=False), capture_output=True, text=True, check=True)
    assert idle.stdout.split()[0] == "True"
    assert niced.stdout.split() == ["False", str(min(19, os.nice(0) + doctor.PROBE_NICE))]


def test_a_real_probe_runs_in_its_own_process():
    probe = doctor.run_probe("pytorch")
    assert probe.error is None, probe.error
    assert probe.device == "cpu" and "torch" in probe.build and probe.gpu_capable is False
    assert probe.threads["intra_op"] == threads.cpu_threads() and probe.seconds > 0


def test_home_page_shows_where_each_framework_computes(monkeypatch):
    from streamlit.testing.v1 import AppTest

    import labui.backend
    from labui import doctor as doctor_ui

    monkeypatch.setattr(labui.backend, "start_runner", lambda: None)
    monkeypatch.setenv("LAB_PROBE_ON_HOME", "1")
    monkeypatch.setattr(doctor, "machine_report", lambda: H200)
    monkeypatch.setattr(doctor, "probe_all", lambda idle=False: canned({"keras": "cpu", "tensorflow": "cpu",
                                                             "pytorch": "cuda:0 NVIDIA H200", "jax": "cpu"}))
    doctor_ui.forget()
    try:
        probing = doctor_ui.probing()
        probing._thread.join(30)  # the page shows the report once the probe is done
        at = AppTest.from_file(str(REPO / "app.py"), default_timeout=90).run()
        assert not at.exception, at.exception
        table = {row["framework"]: row for row in markdown_tables(at)[0]}
        assert table["pytorch"]["computes on"] == "cuda:0 NVIDIA H200" and table["jax"]["computes on"] == "cpu"
        warnings = " ".join(str(w.value) for w in at.warning)
        assert "**JAX/Flax** falls back to the CPU" in warnings and "./lab install" in warnings
        assert "would mix devices" in warnings
    finally:
        doctor_ui.forget()


# -- reference figures ----------------------------------------------------------------------------------
def reference_doc(**changes) -> dict:
    rows = [{"framework": fw, "architecture": "fan_arch1", "variant": "default", "batch_size": bs, "status": "ok",
             "images_per_s": speed * bs, "energy_j_per_1000_images": 2.5, "allocator_peak_bytes": 2**20,
             "nvml_process_memory_bytes": 2**29} for fw, speed in (("pytorch", 900.0), ("jax", 1100.0))
            for bs in (1, 32, 128)]
    return {"kind": ref.KIND, "version": ref.VERSION, "smoke": False, "created_at": "2031-05-02T10:00:00+00:00",
            "machine": {"gpu": "NVIDIA Fake GPU 99GB", "driver": "999.1"}, "plan": {"resolution": 224},
            "rows": rows, **changes}


def test_reference_files_are_checked_and_a_smoke_run_never_counts(tmp_path):
    (tmp_path / "gpu.json").write_text(json.dumps(reference_doc()))
    (tmp_path / "smoke.json").write_text(json.dumps(reference_doc(smoke=True)))
    (tmp_path / "cpu.json").write_text(json.dumps(reference_doc(machine={"gpu": None})))
    (tmp_path / "broken.json").write_text("{")
    docs, problems = ref.load(tmp_path)
    assert [d["file"] for d in docs] == ["gpu.json"] and ref.label(docs[0]) == "NVIDIA Fake GPU 99GB, 2031-05-02"
    assert len(problems) == 3 and any("smoke run" in p for p in problems)
    assert any("machine.gpu is missing" in p for p in problems)
    assert ref.load(tmp_path / "absent") == ([], [])


def test_published_goals():
    jax_default = ref.goal("jax", "resnet50", ref.DEFAULT, 12_000.0)
    assert jax_default["best"] == 11_739 and jax_default["target"] == 11_500 and jax_default["verdict"] == "pass"
    assert ref.goal("jax", "resnet50", ref.DEFAULT, 11_000.0)["verdict"] == "fail"
    torch = ref.goal("pytorch", "resnet50", ref.BF16_CL_COMPILE, 18_000.0)
    assert torch["best"] == 19_482 and torch["verdict"] == "pass" and torch["share"] == pytest.approx(18_000 / 19_482)
    assert ref.goal("jax", "resnet50", ref.AUTOTUNE_0, 60.0)["verdict"] == "no reference"  # shown, not a goal
    assert ref.goal("pytorch", "vit_b_16", ref.BF16, 1.0)["verdict"] == "no reference"
    assert ref.goal("jax", "vit_b_16", ref.DEFAULT, None)["verdict"] == "not measured"


# -- the pages: a mixed-device comparison with noisy timings, beside a reference -----------------------
def test_speed_page_marks_mixed_devices_and_noisy_timings_and_shows_the_reference(tmp_path, monkeypatch):
    from streamlit.testing.v1 import AppTest
    from test_app_data import make_result

    import labui.backend
    from engines.runs.store import ResultStore

    monkeypatch.setattr(labui.backend, "start_runner", lambda: None)
    folder = tmp_path / "reference"
    folder.mkdir()
    (folder / "fake-gpu.json").write_text(json.dumps(reference_doc()))
    monkeypatch.setattr(ref, "REFERENCE_DIR", folder)
    store = ResultStore()
    spec = RunSpec(dataset="digits", architecture="fan_arch1", frameworks=("pytorch", "jax"), batch_sizes=(1, 32, 128))
    for fw, gpu in (("pytorch", True), ("jax", False)):
        d = make_result(fw, batch_sizes=(1, 32, 128), gpu=gpu)
        d["environment"]["device"] = "cuda:0 NVIDIA H100 80GB HBM3" if gpu else "cpu"
        if not gpu:
            d["inference"][0].update(noisy=True, other_cpu_cores=1.3)
        d["spec"] = spec.job(fw).to_dict()
        store.put(spec.job(fw).job_key("fp"), RunResult.from_dict(d), comparison=spec)
    at = AppTest.from_file(str(REPO / "app.py"), default_timeout=90).run()
    at.switch_page("pages/speed.py").run()
    assert not at.exception, at.exception
    errors = " ".join(str(e.value) for e in at.error)
    assert "Not a like-for-like comparison" in errors and "JAX/Flax on the CPU" in errors
    warnings = " ".join(str(w.value) for w in at.warning)
    assert "Noisy timings" in warnings and "JAX/Flax batch 1: other work 1.3 cores" in warnings
    assert "Reference: what a GPU does" in [h.value for h in at.header]
    table = next(t.value for t in at.dataframe if "reference" in t.value.columns)
    assert set(table["reference"]) == {"NVIDIA Fake GPU 99GB, 2031-05-02"} and "yours" in table.columns
    at.switch_page("pages/energy_memory.py").run()
    assert not at.exception, at.exception
    assert "Not a like-for-like comparison" in " ".join(str(e.value) for e in at.error)
    assert any("reference" in t.value.columns for t in at.dataframe)


# -- the acceptance script ------------------------------------------------------------------------------
def test_gpu_acceptance_smoke_runs_the_same_code_at_tiny_sizes(tmp_path):
    out = tmp_path / "smoke.json"
    done = subprocess.run([sys.executable, "benchmarks/gpu_acceptance.py", "--smoke", "--frameworks", "pytorch,jax",
                           "--json", str(out)], cwd=REPO, capture_output=True, text=True, timeout=1500)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    doc = json.loads(out.read_text())
    assert doc["kind"] == ref.KIND and doc["smoke"] is True and doc["machine"]["cpu_threads"] >= 1
    seen = {(r["framework"], r["variant"], r["batch_size"]) for r in doc["rows"]}
    assert seen == {(fw, v, bs) for fw, vs in (("pytorch", ("default", "bf16", "bf16+channels-last+compile")),
                                               ("jax", ("default", "bf16", "default, XLA autotune 0")))
                    for v in vs for bs in (1, 2)}
    for r in doc["rows"]:
        assert r["status"] == "ok" and r["device"] == "cpu"
        assert r["images_per_s"] > 0 and r["bare_images_per_s"] > 0 and r["ratio"] > 0
        assert "goal" not in r  # a smoke run is compared with nothing
    assert "GPU acceptance (SMOKE" in done.stdout and "harness/bare: lowest" in done.stdout
    with pytest.raises(ref.ReferenceError, match="smoke run"):
        ref.check(doc)
