"""Statistics over repeated runs: summaries, Welch's t-test and a plain sentence.

NumPy and SciPy only; no framework is imported here, so the result pages can use it.

- ``summarize(values, kind)``: n, mean, sample std (ddof=1), min, max and a 95%
  confidence interval (std and interval are null for n < 2). The interval respects what
  the quantity can be (``metric_kind``): a time, a throughput, memory, energy or a loss
  cannot be negative, so its interval is a t interval on the logarithm of the values,
  exp(mean(log x) ± t · sd(log x) / √n): a ratio interval around their geometric mean,
  above zero however few the repeats (with 2 repeats the plain t interval of a training
  time ran from −164.7 s to 422 s); a fraction (accuracy, AUC, F1) keeps the t interval
  cut to [0, 1]; anything else the t interval of the mean. ``CI_METHODS`` says each in
  words.
- ``compare(a, b, ...)``: Welch's t-test (``scipy.stats.ttest_ind(equal_var=False)``),
  its Welch–Satterthwaite degrees of freedom, Hedges' g as the effect size, the ratio of
  means and a sentence such as "PyTorch trains 1.7× faster than Keras; the difference is
  significant (p < 0.001)".
- ``pairwise(values_by_framework, ...)``: ``compare`` for every pair of frameworks.
- ``metric_values(results, metric)``: per-framework values of one metric taken from
  RunResult dicts (schema 1 of DESIGN.md).

Edge cases, each with its own answer rather than a division by zero:
- a value that is None, NaN or infinite is dropped (and counted in ``dropped``);
- fewer than 2 values on a side: "fewer than 2 repeats: no test is possible";
- zero variance on both sides: equal means are "no difference"; different means are a
  difference that is exact across the repeats, and no t statistic is computed (the
  TensorFlow-vs-Keras variance paper divided by that zero and printed t = 1506.89).
"""
from __future__ import annotations

import math
import warnings
from collections.abc import Iterable
from itertools import combinations

import numpy as np

from engines.frameworks import label

ALPHA = 0.05
EFFECT_SIZE_KIND = "hedges_g"  # Cohen's d (pooled sample SD) times the small-sample correction J

NO_TEST_FEW = "fewer than 2 repeats: no test is possible"


def _scipy_stats():
    """scipy.stats, imported when an interval or a test is first computed: it is a third
    of the UI's import time, and most page views compute neither (issue 16)."""
    from scipy import stats

    return stats


def display_name(framework: str) -> str:
    """The framework's label from the framework table ("JAX/Flax"), as every page says it."""
    return label(framework)


# --------------------------------------------------------------------------- values
def clean(values: Iterable) -> tuple[np.ndarray, int]:
    """The finite values as float64, and how many were dropped (None, NaN, inf, non-numbers)."""
    kept, dropped = [], 0
    for v in values if values is not None else []:
        if v is None or isinstance(v, bool):
            dropped += 1
            continue
        try:
            f = float(v)
        except (TypeError, ValueError):
            dropped += 1
            continue
        if math.isfinite(f):
            kept.append(f)
        else:
            dropped += 1
    return np.asarray(kept, dtype=np.float64), dropped


KINDS = ("any", "positive", "fraction")
CI_METHODS = {
    "any": "t interval of the mean",
    "positive": "t interval on the logarithm (around the geometric mean; never below zero)",
    "fraction": "t interval of the mean, cut to [0, 1]",
}


def summarize(values: Iterable, kind: str = "any") -> dict:
    """{"n","mean","std","min","max","ci95_low","ci95_high","dropped"}.

    std is the sample standard deviation (ddof=1). The interval (95%) depends on `kind`
    (see the module doc and CI_METHODS): "any": mean ± t(0.975, n-1) · std / sqrt(n);
    "positive": the same on log(x), exponentiated (values that are not all > 0 fall back
    to "any"); "fraction": the "any" interval cut to [0, 1]. std and the interval are
    null for n < 2; everything is null for n = 0.
    """
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {', '.join(KINDS)}, got {kind!r}")
    x, dropped = clean(values)
    n = int(x.size)
    out = {"n": n, "mean": None, "std": None, "min": None, "max": None,
           "ci95_low": None, "ci95_high": None, "dropped": dropped}
    if n == 0:
        return out
    mean = float(x.mean())
    out.update(mean=mean, min=float(x.min()), max=float(x.max()))
    if n >= 2:
        std = float(x.std(ddof=1))
        out.update(std=std)
        out["ci95_low"], out["ci95_high"] = _interval(x, kind)
    return out


def _interval(x: np.ndarray, kind: str) -> tuple[float, float]:
    t = float(_scipy_stats().t.ppf(0.975, x.size - 1))
    if kind == "positive" and np.all(x > 0):
        if np.all(x == x[0]):  # exactly the same every time: exactly that value
            return float(x[0]), float(x[0])
        logs = np.log(x)
        half = t * float(logs.std(ddof=1)) / math.sqrt(x.size)
        centre = float(logs.mean())
        return math.exp(centre - half), math.exp(centre + half)
    mean, std = float(x.mean()), float(x.std(ddof=1))
    half = t * std / math.sqrt(x.size)
    if kind == "fraction":
        return max(0.0, mean - half), min(1.0, mean + half)
    return mean - half, mean + half


# --------------------------------------------------------------------------- metrics
_LOWER_IS_BETTER_HINTS = ("time", "_s", "latency", "memory", "bytes", "energy", "loss", "_ms")


def metric_higher_is_better(metric: str) -> bool:
    """Times, latencies, memory, energy and losses are better low; the rest (accuracy,
    AUC, F1, throughput) better high."""
    m = metric.lower()
    if "throughput" in m or "images_per_s" in m:
        return True
    return not any(h in m for h in _LOWER_IS_BETTER_HINTS)


def metric_unit(metric: str) -> str:
    """The unit of a schema-1 metric, read from its name."""
    m = metric.lower()
    if "images_per_s" in m:
        return "img/s"
    if m.endswith("_s") or m.endswith("time_s"):
        return "s"
    if "latency_ms" in m or m.endswith("_ms"):
        return "ms"
    if m.endswith("_bytes") or "bytes" in m:
        return "bytes"
    if "energy_j" in m:
        return "J"
    if any(k in m for k in ("accuracy", "auc", "precision", "recall", "f1")):
        return "fraction"
    return ""


def metric_kind(metric: str) -> str:
    """What values a schema-1 metric can take, for its interval: "positive" (times,
    throughputs, memory, energy, losses), "fraction" (accuracy, AUC, precision, recall,
    F1) or "any"."""
    unit = metric_unit(metric)
    if unit in ("s", "ms", "img/s", "bytes", "J") or "loss" in metric.lower():
        return "positive"
    if unit == "fraction":
        return "fraction"
    return "any"


def _is_time(metric: str) -> bool:
    m = metric.lower()
    return ("time" in m or m.endswith("_s") or "latency" in m) and "images_per_s" not in m


def _time_verb(metric: str) -> str:
    m = metric.lower()
    if m.startswith("train."):
        return "trains"
    if "inference" in m or "latency" in m:
        return "runs inference"
    return "is"


def format_p(p: float) -> str:
    """A p-value as the lab prints it (sentences and tables alike): "< 0.001", else 3
    decimals below 0.1 and 2 above, never rounded across ALPHA."""
    if p < 0.001:
        return "< 0.001"
    s = f"{p:.3f}" if p < 0.1 else f"{p:.2f}"
    if (p < ALPHA) != (float(s) < ALPHA):  # never let rounding cross the threshold
        s = f"{p:.4f}"
    return s


def p_phrase(p: float) -> str:
    """"p < 0.001" or "p = 0.031": format_p in a sentence."""
    s = format_p(p)
    return f"p {s}" if s.startswith("<") else f"p = {s}"


def _fmt_ratio(r: float) -> str:
    return f"{r:.2f}×" if r < 1.1 else f"{r:.1f}×"


def _fmt_num(v: float) -> str:
    a = abs(v)
    if a == 0:
        return "0"
    if a >= 100:
        return f"{v:,.0f}"
    if a >= 1:
        return f"{v:.2f}".rstrip("0").rstrip(".")
    return f"{v:.3g}"


_LABELS = {"throughput_images_per_s": "throughput", "images_per_s": "throughput",
           "peak_memory_bytes": "peak memory", "energy_j": "energy",
           "energy_j_per_epoch": "energy per epoch", "energy_j_per_1000_images": "energy per 1000 images",
           "auc": "AUC", "f1": "F1", "p50": "median latency", "p95": "p95 latency",
           "p99": "p99 latency"}


def _metric_label(metric: str) -> str:
    parts = [p for p in metric.split(".") if not p.isdigit()]
    name = parts[-1] if parts else metric
    if name in _LABELS:
        return _LABELS[name]
    for suffix in ("_s", "_ms", "_bytes", "_j"):
        if name.endswith(suffix):
            name = name[: -len(suffix)]
            break
    return name.replace("_", " ")


def _difference_phrase(winner: str, loser: str, mean_w: float, mean_l: float, *, metric: str,
                       higher: bool, unit: str) -> str:
    """"PyTorch trains 1.7× faster than Keras" / "Keras is 1.2 points more accurate than JAX"."""
    m = metric.lower()
    if unit in ("fraction", "%"):
        points = abs(mean_w - mean_l) * (100.0 if unit == "fraction" else 1.0)
        what = "more accurate" if "accuracy" in m else f"higher on {_metric_label(metric)}"
        if not higher:
            what = f"lower on {_metric_label(metric)}"
        return f"{winner} is {points:.1f} points {what} than {loser}"
    if _is_time(metric) and not higher:
        if mean_w > 0 and mean_l > 0:
            return f"{winner} {_time_verb(metric)} {_fmt_ratio(mean_l / mean_w)} faster than {loser}"
        return (f"{winner} {_time_verb(metric)} faster than {loser} "
                f"({_fmt_num(mean_w)} vs {_fmt_num(mean_l)} {unit})".rstrip())
    label = _metric_label(metric)
    if "loss" in m:
        side = "higher" if higher else "lower"
        return f"{winner} has a {side} {label} than {loser} ({_fmt_num(mean_w)} vs {_fmt_num(mean_l)})"
    if mean_w > 0 and mean_l > 0:
        r = mean_w / mean_l if higher else mean_l / mean_w
        if higher:
            return f"{winner} has {_fmt_ratio(r)} the {label} of {loser}"
        return f"{winner} uses {_fmt_ratio(r)} less {label} than {loser}"
    diff = abs(mean_w - mean_l)
    side = "higher" if higher else "lower"
    return f"{winner} is {_fmt_num(diff)} {unit} {side} on {label} than {loser}".replace("  ", " ")


def _mean_var(x: np.ndarray) -> tuple[float | None, float | None]:
    """Mean and sample variance; a constant sample is exactly (its value, 0.0), so that
    rounding in the mean never turns "the same value every repeat" into a tiny variance."""
    if x.size == 0:
        return None, None
    if np.all(x == x[0]):
        return float(x[0]), (0.0 if x.size >= 2 else None)
    return float(x.mean()), (float(x.var(ddof=1)) if x.size >= 2 else None)


def compare(a: Iterable, b: Iterable, *, name_a: str = "A", name_b: str = "B", metric: str = "",
            higher_is_better: bool | None = None, unit: str | None = None) -> dict:
    """Welch's t-test of a against b, with an effect size and a sentence.

    Returns {"name_a","name_b","metric","unit","higher_is_better","n_a","n_b","mean_a",
    "mean_b","std_a","std_b","difference" (mean_a - mean_b),"t","p","df","effect_size",
    "effect_size_kind" ("hedges_g"),"ratio" (mean_a / mean_b),"significant" (p < 0.05;
    null when no test was possible),"exact" (both sides without variance),"better"
    (name of the better side, null when equal),"sentence","test_possible","reason",
    "dropped_a","dropped_b"}.
    """
    hib = metric_higher_is_better(metric) if higher_is_better is None else bool(higher_is_better)
    unit = metric_unit(metric) if unit is None else unit
    xa, da = clean(a)
    xb, db = clean(b)
    na, nb = int(xa.size), int(xb.size)
    mean_a, var_a = _mean_var(xa)
    mean_b, var_b = _mean_var(xb)
    out = {"name_a": name_a, "name_b": name_b, "metric": metric, "unit": unit,
           "higher_is_better": hib, "n_a": na, "n_b": nb, "mean_a": mean_a, "mean_b": mean_b,
           "std_a": None if var_a is None else math.sqrt(var_a),
           "std_b": None if var_b is None else math.sqrt(var_b),
           "difference": None if mean_a is None or mean_b is None else mean_a - mean_b,
           "t": None, "p": None, "df": None, "effect_size": None,
           "effect_size_kind": EFFECT_SIZE_KIND,
           "ratio": (mean_a / mean_b) if (mean_a is not None and mean_b) else None,
           "significant": None, "exact": False, "better": None, "sentence": "",
           "test_possible": False, "reason": None, "dropped_a": da, "dropped_b": db}

    dropped_note = ""
    if da or db:
        dropped_note = f" ({da + db} missing or non-finite value{'s' if da + db != 1 else ''} left out)"

    if mean_a is not None and mean_b is not None and mean_a != mean_b:
        a_better = (mean_a > mean_b) == hib
        out["better"] = name_a if a_better else name_b
        winner, loser = (name_a, name_b) if a_better else (name_b, name_a)
        mw, ml = (mean_a, mean_b) if a_better else (mean_b, mean_a)
        phrase = _difference_phrase(winner, loser, mw, ml, metric=metric, higher=hib, unit=unit)
    elif mean_a is not None and mean_b is not None:
        phrase = f"{name_a} and {name_b} have the same mean {_metric_label(metric) or 'value'}"
    else:
        phrase = ""

    if na < 2 or nb < 2:
        out["reason"] = NO_TEST_FEW
        counts = f"n = {na} and {nb}"
        if phrase:
            out["sentence"] = f"{phrase} ({counts}); {NO_TEST_FEW}{dropped_note}."
        else:
            out["sentence"] = f"{name_a} vs {name_b} ({counts}): {NO_TEST_FEW}{dropped_note}."
        return out

    if var_a == 0.0 and var_b == 0.0:
        out["exact"] = True
        if mean_a == mean_b:
            out["reason"] = ("zero variance on both sides and equal means: no difference "
                             "(the t statistic would be 0/0)")
            out["sentence"] = (f"{name_a} and {name_b} give the same value in every repeat "
                               f"(n = {na} and {nb}): no difference{dropped_note}.")
            out["effect_size"] = 0.0
        else:
            out["reason"] = ("zero variance on both sides: the difference is exact across repeats; "
                             "a t statistic would divide by zero, so none is computed")
            out["sentence"] = (f"{phrase} in every repeat (n = {na} and {nb}, no variation on "
                               f"either side): the difference is exact, so no t-test is needed or "
                               f"possible{dropped_note}.")
        return out

    with warnings.catch_warnings():
        # one constant side makes SciPy warn about precision in its moments; the other
        # side's variance keeps the statistic well defined
        warnings.simplefilter("ignore", RuntimeWarning)
        res = _scipy_stats().ttest_ind(xa, xb, equal_var=False)
    t, p = float(res.statistic), float(res.pvalue)
    se2a, se2b = var_a / na, var_b / nb
    df = (se2a + se2b) ** 2 / ((se2a ** 2) / (na - 1) + (se2b ** 2) / (nb - 1))
    pooled = math.sqrt(((na - 1) * var_a + (nb - 1) * var_b) / (na + nb - 2))
    d = (mean_a - mean_b) / pooled
    j = 1.0 - 3.0 / (4.0 * (na + nb) - 9.0)
    out.update(t=t, p=p, df=float(df), effect_size=d * j, test_possible=True,
               significant=bool(p < ALPHA))
    if not phrase or mean_a == mean_b:
        out["sentence"] = (f"{name_a} and {name_b} have the same mean {_metric_label(metric) or 'value'}; "
                           f"the difference is not significant ({p_phrase(p)}){dropped_note}.")
    else:
        verdict = "significant" if p < ALPHA else "not significant"
        out["sentence"] = f"{phrase}; the difference is {verdict} ({p_phrase(p)}){dropped_note}."
    return out


def pairwise(values_by_framework: dict[str, list], *, metric: str = "",
             higher_is_better: bool | None = None, unit: str | None = None) -> list[dict]:
    """compare() for every pair of frameworks, in the order given (a before b). Each
    result also carries "framework_a" and "framework_b" (the keys)."""
    out = []
    for fa, fb in combinations(list(values_by_framework), 2):
        r = compare(values_by_framework[fa], values_by_framework[fb], name_a=display_name(fa),
                    name_b=display_name(fb), metric=metric, higher_is_better=higher_is_better,
                    unit=unit)
        r["framework_a"], r["framework_b"] = fa, fb
        out.append(r)
    return out


# --------------------------------------------------------------------------- results
_MISSING = object()


def _finals(train: dict, key: str):
    epochs = (train or {}).get("epochs") or []
    return epochs[-1].get(key) if epochs and isinstance(epochs[-1], dict) else None


_DERIVED = {
    "train.final_loss": lambda r: _finals(r.get("train"), "loss"),
    "train.final_accuracy": lambda r: _finals(r.get("train"), "accuracy"),
    "train.final_val_loss": lambda r: _finals(r.get("train"), "val_loss"),
    "train.final_val_accuracy": lambda r: _finals(r.get("train"), "val_accuracy"),
    "train.final_epoch_time_s": lambda r: _finals(r.get("train"), "time_s"),
}


def _energy_per_epoch(r: dict):
    train = r.get("train") or {}
    e, epochs = train.get("energy_j"), train.get("epochs") or []
    return None if e is None or not epochs else e / len(epochs)


_DERIVED["train.energy_j_per_epoch"] = _energy_per_epoch


def _mean_epoch_time(r: dict):
    times = [e.get("time_s") for e in ((r.get("train") or {}).get("epochs") or []) if isinstance(e, dict)]
    times = [t for t in times if isinstance(t, (int, float)) and not isinstance(t, bool)]
    return sum(times) / len(times) if times else None


_DERIVED["train.epoch_time_s"] = _mean_epoch_time


def metric_value(result: dict, metric: str):
    """One metric of one RunResult dict, or None when it is absent or null.

    Dotted paths into the schema ("train.total_time_s", "evaluation.macro.f1"); for the
    inference list the second part is the batch size ("inference.128.latency_ms.p95",
    "inference.32.throughput_images_per_s"; an entry whose status is not ok gives None);
    and the derived "train.final_loss|final_accuracy|final_val_loss|final_val_accuracy|
    final_epoch_time_s" (last epoch), "train.epoch_time_s" (mean over the epochs) and
    "train.energy_j_per_epoch".
    """
    if metric in _DERIVED:
        return _DERIVED[metric](result)
    parts = metric.split(".")
    node = result
    i = 0
    while i < len(parts):
        key = parts[i]
        if isinstance(node, list):
            if key.isdigit() and node and isinstance(node[0], dict) and "batch_size" in node[0]:
                match = [e for e in node if e.get("batch_size") == int(key)]
                if not match or match[0].get("status", "ok") != "ok":
                    return None
                node = match[0]
            elif key.isdigit() and int(key) < len(node):
                node = node[int(key)]
            else:
                return None
        elif isinstance(node, dict):
            node = node.get(key, _MISSING)
            if node is _MISSING or node is None:
                return None
        else:
            return None
        i += 1
    if isinstance(node, bool) or not isinstance(node, (int, float)):
        return None
    return node


def metric_values(results: list[dict], metric: str) -> dict[str, list[float]]:
    """framework -> values of one metric over the given RunResult dicts (one per repeat).

    A result whose status is not "ok", or whose value is null or non-finite, is skipped.
    Frameworks keep the order in which they first appear.
    """
    out: dict[str, list[float]] = {}
    for r in results or []:
        if not isinstance(r, dict) or r.get("status") != "ok":
            continue
        v = metric_value(r, metric)
        if v is None or not math.isfinite(float(v)):
            continue
        out.setdefault(r.get("framework") or "?", []).append(float(v))
    return out
