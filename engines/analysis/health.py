"""Checks of a finished comparison that a student should be told about in words.

`accuracy_gaps`: validation accuracy far below training accuracy at the last epoch. A
short run of a model with slow BatchNorm statistics shows exactly that (training accuracy
fine, inference-mode predictions near chance), and so does a model memorising a small
training split; either way the test figures do not say what the model learnt, and a
comparison of frameworks on them compares noise. No framework is imported here.
"""
from __future__ import annotations

import math

from engines.frameworks import label

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
