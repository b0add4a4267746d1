"""The GPU set-up step: tools/gpu_plan.py reads the NVIDIA driver (a fake nvidia-smi on
PATH, a fake /proc file) and picks the requirement file; `./lab install --dry-run` prints
that choice and its reason; `./lab install` installs it once per set of files (a fake venv
Python records the pip calls, so nothing is installed). Fast, CPU only."""
from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import gpu_plan  # tools/gpu_plan.py: pytest.ini puts tools/ on the path
import pytest

REPO = Path(__file__).resolve().parent.parent
TOOL = REPO / "tools" / "gpu_plan.py"


PROC_PROPRIETARY = ("NVRM version: NVIDIA UNIX x86_64 Kernel Module  550.54.14  Thu Feb 22 01:44:30 UTC 2024\n"
                    "GCC version:  gcc version 12.3.0 (Ubuntu 12.3.0-1ubuntu1~22.04)\n")
PROC_OPEN = ("NVRM version: NVIDIA UNIX Open Kernel Module for x86_64  580.82.07  Release Build  "
             "(dvs-builder@U22-I3-AF03-09-1)  Wed Aug 27 23:38:29 UTC 2025\n"
             "GCC version:  gcc version 13.3.0 (Ubuntu 13.3.0-6ubuntu2~24.04)\n")
SMI_FAILED = ("NVIDIA-SMI has failed because it couldn't communicate with the NVIDIA driver. "
              "Make sure that the latest NVIDIA driver is installed and running.")


def fake_nvidia_smi(folder: Path, driver: str | None, caps: tuple[str, ...] = ("9.0",)) -> Path:
    """An nvidia-smi that answers the two queries as the real one does (one line per GPU),
    or, with driver=None, fails as it does when the driver is not loaded."""
    folder.mkdir(parents=True, exist_ok=True)
    exe = folder / "nvidia-smi"
    if driver is None:
        body = f'echo "{SMI_FAILED}"\nexit 9\n'
    else:
        drivers = " ".join([driver] * max(1, len(caps)))
        body = ('case "$*" in\n'
                f"  *--query-gpu=driver_version*--format=csv,noheader*) printf '%s\\n' {drivers} ;;\n"
                f"  *--query-gpu=compute_cap*--format=csv,noheader*) printf '%s\\n' {' '.join(caps)} ;;\n"
                '  *) echo "unexpected arguments: $*" >&2; exit 2 ;;\n'
                'esac\n')
    exe.write_text("#!/bin/sh\n" + body)
    exe.chmod(0o755)
    return folder


# -- parsing what the driver prints -------------------------------------------------------
def test_parse_nvidia_smi_driver_takes_the_first_gpus_line():
    assert gpu_plan.parse_nvidia_smi_driver("580.82.07\n580.82.07\n") == "580.82.07"
    assert gpu_plan.parse_nvidia_smi_driver("  535.104.05  \n") == "535.104.05"
    assert gpu_plan.parse_nvidia_smi_driver(SMI_FAILED) is None
    assert gpu_plan.parse_nvidia_smi_driver("") is None


@pytest.mark.parametrize(("text", "version"), [(PROC_PROPRIETARY, "550.54.14"), (PROC_OPEN, "580.82.07"),
                                               ("GCC version:  gcc version 12.3.0\n", None), ("", None)])
def test_parse_proc_version_reads_the_nvrm_line_only(text, version):
    assert gpu_plan.parse_proc_version(text) == version


def test_parse_compute_capabilities():
    assert gpu_plan.parse_compute_capabilities("9.0\n7.5\n") == ["9.0", "7.5"]
    assert gpu_plan.parse_compute_capabilities("[N/A]\n") == []


# -- choosing the build --------------------------------------------------------------------
def machine(driver, caps=("9.0",)):
    return gpu_plan.Machine(driver=driver, driver_source="nvidia-smi" if driver else None,
                            compute_capabilities=list(caps))


@pytest.mark.parametrize(("driver", "caps", "cuda_major"), [
    ("580.82.07", ("9.0",), 13),
    ("580.65.06", ("8.6", "8.9"), 13),
    ("595.1", ("12.0",), 13),
    ("580.82.07", ("7.0",), 12),          # a V100: CUDA 13 dropped Volta
    ("580.82.07", ("8.0", "6.1"), 12),    # the oldest GPU decides
    ("575.57.08", ("9.0",), 12),
    ("550.54.14", ("9.0",), 12),
    ("525.60.13", ("8.0",), 12),
    ("525.60.11", ("8.0",), None),        # below TensorFlow's floor
    ("470.256.02", ("8.0",), None),
    ("580.82.07", ("5.0",), None),        # a GPU older than both builds support
    ("580.82.07", (), 13),                # compute capability unknown: the driver decides
    (None, (), None),
])
def test_choose_picks_the_newest_build_the_driver_and_gpus_run(driver, caps, cuda_major):
    plan = gpu_plan.choose(machine(driver, caps), platform="linux")
    assert (plan.build.cuda_major if plan.build else None) == cuda_major
    assert plan.reason
    if plan.build:
        assert (REPO / plan.build.requirements).is_file()


def test_choose_warns_that_pypi_torch_needs_cuda_13():
    plan = gpu_plan.choose(machine("550.54.14"), platform="linux")
    assert any("PyTorch" in w and "update the driver" in w for w in plan.warnings)
    volta = gpu_plan.choose(machine("580.82.07", ("7.0",)), platform="linux")
    assert any("PyTorch" in w and "GPU is too old" in w for w in volta.warnings)
    assert gpu_plan.choose(machine("580.82.07"), platform="linux").warnings == []
    unknown = gpu_plan.choose(machine("580.82.07", ()), platform="linux")
    assert any("compute capability unknown" in w for w in unknown.warnings)


def test_choose_without_a_build_says_what_to_fix():
    assert "update the NVIDIA driver" in gpu_plan.choose(machine("470.256.02"), platform="linux").reason
    maxwell = gpu_plan.choose(machine("580.82.07", ("5.0",)), platform="linux")
    assert "GPU is older" in maxwell.reason and "driver" not in maxwell.reason.split(":")[-1]


def test_choose_cpu_only_and_other_platforms_install_no_gpu_build():
    assert gpu_plan.choose(machine("580.82.07"), cpu_only=True, platform="linux").build is None
    plan = gpu_plan.choose(machine("580.82.07"), platform="win32")
    assert plan.build is None and "Linux" in plan.reason


def test_every_gpu_file_includes_requirements_txt_and_adds_only_extras_of_its_pins():
    """The GPU files take their versions from requirements.txt (one definition): they include
    it and name, without a version, only packages that it pins."""
    pinned = {line.split("==")[0] for line in (REPO / "requirements.txt").read_text().splitlines()
              if "==" in line and not line.startswith("#")}
    for build in gpu_plan.BUILDS:
        lines = [ln.strip() for ln in (REPO / build.requirements).read_text().splitlines()
                 if ln.strip() and not ln.startswith("#")]
        assert lines[0] == "-r requirements.txt"
        for line in lines[1:]:
            match = re.fullmatch(r"([A-Za-z0-9_.-]+)\[([a-z0-9-]+)\]", line)
            assert match, f"{build.requirements}: {line!r} should be NAME[EXTRA] without a version"
            assert match.group(1) in pinned, f"{build.requirements}: {match.group(1)} is not pinned in requirements.txt"
        assert f"jax[cuda{build.cuda_major}]" in lines


# -- detection through the command line, as ./lab calls it ---------------------------------
def run_tool(tmp_path, *args, path_dirs=(), proc=None, env_extra=None, python_flags=()):
    env = {k: v for k, v in os.environ.items() if k != "LAB_CPU_ONLY"}
    env["PATH"] = os.pathsep.join([str(d) for d in path_dirs] + ["/usr/bin", "/bin"])
    env["LAB_NVIDIA_PROC_VERSION"] = str(proc or tmp_path / "no-such-proc-file")
    env.update(env_extra or {})
    return subprocess.run([sys.executable, *python_flags, str(TOOL), *args], capture_output=True,
                          text=True, env=env, timeout=60)


def test_tool_prints_the_file_from_a_fake_nvidia_smi(tmp_path):
    fake = fake_nvidia_smi(tmp_path / "bin", "580.82.07", ("9.0", "9.0"))
    done = run_tool(tmp_path, path_dirs=[fake])
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "requirements-gpu-cuda13.txt"
    older = run_tool(tmp_path, path_dirs=[fake_nvidia_smi(tmp_path / "old", "550.54.14")])
    assert older.stdout.strip() == "requirements-gpu-cuda12.txt"


def test_tool_falls_back_to_the_proc_file_when_nvidia_smi_fails(tmp_path):
    proc = tmp_path / "version"
    proc.write_text(PROC_OPEN)
    failing = fake_nvidia_smi(tmp_path / "bin", None)
    done = run_tool(tmp_path, "--explain", path_dirs=[failing], proc=proc)
    assert "580.82.07 (from " + str(proc) + ")" in done.stdout
    assert "nvidia-smi failed (exit 9: NVIDIA-SMI has failed" in done.stdout
    assert "requirements-gpu-cuda13.txt (CUDA 13)" in done.stdout
    assert "compute capability unknown" in done.stdout
    assert run_tool(tmp_path, path_dirs=[failing], proc=proc).stdout.strip() == "requirements-gpu-cuda13.txt"


def test_tool_without_any_driver_chooses_nothing(tmp_path):
    for dirs in ([], [fake_nvidia_smi(tmp_path / "bin", None)]):
        done = run_tool(tmp_path, path_dirs=dirs)
        assert done.returncode == 0 and done.stdout == ""


def test_tool_needs_only_the_standard_library(tmp_path):
    """./lab runs it with the system Python before .venv exists: -S -I hides site-packages."""
    fake = fake_nvidia_smi(tmp_path / "bin", "580.82.07")
    done = run_tool(tmp_path, "--explain", path_dirs=[fake], python_flags=("-S", "-I"))
    assert done.returncode == 0, done.stderr
    assert "requirements-gpu-cuda13.txt" in done.stdout


def test_tool_rejects_unknown_arguments(tmp_path):
    done = run_tool(tmp_path, "--install")
    assert done.returncode == 2 and "usage" in done.stderr


# -- ./lab install --dry-run and the install stamp -----------------------------------------
def run_lab(tmp_path, *args, driver="none", caps=("9.0",), cpu_only=False, venv=None):
    """./lab with a fake nvidia-smi first on PATH (driver="none": one that fails as with no
    driver loaded), no /proc file, and its own venv path."""
    env = {k: v for k, v in os.environ.items() if k not in ("LAB_CPU_ONLY", "LAB_VENV")}
    fake = fake_nvidia_smi(tmp_path / f"bin-{driver}", None if driver == "none" else driver, caps)
    env["PATH"] = str(fake) + os.pathsep + env.get("PATH", "/usr/bin:/bin")
    env["LAB_NVIDIA_PROC_VERSION"] = str(tmp_path / "no-such-proc-file")
    env["LAB_VENV"] = str(venv or tmp_path / "venv")
    env["LAB_PYTHON"] = sys.executable
    if cpu_only:
        env["LAB_CPU_ONLY"] = "1"
    return subprocess.run(["bash", str(REPO / "lab"), "install", *args], capture_output=True, text=True,
                          env=env, timeout=120)


def field(output: str, label: str) -> str:
    match = re.search(rf"^{label}:\s+(.*)$", output, re.MULTILINE)
    assert match, f"no {label!r} line in:\n{output}"
    return match.group(1)


@pytest.mark.parametrize(("driver", "cpu_only", "gpu_file", "words"), [
    ("none", False, None, ["none found", "nvidia-smi failed (exit 9", "no NVIDIA driver found"]),
    ("580.82.07", False, "requirements-gpu-cuda13.txt", ["580.82.07 (from nvidia-smi)", "driver >= 580"]),
    ("550.54.14", False, "requirements-gpu-cuda12.txt",
     ["550.54.14 (from nvidia-smi)", "CUDA 13 needs driver >= 580", "PyTorch from PyPI"]),
    ("470.256.02", False, None, ["470.256.02 (from nvidia-smi)", "update the NVIDIA driver"]),
    ("580.82.07", True, None, ["580.82.07 (from nvidia-smi)", "LAB_CPU_ONLY=1"]),
])
def test_dry_run_prints_the_files_and_the_reason(tmp_path, driver, cpu_only, gpu_file, words):
    done = run_lab(tmp_path, "--dry-run", driver=driver, cpu_only=cpu_only)
    assert done.returncode == 0, done.stderr
    out = done.stdout
    assert "nothing is installed" in out
    requirements = field(out, "requirements")
    if gpu_file:
        assert requirements.startswith(f"{gpu_file} (includes requirements.txt)")
        assert field(out, "GPU requirements").startswith(gpu_file)
    else:
        assert requirements.startswith("requirements.txt,") and "requirements-gpu" not in out
        assert field(out, "GPU requirements") == "none"
    assert "requirements-nodeps.txt (--no-deps)" in requirements
    for word in words:
        assert word in out, f"{word!r} missing from:\n{out}"
    assert "would be created" in field(out, "environment")
    assert not (tmp_path / "venv").exists()  # a dry run creates nothing


def fake_venv(tmp_path) -> tuple[Path, Path]:
    """A venv whose python records its arguments instead of running pip."""
    venv = tmp_path / "fake-venv"
    (venv / "bin").mkdir(parents=True)
    log = tmp_path / "pip-calls.log"
    python = venv / "bin" / "python"
    python.write_text(f'#!/bin/sh\necho "$*" >> "{log}"\n')
    python.chmod(0o755)
    return venv, log


def pip_calls(log: Path) -> list[str]:
    return log.read_text().splitlines() if log.exists() else []


def test_install_runs_once_per_plan_and_again_after_a_switch(tmp_path):
    venv, log = fake_venv(tmp_path)
    gpu = run_lab(tmp_path, driver="580.82.07", venv=venv)
    assert gpu.returncode == 0, gpu.stderr
    assert pip_calls(log) == ["-m pip install --quiet -r requirements-gpu-cuda13.txt",
                              "-m pip install --quiet --no-deps -r requirements-nodeps.txt"]
    assert "lab: GPU requirements:   requirements-gpu-cuda13.txt" in gpu.stderr
    gpu_stamps = sorted(p.name for p in venv.glob(".installed-*"))
    assert len(gpu_stamps) == 1

    run_lab(tmp_path, driver="580.82.07", venv=venv)  # same plan: the stamp matches, no pip
    assert len(pip_calls(log)) == 2
    assert "is up to date" in field(run_lab(tmp_path, "--dry-run", driver="580.82.07", venv=venv).stdout,
                                    "environment")

    run_lab(tmp_path, driver="580.82.07", cpu_only=True, venv=venv)  # switch: installed once
    assert pip_calls(log)[2:] == ["-m pip install --quiet -r requirements.txt",
                                  "-m pip install --quiet --no-deps -r requirements-nodeps.txt"]
    run_lab(tmp_path, driver="580.82.07", cpu_only=True, venv=venv)
    assert len(pip_calls(log)) == 4
    cpu_stamps = sorted(p.name for p in venv.glob(".installed-*"))
    assert len(cpu_stamps) == 1 and cpu_stamps != gpu_stamps

    run_lab(tmp_path, driver="550.54.14", venv=venv)  # a driver downgrade switches to CUDA 12
    assert pip_calls(log)[4] == "-m pip install --quiet -r requirements-gpu-cuda12.txt"
    assert len(pip_calls(log)) == 6


def test_install_rejects_unknown_options(tmp_path):
    done = run_lab(tmp_path, "--force")
    assert done.returncode == 2 and "only --dry-run" in done.stderr
