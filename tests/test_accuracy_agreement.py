"""benchmarks/accuracy_agreement.py's arms and summary (issue 20): the framework table's
names, an eager PyTorch arm, Welch's test from engines.analysis.stats, the flagged gaps."""
import io
import re

import pytest

from benchmarks import accuracy_agreement as AA


def _row(arm, seed, acc, loss=(0.6, 0.5), dropout=True):
    framework, compiled = AA.parse_arm(arm)
    return {"dataset": "breastmnist", "arch": "pathmnist_cnn", "arm": arm, "framework": framework,
            "compile": compiled, "dropout": dropout, "seed": seed, "status": "ok", "message": None,
            "accuracy": acc, "auc": 0.75, "macro_f1": acc - 0.1, "loss": list(loss),
            "val_accuracy": [0.7, 0.7], "epochs": 2, "batch_size": 32, "learning_rate": 0.00027092,
            "class_weights": True, "train_n": 546, "test_n": 156, "wall_s": 1.0, "loadavg": 1.0}


def test_arms_are_the_tables_frameworks_with_an_eager_mode():
    assert AA.parse_arm("pytorch:eager") == ("pytorch", False)
    assert AA.parse_arm("jax") == ("jax", True)
    assert AA.arm_label("pytorch:eager") == "PyTorch (eager)"
    with pytest.raises(SystemExit, match="unknown framework 'torch'"):
        AA.parse_arm("torch")
    with pytest.raises(SystemExit, match="only mode"):
        AA.parse_arm("jax:fast")


def test_summary_flags_only_a_significant_gap_over_two_points():
    rows = [_row("keras", s, a) for s, a in enumerate((0.78, 0.79, 0.80))]
    rows += [_row("pytorch", s, a, loss=(0.64, 0.58)) for s, a in enumerate((0.731, 0.732, 0.733))]
    rows += [_row("jax", s, a) for s, a in enumerate((0.77, 0.80, 0.79))]
    rows += [_row("jax", 9, 0.1) | {"status": "error"}]  # a failed run is not a repeat
    out = io.StringIO()
    flagged = AA.summarize(rows, out)
    text = out.getvalue()
    assert "PyTorch " in text and "0.7320±0.0010" in text and "0.640 0.580" in text
    assert "Welch ACC: Keras vs PyTorch +5.8 pt, p " in text
    pairs = {(f["framework_a"], f["framework_b"], f["metric"]) for f in flagged}
    # macro-F1 moves with ACC here (acc - 0.1); AUC is the same everywhere
    assert pairs == {("keras", "pytorch", "accuracy"), ("pytorch", "jax", "accuracy"),
                     ("keras", "pytorch", "macro_f1"), ("pytorch", "jax", "macro_f1")}
    assert re.search(r"^JAX/Flax\s+3\s", text, re.M)  # the failed run is left out
