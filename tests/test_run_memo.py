"""tests/run_memo.py: a value several processes of a run need, computed by the first only."""
import subprocess
import sys
from pathlib import Path

import numpy as np
import run_memo

from engines.datasets.synthetic import make_synthetic
from engines.training.config import TrainConfig

TESTS = Path(__file__).resolve().parent


def test_the_key_is_the_whole_input():
    ds = make_synthetic(8, channels=1, classes=2, seed=0, train=8, val=4, test=4)
    cfg = TrainConfig("fan_arch1", epochs=1)
    k = run_memo.key("losses", "keras", cfg, ds)
    assert k == run_memo.key("losses", "keras", TrainConfig("fan_arch1", epochs=1), ds)
    assert k != run_memo.key("losses", "jax", cfg, ds)
    assert k != run_memo.key("moments", "keras", cfg, ds)
    assert k != run_memo.key("losses", "keras", cfg.replace(learning_rate=0.5), ds)
    other = make_synthetic(8, channels=1, classes=2, seed=1, train=8, val=4, test=4)
    assert not np.array_equal(other.train.x, ds.train.x)
    assert k != run_memo.key("losses", "keras", cfg, other)


def test_the_second_process_reads_what_the_first_computed(tmp_path, monkeypatch):
    monkeypatch.setenv(run_memo.RUN_DIR_VARIABLE, str(tmp_path))
    calls = []
    assert run_memo.once("x", lambda a: calls.append(a) or [a, 1.5], 2) == [2, 1.5]
    code = ("import run_memo\n"
            "print(run_memo.once('x', lambda: (_ for _ in ()).throw(AssertionError('computed again'))))")
    done = subprocess.run([sys.executable, "-c", code], cwd=TESTS, capture_output=True, text=True, timeout=60,
                          env={"PATH": "", run_memo.RUN_DIR_VARIABLE: str(tmp_path)})
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[2, 1.5]" and calls == [2]
    assert run_memo.once("y", lambda: {"a": 1}) == {"a": 1} and len(calls) == 1
