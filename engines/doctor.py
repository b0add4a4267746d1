"""`./lab doctor` (`python -m engines doctor [--json]`): where each framework will compute.

The machine (CPU cores, the CPU thread setting, GPUs, NVIDIA driver, CUDA, what `./lab
install` would add for that driver), and for each framework its installed version and
build and the device it will actually compute on. That device is not guessed from what
is installed: a short probe runs in the framework's own worker process (a fresh
interpreter with the worker's environment and CPU pinning, as a run gets), builds the
framework's engine and asks it (engines.frameworks.runtimes.device: a tiny matrix
product, and where its result lives). A framework that would fall back to the CPU on a
machine with a GPU gets the reason (from its build) and what to run, always through
`./lab`, never a hand-written pip line.

The home page shows the same report, probed once per server (labui.doctor).
Exit codes: 0 every installed framework computes where it should, 1 one would fall back
to the CPU on this GPU machine (or its probe failed).
"""
from __future__ import annotations

import argparse
import concurrent.futures
import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
import threading
import time
from dataclasses import asdict, dataclass, field

from engines import devices
from engines.frameworks import FRAMEWORKS, info, missing
from engines.paths import REPO_ROOT

PROBE_TIMEOUT_S = 180  # importing TensorFlow on a busy laptop takes a while; a wedged driver forever
PROBE_FLAG = "--probe"
PROBE_STOPPED = "stopped: a job needed the cores"
# `./lab doctor`'s probes run at this lower CPU priority (`nice`). An idle machine runs
# them as fast.
PROBE_NICE = 10
# The app's probe (on its first home page, in the background) runs only on CPU that nothing
# else wants: Linux's SCHED_IDLE, through util-linux's `chrt --idle 0`. At nice 10 its six
# framework imports still took about a quarter of a 2-core machine from the pages opened
# meanwhile (six processes of weight 110 against two of 1024), and every page took up to
# twice as long in the app's first minute (issue 16).
PROBE_IDLE = ("--idle", "0")
# Lines a runtime prints on stderr that explain a GPU it did not use, without their log
# prefix ("E0000 00:00:1796178525.553922   10524 cuda_platform.cc:52] ").
GPU_WORDS = ("cuda", "cuinit", "gpu", "nvidia", "cudnn", "driver")
GLOG_PREFIX = re.compile(r"^[IWEF]\d{4} [\d:.]+\s+\d+ [\w.]+:\d+\] ")


@dataclass
class Probe:
    """What one framework's probe process found (or why there is nothing)."""

    framework: str
    installed: bool = True
    device: str | None = None
    build: str | None = None
    gpu_capable: bool | None = None
    versions: dict = field(default_factory=dict)
    threads: dict | None = None
    seconds: float | None = None
    warnings: list[str] = field(default_factory=list)
    error: str | None = None

    @property
    def kind(self) -> str | None:
        return devices.kind(self.device)


@dataclass
class Verdict:
    state: str  # "gpu", "cpu", "falls back", "not installed", "probe failed"
    text: str
    fix: str | None = None


# -- the probe (runs in its own process) ----------------------------------------------
def probe_here(framework: str) -> Probe:
    """The probe's body, in a fresh worker-like process: the worker's environment and CPU
    pinning, the framework's engine, its device, build, versions and thread pools."""
    from engines import threads
    from engines.frameworks import engine_class, runtimes
    from engines.runs import workerenv
    from engines.training.config import TrainConfig

    workerenv.apply({"frameworks": [framework]})
    threads.pin(threads.cpu_threads())
    t0 = time.perf_counter()
    runtime = info(framework).runtime
    cls = engine_class(framework)
    applied = runtimes.set_threads(runtime, threads.cpu_threads())  # as a run does, before the runtime starts
    engine = cls(TrainConfig("fan_arch1"))
    device = engine.device()
    built = runtimes.build(runtime)
    return Probe(framework, device=device, build=built["build"], gpu_capable=built["gpu_capable"],
                 versions={k: str(v) for k, v in engine.versions().items() if v is not None}, threads=applied,
                 seconds=time.perf_counter() - t0)


def _probe_main(framework: str) -> int:
    """`python -m engines.doctor --probe NAME`: one JSON line on stdout (a framework's own
    prints go to stderr, as in a worker)."""
    out = os.fdopen(os.dup(1), "w", encoding="utf-8")
    os.dup2(2, 1)
    try:
        probe = probe_here(framework)
    except Exception as e:  # noqa: BLE001 - the parent reports it
        probe = Probe(framework, error=f"{type(e).__name__}: {(str(e).strip().splitlines() or [''])[0]}")
    out.write(json.dumps(asdict(probe)) + "\n")
    out.flush()
    os._exit(0)  # no interpreter teardown: TensorFlow can crash while unloading


def low_priority(cmd: list[str], idle: bool) -> list[str]:
    """`cmd` at the probes' CPU priority: on idle CPU only (`idle`, where `chrt` is
    installed), else at nice PROBE_NICE (where `nice` is)."""
    chrt, nice = shutil.which("chrt"), shutil.which("nice")
    if idle and chrt:
        return [chrt, *PROBE_IDLE, *cmd]
    return [nice, "-n", str(PROBE_NICE), *cmd] if nice and PROBE_NICE else cmd


def run_probe(framework: str, timeout_s: float = PROBE_TIMEOUT_S, stop: threading.Event | None = None,
              idle: bool = False) -> Probe:
    """One framework's probe in a fresh interpreter with the worker's environment, at a low
    CPU priority (low_priority); `stop` set ends it early (error PROBE_STOPPED)."""
    from engines.runs.workerenv import with_lab_path, worker_env

    absent = missing(framework)
    if absent is not None:
        return Probe(framework, installed=False, error=f"not installed ({absent} is missing): "
                                                       f"{info(framework).install_hint}")
    env = with_lab_path(worker_env({"frameworks": [framework]}))
    cmd = low_priority([sys.executable, "-m", "engines.doctor", PROBE_FLAG, framework], idle)
    proc = subprocess.Popen(cmd, cwd=REPO_ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            stdin=subprocess.DEVNULL)
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            stdout, stderr = proc.communicate(timeout=0.2)
            return parse_probe(framework, stdout, stderr, proc.returncode)
        except subprocess.TimeoutExpired:
            why = (PROBE_STOPPED if stop is not None and stop.is_set() else
                   f"the probe gave no answer in {timeout_s:g} s" if time.monotonic() > deadline else None)
            if why:
                proc.kill()
                proc.communicate()
                return Probe(framework, error=why)


def parse_probe(framework: str, stdout: str, stderr: str, returncode: int) -> Probe:
    """The probe's JSON line, with the GPU-related lines of its stderr as warnings."""
    line = next((x for x in reversed(stdout.splitlines()) if x.startswith("{")), None)
    said = [GLOG_PREFIX.sub("", x).strip() for x in stderr.splitlines()]
    warnings = list(dict.fromkeys(x for x in said if x and any(w in x.lower() for w in GPU_WORDS)))[:3]
    if line is None:
        tail = [x for x in stderr.splitlines() if x.strip()][-1:] or ["no output"]
        return Probe(framework, warnings=warnings, error=f"the probe exited with code {returncode}: {tail[0]}")
    data = json.loads(line)
    data["warnings"] = warnings
    return Probe(**data)


def probe_all(frameworks=None, timeout_s: float = PROBE_TIMEOUT_S, idle: bool = False) -> list[Probe]:
    """Every framework's probe, side by side (each its own process), in the table's order;
    `idle`: on idle CPU only (the app's background probe). A job this process runs stops
    them before its first task (runs.spares): those probes come back with error
    PROBE_STOPPED."""
    from engines.runs.spares import background_imports

    names = list(frameworks or FRAMEWORKS)
    stop = threading.Event()
    with background_imports(stop.set), concurrent.futures.ThreadPoolExecutor(max_workers=max(1, len(names))) as pool:
        return list(pool.map(lambda fw: run_probe(fw, timeout_s, stop, idle), names))


# -- the machine ------------------------------------------------------------------------
def gpu_plan_module():
    """tools/gpu_plan.py (standard library only; ./lab runs it before .venv exists)."""
    spec = importlib.util.spec_from_file_location("gpu_plan", REPO_ROOT / "tools" / "gpu_plan.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("gpu_plan", module)  # its dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def smi_gpu_names(plan) -> list[str]:
    """GPU names from nvidia-smi, for a machine whose NVML Python binding found none."""
    import shutil

    exe = shutil.which("nvidia-smi")
    if exe is None:
        return []
    out, _ = plan.run_nvidia_smi(exe, "name")
    return [x.strip() for x in (out or "").splitlines() if x.strip()]


def machine_report() -> dict:
    """CPU, thread setting, GPUs (NVML, else nvidia-smi), driver and what ./lab installs."""
    from engines import threads
    from engines.machine import machine_info

    m = machine_info()
    plan_mod = gpu_plan_module()
    detected = plan_mod.detect()
    cpu_only = os.environ.get("LAB_CPU_ONLY", "") not in ("", "0")
    plan = plan_mod.choose(detected, cpu_only=cpu_only)
    gpus = [f"{g.name} ({g.memory_bytes / 2**30:.0f} GiB)" for g in m.gpus] or smi_gpu_names(plan_mod)
    return {"cpu": m.cpu, "logical_cpus": m.cores, "physical_cores": threads.physical_cores(),
            "cpu_threads": threads.describe(), "gpus": gpus, "nvml": m.nvml_error,
            "driver": m.driver or detected.driver,
            "driver_source": "NVML" if m.driver else detected.driver_source, "cuda": m.cuda_driver,
            "driver_notes": list(detected.notes), "cpu_only": cpu_only,
            "install_plan": plan.build.requirements if plan.build else None, "install_why": plan.reason,
            "install_warnings": list(plan.warnings), "python": m.python}


def has_gpu(machine: dict) -> bool:
    """An NVIDIA GPU or driver is here: a framework on the CPU is then a fallback."""
    return bool(machine["gpus"] or machine["driver"])


# -- the verdicts -------------------------------------------------------------------------
def verdict(probe: Probe, machine: dict) -> Verdict:
    """Where the framework computes, in words, and what to run when it falls back."""
    label = info(probe.framework).label
    if not probe.installed:
        return Verdict("not installed", probe.error or "not installed")
    if probe.error:
        return Verdict("probe failed", probe.error, "run `./lab doctor` again; `./lab install` repairs .venv")
    if probe.kind != devices.CPU:
        return Verdict("gpu", f"on the GPU ({probe.device})")
    if not has_gpu(machine):
        return Verdict("cpu", "on the CPU (no NVIDIA GPU or driver here)")
    return Verdict("falls back", f"falls back to the CPU although this machine has a GPU: {_why(probe)}",
                   _fix(probe, machine, label))


def _why(probe: Probe) -> str:
    if probe.gpu_capable is False:
        return "the installed build cannot use a GPU (see build)"
    said = f" ({probe.warnings[0]})" if probe.warnings else ""
    return f"its GPU build is installed but did not start{said}"


def _fix(probe: Probe, machine: dict, label: str) -> str:
    if machine["cpu_only"]:
        return "LAB_CPU_ONLY=1 is set, so ./lab installed no GPU builds: unset it and run `./lab install`"
    if probe.gpu_capable and machine["install_plan"] is None:
        return f"this driver runs none of the GPU builds: {machine['install_why']} (`./lab install --dry-run`)"
    if probe.gpu_capable:
        return ("the driver may be too old for this build: `./lab install --dry-run` says what this driver runs, "
                "`./lab install` installs it")
    if info(probe.framework).gpu_install_hint is None:  # the PyPI build runs on a GPU: a CPU wheel replaced it
        return (f"this {label} is a CPU-only build, where PyPI's runs on a GPU: remove .venv and run "
                "`./lab install` (`./lab install --dry-run` shows the plan)")
    return devices.gpu_fix(probe.framework, machine["install_plan"])


# -- the report --------------------------------------------------------------------------
def report(machine: dict, probes: list[Probe]) -> dict:
    """Everything `./lab doctor --json` prints; the text report and the home page read it."""
    rows = []
    for p in probes:
        v = verdict(p, machine)
        rows.append({**asdict(p), "label": info(p.framework).label, "state": v.state, "verdict": v.text,
                     "fix": v.fix})
    on = {r["label"]: r["device"] for r in rows if r["device"]}
    kinds = {devices.kind(d) for d in on.values()}
    mix = None
    if len(kinds) > 1:
        mix = ("a comparison of " + ", ".join(on) + " would mix devices (" + "; ".join(f"{k} on {d}" for k, d in
               on.items()) + "): `--require-gpu` (the Run page's \"Require the GPU\") refuses the ones on the CPU")
    return {"machine": machine, "frameworks": rows, "mixed": mix,
            "ok": not any(r["state"] in ("falls back", "probe failed") for r in rows)}


def _line(label: str, text) -> str:
    return f"  {label + ':':<19}{text}"


def format_report(rep: dict) -> str:
    m = rep["machine"]
    gpu = ", ".join(m["gpus"]) if m["gpus"] else "none"
    driver = f"{m['driver']} (from {m['driver_source']})" if m["driver"] else "none found"
    lines = ["lab doctor: this machine, and where each framework computes", "", "machine",
             _line("CPU", f"{m['cpu']}: {m['logical_cpus']} logical CPUs, {m['physical_cores']} physical cores"),
             _line("CPU threads", m["cpu_threads"]), _line("GPU", gpu),
             _line("NVIDIA driver", driver + (f", CUDA {m['cuda']}" if m["cuda"] else ""))]
    if not m["driver"]:
        lines += [" " * 21 + f"({note})" for note in m["driver_notes"]]
    lines.append(_line("./lab install", f"{m['install_plan'] or 'requirements.txt only'}: {m['install_why']}"))
    lines += [_line("warning", w) for w in m["install_warnings"]]
    for r in rep["frameworks"]:
        lines += ["", f"{r['label']} ({r['framework']})"]
        if r["versions"]:
            lines.append(_line("version", ", ".join(f"{k} {v}" for k, v in r["versions"].items())))
        if r["build"]:
            lines.append(_line("build", r["build"]))
        where = r["device"] or "-"
        if r["seconds"] is not None:
            pools = ", ".join(f"{k.replace('_', '-')} {v}" for k, v in (r["threads"] or {}).items())
            where += f"  (probe {r['seconds']:.1f} s in its own worker process; threads: {pools})"
        lines += [_line("computes on", where), _line("verdict", r["verdict"])]
        lines += [_line("said", w) for w in r["warnings"] if r["state"] in ("falls back", "probe failed")]
        if r["fix"]:
            lines.append(_line("fix", r["fix"]))
    lines.append("")
    if rep["mixed"]:
        lines.append(f"warning: {rep['mixed']}")
    lines.append("ok: every installed framework computes where it should" if rep["ok"]
                 else "not ok: see the fix lines above")
    return "\n".join(lines)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.add_argument("--frameworks", metavar="A,B", help=f"probe only these ({', '.join(FRAMEWORKS)})")


def command(args, probe=probe_all) -> int:
    """The doctor command; `probe` is replaceable (tests give canned probes)."""
    names = [x.strip() for x in (args.frameworks or "").split(",") if x.strip()] or list(FRAMEWORKS)
    unknown = [x for x in names if x not in FRAMEWORKS]
    if unknown:
        print(f"error: unknown framework {', '.join(unknown)}; choose from {', '.join(FRAMEWORKS)}", file=sys.stderr)
        return 2
    rep = report(machine_report(), probe(names))
    print(json.dumps(rep, indent=1) if args.json else format_report(rep))
    return 0 if rep["ok"] else 1


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m engines.doctor", description=__doc__.splitlines()[0])
    add_arguments(ap)
    return command(ap.parse_args(argv))


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == PROBE_FLAG:
        _probe_main(sys.argv[2])
    sys.exit(main())
