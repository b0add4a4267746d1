"""Test-split metrics, computed once from class probabilities for every framework.

Engines only produce probabilities; everything here is scikit-learn on NumPy, so a
difference between frameworks in these numbers is a difference in the models.
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


def evaluate_probabilities(y_true, proba, class_names, *, test_inference_time_s=None) -> dict:
    """The "evaluation" object of the result schema.

    AUC as MedMNIST's evaluator computes it: for two classes the binary AUC of the
    positive class's score, otherwise one-vs-rest macro over classes. A class absent from
    the test labels makes AUC undefined for it; it is then averaged over the classes
    present (AUC is null if fewer than two classes are present).
    """
    from sklearn.metrics import accuracy_score, confusion_matrix, precision_recall_fscore_support, roc_auc_score

    y_true = np.asarray(y_true, dtype=np.int64)
    proba = np.asarray(proba, dtype=np.float64)
    k = len(class_names)
    if proba.ndim != 2 or proba.shape != (len(y_true), k):
        raise MetricsError(f"probabilities must be ({len(y_true)}, {k}), got {proba.shape}")
    if not np.all(np.isfinite(proba)):
        raise MetricsError("probabilities contain NaN or infinity (the model diverged)")
    y_pred = proba.argmax(axis=1)
    labels = list(range(k))

    auc = None
    present = np.unique(y_true)
    if k == 2:
        if len(present) == 2:
            auc = float(roc_auc_score(y_true, proba[:, 1]))
    elif len(present) >= 2:
        aucs = [roc_auc_score((y_true == c).astype(int), proba[:, c]) for c in present]
        auc = float(np.mean(aucs))

    p, r, f, s = precision_recall_fscore_support(y_true, y_pred, labels=labels,
                                                 zero_division=0)
    per_class = [{"class": str(class_names[c]), "precision": float(p[c]),
                  "recall": float(r[c]), "f1": float(f[c]), "support": int(s[c])}
                 for c in labels]

    def avg(kind):
        pp, rr, ff, _ = precision_recall_fscore_support(y_true, y_pred, labels=labels,
                                                        average=kind, zero_division=0)
        return {"precision": float(pp), "recall": float(rr), "f1": float(ff)}

    return {
        "accuracy": float(accuracy_score(y_true, y_pred)),
        "auc": auc,
        "per_class": per_class,
        "macro": avg("macro"),
        "weighted": avg("weighted"),
        "confusion_matrix": confusion_matrix(y_true, y_pred, labels=labels).astype(int).tolist(),
        "test_inference_time_s": None if test_inference_time_s is None else float(test_inference_time_s),
    }
