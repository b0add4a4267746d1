#!/usr/bin/env python3
"""Which GPU builds of JAX and TensorFlow `./lab` installs on this machine, and why.

A teacher who skipped the README's extra `pip install` lines got PyTorch on the GPU and
JAX/TensorFlow on the CPU in one comparison. So `./lab` asks this script which GPU
requirement file fits the NVIDIA driver and installs it into the same .venv. It runs with
the system Python before .venv exists, so it uses the standard library only.

    python3 tools/gpu_plan.py            prints the GPU requirement file to install, or nothing
    python3 tools/gpu_plan.py --explain  the same decision in words (`./lab install --dry-run`)

The driver version comes from `nvidia-smi`, else from /proc/driver/nvidia/version (a
driver whose nvidia-smi is missing or broken). `LAB_CPU_ONLY=1` chooses no GPU file;
`LAB_NVIDIA_PROC_VERSION` names another /proc-style file (the tests use it).
"""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass, field

PROC_VERSION = "/proc/driver/nvidia/version"
NVIDIA_SMI_TIMEOUT_S = 30  # a wedged driver can hang nvidia-smi; setting up must not hang with it


@dataclass(frozen=True)
class CudaBuild:
    """One GPU requirement file and what a machine needs to run it."""

    cuda_major: int
    requirements: str  # relative to the repository root
    min_driver: tuple[int, ...]
    min_compute_capability: tuple[int, int]
    source: str  # where these minimums are stated


# Newest first: the first build this machine can run is chosen. Minimums as their projects
# state them: JAX's installation guide ("the driver version must be >= 525 for CUDA 12 on
# Linux, and >= 580 for CUDA 13"; CUDA 13 needs SM >= 7.5, CUDA 12 SM >= 5.2) and
# TensorFlow's pip guide (driver >= 525.60.13; TensorFlow 2.21 is built with CUDA 12.5,
# and `tensorflow[and-cuda]` installs CUDA 12 libraries in both files).
BUILDS = (
    CudaBuild(13, "requirements-gpu-cuda13.txt", (580,), (7, 5),
              "JAX's CUDA 13 wheels: driver >= 580, compute capability >= 7.5"),
    CudaBuild(12, "requirements-gpu-cuda12.txt", (525, 60, 13), (5, 2),
              "JAX's and TensorFlow's CUDA 12 wheels: driver >= 525.60.13, compute capability >= 5.2"),
)

# torch==2.13.0 from PyPI (requirements.txt) depends on cuda-toolkit==13.0.3 and the
# nvidia-*-cu13 libraries: it uses the GPU only with a driver that runs CUDA 13.
PYPI_TORCH_CUDA_MAJOR = 13

VERSION_RE = re.compile(r"\b(\d+\.\d+(?:\.\d+)?)\b")


@dataclass
class Machine:
    """What the setup step could learn about the NVIDIA driver and GPUs."""

    driver: str | None = None
    driver_source: str | None = None
    compute_capabilities: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # why a source gave nothing


@dataclass
class Plan:
    machine: Machine
    build: CudaBuild | None
    reason: str
    warnings: list[str] = field(default_factory=list)


def version_tuple(text: str) -> tuple[int, ...]:
    return tuple(int(part) for part in text.split("."))


def format_version(version: tuple[int, ...]) -> str:
    return ".".join(str(part) if i == 0 else f"{part:02d}" for i, part in enumerate(version))


def parse_nvidia_smi_driver(text: str) -> str | None:
    """The driver version from `nvidia-smi --query-gpu=driver_version --format=csv,noheader`:
    one line per GPU, all the same, e.g. "580.82.07"."""
    for line in text.splitlines():
        line = line.strip()
        if re.fullmatch(r"\d+\.\d+(?:\.\d+)?", line):
            return line
    return None


def parse_proc_version(text: str) -> str | None:
    """The driver version from /proc/driver/nvidia/version, whose first line reads e.g.
    "NVRM version: NVIDIA UNIX x86_64 Kernel Module  580.82.07  Wed Aug 27 ..." (or "...
    Open Kernel Module for x86_64  580.82.07  Release Build ..."). The GCC line is skipped."""
    for line in text.splitlines():
        if line.startswith("NVRM version:"):
            match = VERSION_RE.search(line.split("Module", 1)[-1])
            return match.group(1) if match else None
    return None


def parse_compute_capabilities(text: str) -> list[str]:
    """`nvidia-smi --query-gpu=compute_cap --format=csv,noheader`: one "9.0" per GPU."""
    return [line.strip() for line in text.splitlines() if re.fullmatch(r"\d+\.\d+", line.strip())]


def run_nvidia_smi(exe: str, query: str) -> tuple[str | None, str]:
    """(stdout, "") when nvidia-smi answered, else (None, why not)."""
    try:
        done = subprocess.run([exe, f"--query-gpu={query}", "--format=csv,noheader"],
                              capture_output=True, text=True, timeout=NVIDIA_SMI_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        return None, f"nvidia-smi gave no answer in {NVIDIA_SMI_TIMEOUT_S} s"
    except OSError as exc:
        return None, f"nvidia-smi could not run ({exc.strerror or exc})"
    if done.returncode != 0:
        said = (done.stdout.strip() or done.stderr.strip()).splitlines()
        return None, f"nvidia-smi failed (exit {done.returncode}{': ' + said[0] if said else ''})"
    return done.stdout, ""


def detect() -> Machine:
    """The driver from nvidia-smi, else from the /proc file; compute capabilities from
    nvidia-smi where it answers (they decide between CUDA 13 and 12 on older GPUs)."""
    machine = Machine()
    exe = shutil.which("nvidia-smi")
    if exe is None:
        machine.notes.append("nvidia-smi is not on PATH")
    else:
        out, why = run_nvidia_smi(exe, "driver_version")
        if out is not None:
            machine.driver = parse_nvidia_smi_driver(out)
            why = "" if machine.driver else f"nvidia-smi printed no driver version ({out.strip()[:80]!r})"
        if machine.driver:
            machine.driver_source = "nvidia-smi"
            caps, why_caps = run_nvidia_smi(exe, "compute_cap")
            machine.compute_capabilities = parse_compute_capabilities(caps or "")
            if not machine.compute_capabilities:
                machine.notes.append(why_caps or "nvidia-smi printed no compute capability")
            return machine
        machine.notes.append(why)
    proc = os.environ.get("LAB_NVIDIA_PROC_VERSION") or PROC_VERSION
    try:
        with open(proc, encoding="utf-8", errors="replace") as fh:
            text = fh.read()
    except OSError as exc:
        machine.notes.append(f"{proc}: {exc.strerror or exc}")
        return machine
    machine.driver = parse_proc_version(text)
    if machine.driver:
        machine.driver_source = proc
    else:
        machine.notes.append(f"{proc} names no driver version")
    return machine


def choose(machine: Machine, cpu_only: bool = False, platform: str = sys.platform) -> Plan:
    """The GPU build this machine can run, newest CUDA first, with the reason in words."""
    if cpu_only:
        return Plan(machine, None, "LAB_CPU_ONLY=1: no GPU builds are installed (GPU packages "
                                   "installed before stay; JAX and TensorFlow use them if present)")
    if not platform.startswith("linux"):
        return Plan(machine, None, f"JAX's and TensorFlow's CUDA wheels are for Linux; this is {platform}")
    if machine.driver is None:
        return Plan(machine, None, "no NVIDIA driver found: JAX, TensorFlow and PyTorch run on the CPU")
    driver = version_tuple(machine.driver)
    caps = [version_tuple(c) for c in machine.compute_capabilities]
    lowest_cap = min(caps) if caps else None
    refusals = []  # why each newer build was passed over
    driver_too_old = False  # the last refusal was the driver's (not the GPU's)
    for build in BUILDS:
        refusal = refuse(build, driver, lowest_cap)
        if refusal:
            refusals.append(refusal)
            driver_too_old = driver < build.min_driver
            continue
        why = f"driver {machine.driver} meets {build.source}"
        plan = Plan(machine, build, why + (f" ({'; '.join(refusals)})" if refusals else ""))
        if lowest_cap is None:
            plan.warnings.append("compute capability unknown (nvidia-smi did not report it): "
                                 "chosen from the driver alone")
        if build.cuda_major < PYPI_TORCH_CUDA_MAJOR:
            fix = "update the driver" if driver_too_old else "this GPU is too old for it"
            plan.warnings.append(f"PyTorch from PyPI is built with CUDA {PYPI_TORCH_CUDA_MAJOR} and will "
                                 f"run on the CPU here ({'; '.join(refusals)}): {fix}")
        return plan
    fix = "update the NVIDIA driver" if driver_too_old else "this GPU is older than the GPU builds support"
    return Plan(machine, None, f"this machine runs none of the GPU builds ({'; '.join(refusals)}): "
                               f"{fix}; the frameworks run on the CPU")


def refuse(build: CudaBuild, driver: tuple[int, ...], lowest_cap: tuple[int, ...] | None) -> str:
    """Why this machine cannot run the build, or "" when it can. An unknown compute
    capability does not refuse (the driver alone decides)."""
    if driver < build.min_driver:
        return f"CUDA {build.cuda_major} needs driver >= {format_version(build.min_driver)}"
    if lowest_cap is not None and lowest_cap < build.min_compute_capability:
        need = ".".join(map(str, build.min_compute_capability))
        return f"CUDA {build.cuda_major} needs compute capability >= {need}, a GPU here has " \
               f"{'.'.join(map(str, lowest_cap))}"
    return ""


LABEL_WIDTH = 20  # ./lab's dry run aligns its own lines to the same column


def labelled(label: str, text: str) -> str:
    return f"{label + ':':<{LABEL_WIDTH}}{text}"


def explain(plan: Plan) -> str:
    """The plan in a few lines, as `./lab install --dry-run` prints it."""
    machine = plan.machine
    found = f"{machine.driver} (from {machine.driver_source})" if machine.driver else "none found"
    lines = [labelled("NVIDIA driver", found)]
    if machine.compute_capabilities:
        lines.append(labelled("compute capability", ", ".join(machine.compute_capabilities)))
    lines += [" " * LABEL_WIDTH + f"({note})" for note in machine.notes]
    build = plan.build
    lines.append(labelled("GPU requirements", f"{build.requirements} (CUDA {build.cuda_major})" if build else "none"))
    lines.append(labelled("why", plan.reason))
    lines += [labelled("warning", w) for w in plan.warnings]
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    if argv not in ([], ["--explain"]):
        print(__doc__.strip().splitlines()[0], file=sys.stderr)
        print("usage: gpu_plan.py [--explain]", file=sys.stderr)
        return 2
    plan = choose(detect(), cpu_only=os.environ.get("LAB_CPU_ONLY", "") not in ("", "0"))
    if argv:
        print(explain(plan))
    elif plan.build:
        print(plan.build.requirements)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
