"""Issue 18's Ray tests (tests/ray_cases.py: a sweep on a local Ray instance sharing the
local cache, cancel, recovery, the caps and owners) in a Python process of their own.

Ray starts its C++ runtime (raylet, workers) in the process that calls ray.init and it
outlives ray.shutdown for a while: a fresh interpreter keeps it out of the suite's process
and gives the Ray cases the state they have alone."""
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("ray", reason="ray is not installed (requirements.txt has it: ./lab installs it)")

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.heavy(seconds=140)  # its wall time in the parallel suite: see conftest.py


def test_the_ray_cases_pass_in_a_process_of_their_own():
    done = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests/ray_cases.py"],
                          cwd=ROOT, capture_output=True, text=True, timeout=1800)
    tail = done.stdout[-4000:]
    assert done.returncode == 0, tail + done.stderr[-2000:]
    assert " passed" in tail and " failed" not in tail and " skipped" not in tail, tail
