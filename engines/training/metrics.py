"""Test-split metrics, computed once from class probabilities for every framework.

Engines only produce probabilities; everything here is NumPy, computed the same way
for every framework, so a difference between frameworks in these numbers is a
difference in the models.
"""
from __future__ import annotations

import numpy as np


class MetricsError(ValueError):
    pass


def softmax(logits: np.ndarray) -> np.ndarray:
    """Class probabilities from logits, in float64 then float32: every engine's models
    output logits, and their probabilities are computed here, the same way."""
    z = np.asarray(logits, dtype=np.float64)
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return (e / e.sum(axis=1, keepdims=True)).astype(np.float32)


def logits_loss_accuracy(logits: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """Unweighted mean cross-entropy and accuracy: the validation figures of every engine."""
    z = np.asarray(logits, dtype=np.float64)
    z = z - z.max(axis=1, keepdims=True)
    logp = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
    y = np.asarray(y, dtype=np.int64)
    loss = float(-logp[np.arange(len(y)), y].mean())
    acc = float((z.argmax(axis=1) == y).mean())
    return loss, acc


def _binary_auc(positive: np.ndarray, score: np.ndarray) -> float:
    """Area under the ROC curve as the Mann–Whitney statistic: the share of
    (positive, negative) pairs the score orders correctly, a tie counting one half.
    Ranks are averaged over tied scores, which makes this equal to the trapezoidal area
    scikit-learn's ``roc_auc_score`` computes (a test checks them against each other)."""
    order = np.argsort(score, kind="mergesort")
    sorted_score = score[order]
    # average rank (1-based) of each group of equal scores
    starts = np.flatnonzero(np.r_[True, sorted_score[1:] != sorted_score[:-1]])
    ends = np.r_[starts[1:], len(score)]
    group_rank = (starts + 1 + ends) / 2.0
    ranks = np.empty(len(score), dtype=np.float64)
    ranks[order] = np.repeat(group_rank, ends - starts)
    n_pos = int(positive.sum())
    n_neg = len(score) - n_pos
    u = ranks[positive].sum() - n_pos * (n_pos + 1) / 2.0
    return float(u / (n_pos * n_neg))


def _ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    """num / den, 0 where den is 0 (scikit-learn's ``zero_division=0``)."""
    num = np.asarray(num, dtype=np.float64)
    den = np.asarray(den, dtype=np.float64)
    return np.divide(num, den, out=np.zeros_like(num), where=den != 0)


def evaluate_probabilities(y_true, proba, class_names, *, test_inference_time_s=None) -> dict:
    """The "evaluation" object of the result schema.

    AUC as MedMNIST's evaluator computes it: for two classes the binary AUC of the
    positive class's score, otherwise one-vs-rest macro over classes. A class absent from
    the test labels makes AUC undefined for it; it is then averaged over the classes
    present (AUC is null if fewer than two classes are present).

    The same definitions as scikit-learn's ``accuracy_score``, ``confusion_matrix``,
    ``precision_recall_fscore_support(zero_division=0)`` and ``roc_auc_score``, in NumPy:
    importing ``sklearn.metrics`` costs about 2 s of CPU, paid by every worker in its
    evaluate stage, a third of a small demo task. A test compares the two on random cases.
    """
    y_true = np.asarray(y_true, dtype=np.int64)
    proba = np.asarray(proba, dtype=np.float64)
    k = len(class_names)
    if proba.ndim != 2 or proba.shape != (len(y_true), k):
        raise MetricsError(f"probabilities must be ({len(y_true)}, {k}), got {proba.shape}")
    if not np.all(np.isfinite(proba)):
        raise MetricsError("probabilities contain NaN or infinity (the model diverged)")
    y_pred = proba.argmax(axis=1)
    if len(y_true) and (y_true.min() < 0 or y_true.max() >= k):
        raise MetricsError(f"labels must lie in 0..{k - 1}, got {y_true.min()}..{y_true.max()}")

    auc = None
    present = np.unique(y_true)
    if k == 2:
        if len(present) == 2:
            auc = _binary_auc(y_true == 1, proba[:, 1])
    elif len(present) >= 2:
        auc = float(np.mean([_binary_auc(y_true == c, proba[:, c]) for c in present]))

    # rows: true class, columns: predicted class
    cm = np.bincount(y_true * k + y_pred, minlength=k * k).reshape(k, k)
    tp = np.diag(cm).astype(np.float64)
    support = cm.sum(axis=1)
    predicted = cm.sum(axis=0)
    p = _ratio(tp, predicted)
    r = _ratio(tp, support)
    f = _ratio(2 * tp, predicted + support)  # 2tp / (2tp + fp + fn)
    per_class = [{"class": str(class_names[c]), "precision": float(p[c]),
                  "recall": float(r[c]), "f1": float(f[c]), "support": int(support[c])}
                 for c in range(k)]

    def avg(weights):
        w = np.asarray(weights, dtype=np.float64)
        w = w / w.sum() if w.sum() else np.zeros_like(w)
        return {"precision": float(w @ p), "recall": float(w @ r), "f1": float(w @ f)}

    return {
        "accuracy": float(np.mean(y_pred == y_true)) if len(y_true) else 0.0,
        "auc": auc,
        "per_class": per_class,
        "macro": avg(np.ones(k)),
        "weighted": avg(support),
        "confusion_matrix": cm.astype(int).tolist(),
        "test_inference_time_s": None if test_inference_time_s is None else float(test_inference_time_s),
    }
