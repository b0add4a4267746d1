"""Checks of a finished comparison that a student should be told about in words.

`accuracy_gaps`: validation accuracy far below training accuracy at the last epoch. A
short run of a model with slow BatchNorm statistics shows exactly that (training accuracy
fine, inference-mode predictions near chance), and so does a model memorising a small
training split; either way the test figures do not say what the model learnt, and a
comparison of frameworks on them compares noise.

`framework_gaps`: two frameworks' test accuracy more than 2 points apart. With dropout in
the architecture each framework draws its own masks (its own random generator), so one
run per framework cannot tell a framework from chance; over repeats, Welch's test can,
and a significant gap is more than the masks (issue 20 found a compiler bug behind one).
No framework is imported here.
"""
from __future__ import annotations

import dataclasses
import math
from itertools import combinations

import models
from engines.analysis import stats
from engines.frameworks import label
from models import ir

# Training minus validation accuracy (fraction) above which a run is flagged. Training
# accuracy is the epoch's running mean in training mode (dropout on, weights still
# moving), so it lags the end of the epoch; 15 points is beyond that lag.
GAP = 0.15


def _final(result: dict) -> tuple[float | None, float | None, bool]:
    """(training accuracy, validation accuracy, whether the validation figure is after a
    BatchNorm recompute) at the end of a result's training."""
    train = result.get("train") or {}
    epochs = train.get("epochs") or []
    if not epochs:
        return None, None, False
    last = epochs[-1]
    bn = train.get("batchnorm") or {}
    if bn.get("recomputed") and bn.get("val_accuracy_after") is not None:
        return last.get("accuracy"), bn["val_accuracy_after"], True
    return last.get("accuracy"), last.get("val_accuracy"), False


def _number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def accuracy_gaps(results: list[dict], gap: float = GAP) -> list[dict]:
    """One entry per framework whose mean (over its ok repeats) training accuracy exceeds
    its validation accuracy by more than `gap`: framework, train_accuracy, val_accuracy,
    gap, n, recomputed (the BatchNorm statistics were), batchnorm_off (the spec turned the
    recompute off) and `sentence`."""
    per: dict[str, list[tuple[float, float, bool, bool]]] = {}
    for r in results:
        if r.get("status") != "ok":
            continue
        tr, va, recomputed = _final(r)
        if not (_number(tr) and _number(va)):
            continue
        off = (r.get("spec") or {}).get("recompute_batchnorm") is False
        per.setdefault(r.get("framework"), []).append((float(tr), float(va), recomputed, off))
    out = []
    for fw, rows in per.items():
        tr = sum(t for t, _, _, _ in rows) / len(rows)
        va = sum(v for _, v, _, _ in rows) / len(rows)
        if tr - va <= gap:
            continue
        recomputed = all(rec for _, _, rec, _ in rows)
        off = any(o for _, _, _, o in rows)
        out.append({"framework": fw, "train_accuracy": tr, "val_accuracy": va, "gap": tr - va, "n": len(rows),
                    "recomputed": recomputed, "batchnorm_off": off,
                    "sentence": _sentence(fw, tr, va, recomputed, off)})
    return out


def _sentence(fw: str, tr: float, va: float, recomputed: bool, off: bool) -> str:
    head = (f"{label(fw)}: validation accuracy {va:.1%} lags training accuracy {tr:.1%} by "
            f"{(tr - va) * 100:.0f} points")
    if off:
        why = ("its BatchNorm statistics were left as training's running averages: recompute them "
               "(the Run page's 'Recompute BatchNorm statistics', on by default) before comparing")
    elif recomputed:
        why = ("even with its BatchNorm statistics recomputed: the model may be memorising a small training "
               "split, or training for too few epochs; compare test figures with care")
    else:
        why = "the model may be memorising a small training split, or training for too few epochs"
    return f"{head}; {why}."


# Test accuracy (fraction) two frameworks may differ by before the pair is looked into.
FRAMEWORK_GAP = 0.02


def _stochastic(nodes) -> bool:
    """Whether an IR graph (nested node tuples) holds a Dropout or stochastic depth."""
    for node in nodes:
        if isinstance(node, ir.Dropout) and node.rate > 0:
            return True
        if isinstance(node, ir.Residual) and node.drop_path > 0:
            return True
        if dataclasses.is_dataclass(node) and any(
                isinstance(v, tuple) and _stochastic(v) for v in vars(node).values()):
            return True
    return False


def uses_dropout(architecture: str | None) -> bool:
    """Whether the architecture trains with random masks (Dropout or stochastic depth);
    False for an unknown name."""
    try:
        info = models.get_architecture(architecture)
    except (KeyError, ValueError, TypeError):
        return False
    return _stochastic(info.define(*info.native))


def _test_accuracies(results: list[dict]) -> dict[str, list[float]]:
    per: dict[str, list[float]] = {}
    for r in results:
        acc = (r.get("evaluation") or {}).get("accuracy")
        if r.get("status") == "ok" and _number(acc):
            per.setdefault(r.get("framework"), []).append(float(acc))
    return per


def framework_gaps(results: list[dict], gap: float = FRAMEWORK_GAP) -> list[dict]:
    """One entry per pair of frameworks whose mean test accuracy differs by more than
    `gap`, where the gap needs a word: with one run on a side and an architecture with
    dropout (the masks alone can make it), or over repeats when Welch's test finds it
    significant (more than chance). framework_a, framework_b, difference (a - b), n_a, n_b,
    p (None without a test), dropout (the architecture has it), significant, sentence."""
    archs = {(r.get("spec") or {}).get("architecture") for r in results if r.get("status") == "ok"}
    dropout = any(uses_dropout(a) for a in archs)
    per = _test_accuracies(results)
    out = []
    for fa, fb in combinations(per, 2):
        a, b = per[fa], per[fb]
        diff = sum(a) / len(a) - sum(b) / len(b)
        if abs(diff) <= gap:
            continue
        entry = {"framework_a": fa, "framework_b": fb, "difference": diff, "n_a": len(a),
                 "n_b": len(b), "p": None, "dropout": dropout, "significant": None}
        if min(len(a), len(b)) < 2:
            if not dropout:
                continue
            entry["sentence"] = _single_run_sentence(fa, fb, diff)
        else:
            test = stats.compare(a, b, metric="evaluation.accuracy")
            if not test["significant"]:
                continue
            entry.update(p=test["p"], significant=True,
                         sentence=_significant_sentence(fa, fb, diff, len(a), len(b), test["p"], dropout))
        out.append(entry)
    return out


def _pair(fa: str, fb: str, diff: float) -> str:
    hi, lo = (fa, fb) if diff > 0 else (fb, fa)
    return f"{label(lo)}'s test accuracy is {abs(diff) * 100:.1f} points below {label(hi)}'s"


def _single_run_sentence(fa: str, fb: str, diff: float) -> str:
    return (f"{_pair(fa, fb, diff)}, from one run each. The architecture trains with dropout, and each "
            "framework draws its own masks (its own random generator: they cannot be the same), so one run "
            "each cannot tell a framework from chance; the same framework with another seed moves as much. "
            "Run 5 or more repeats (Repeats on the Run page) and read Welch's test below.")


def _significant_sentence(fa: str, fb: str, diff: float, na: int, nb: int, p: float, dropout: bool) -> str:
    masks = (" Different dropout masks move single runs, not a mean over repeats: this is more than the masks."
             if dropout else "")
    return (f"{_pair(fa, fb, diff)} over {na} and {nb} repeats ({stats.p_phrase(p)}).{masks} Compare the "
            "training-loss curves below: a framework whose loss stays near its first epoch's while the others "
            "fall is not training all its layers (the lab found one such case: torch 2.13's compiler zeroed "
            "the convolution gradients of pathmnist_cnn, fixed in the PyTorch engine).")
