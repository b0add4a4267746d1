"""Repeated runs -> statistics frames for the result pages (pure pandas; no Streamlit,
no framework).

A comparison's results hold one RunResult per (framework, seed). Here they become, per
metric: the values per seed (for strip plots), a summary per framework (n, mean, std,
min, max, 95% confidence interval: engines.analysis.stats.summarize) and Welch's t-test between
every pair of frameworks (engines.analysis.stats.pairwise), with the plain sentence.
"""
from __future__ import annotations

import pandas as pd

from engines.analysis import stats

from .colors import ordered
from .results import seed_of

# metric path -> (label, unit shown on axes and in tables)
METRICS = {
    "train.total_time_s": ("training time (total)", "s"),
    "train.final_epoch_time_s": ("time of the last epoch", "s"),
    "train.compile_time_s": ("compile / first-step time", "s"),
    "train.images_per_s": ("training throughput", "images/s"),
    "evaluation.test_inference_time_s": ("test-set inference time", "s"),
    "evaluation.accuracy": ("test accuracy", "fraction"),
    "evaluation.macro.f1": ("macro F1", "fraction"),
    "evaluation.weighted.f1": ("weighted F1", "fraction"),
    "evaluation.auc": ("AUC", "fraction"),
    "train.final_val_accuracy": ("validation accuracy (last epoch)", "fraction"),
    "train.final_val_loss": ("validation loss (last epoch)", "cross-entropy"),
}
SPEED_METRICS = ["train.total_time_s", "train.final_epoch_time_s", "train.compile_time_s",
                 "evaluation.test_inference_time_s"]
ACCURACY_METRICS = ["evaluation.accuracy", "evaluation.macro.f1", "evaluation.auc", "train.final_val_accuracy",
                    "train.final_val_loss"]
NO_TEST = stats.NO_TEST_FEW

SUMMARY_COLUMNS = ["metric", "unit", "framework", "n", "mean", "std", "min", "max", "ci95_low", "ci95_high"]
TEST_COLUMNS = ["metric", "unit", "framework A", "framework B", "n A", "n B", "mean A", "mean B", "ratio A/B",
                "t", "df", "p", "effect size (Hedges' g)", "result", "sentence"]


def label(metric: str) -> str:
    if metric in METRICS:
        return METRICS[metric][0]
    parts = metric.split(".")
    if parts[0] == "inference" and len(parts) >= 3 and parts[1].isdigit():
        what = "throughput" if "throughput" in metric else ".".join(parts[2:]).replace("latency_ms.", "latency ")
        return f"{what} at batch {parts[1]}"
    return metric


def unit(metric: str) -> str:
    if metric in METRICS:
        return METRICS[metric][1]
    u = stats.metric_unit(metric)
    return "images/s" if u == "img/s" else u


def axis_title(metric: str) -> str:
    u = unit(metric)
    return f"{label(metric)} ({u})" if u else label(metric)


def inference_metrics(results: list[dict]) -> list[str]:
    """Throughput at each batch size that any result timed."""
    sizes = sorted({e.get("batch_size") for r in results for e in (r.get("inference") or [])
                    if isinstance(e.get("batch_size"), int)})
    return [f"inference.{bs}.throughput_images_per_s" for bs in sizes]


def seeds_per_framework(results: list[dict]) -> dict[str, int]:
    """framework -> number of ok results (repeats) in the comparison, in the lab's order."""
    counts: dict[str, int] = {}
    for r in results:
        if r.get("status") == "ok":
            counts[r.get("framework")] = counts.get(r.get("framework"), 0) + 1
    for r in results:  # a framework whose every run failed still shows, with 0
        counts.setdefault(r.get("framework"), 0)
    return {fw: counts[fw] for fw in ordered(counts)}


def testable(results: list[dict]) -> bool:
    """True when at least two frameworks have two or more ok repeats each."""
    return sum(1 for n in seeds_per_framework(results).values() if n >= 2) >= 2


def available(results: list[dict], metrics: list[str]) -> list[str]:
    """The metrics that at least one ok result has a value for."""
    return [m for m in metrics if any(stats.metric_values(results, m).values())]


def values_frame(results: list[dict], metric: str) -> pd.DataFrame:
    """framework, seed, value: one row per ok result with a value of ``metric``."""
    rows = []
    for r in results:
        if r.get("status") != "ok":
            continue
        v = stats.metric_value(r, metric)
        if v is None:
            continue
        rows.append({"framework": r.get("framework"), "seed": seed_of(r), "value": float(v)})
    df = pd.DataFrame(rows, columns=["framework", "seed", "value"])
    if df.empty:
        return df
    order = {f: i for i, f in enumerate(ordered(df["framework"].unique()))}
    return df.assign(_o=df["framework"].map(order)).sort_values(["_o", "seed"]).drop(columns="_o").reset_index(
        drop=True)


def summary_frame(results: list[dict], metrics: list[str]) -> pd.DataFrame:
    """One row per (metric, framework): n, mean, std, min, max and the 95% CI of the mean
    (std and CI are NaN for n < 2, shown as "needs ≥ 2 repeats")."""
    rows = []
    for m in metrics:
        values = stats.metric_values(results, m)
        for fw in ordered(values):
            s = stats.summarize(values[fw], stats.metric_kind(m))
            rows.append({"metric": label(m), "unit": unit(m), "framework": fw,
                         **{k: s[k] for k in ("n", "mean", "std", "min", "max", "ci95_low", "ci95_high")}})
    return pd.DataFrame(rows, columns=SUMMARY_COLUMNS)


def positive(results: list[dict], metric: str) -> bool:
    """Whether `metric` is drawn on a log axis: a quantity that cannot be negative, every
    value of it above zero (its interval is then the one on the logarithm)."""
    values = [v for vs in stats.metric_values(results, metric).values() for v in vs]
    return stats.metric_kind(metric) == "positive" and bool(values) and min(values) > 0


def interval_method(metric: str) -> str:
    """How the 95% interval of `metric` is computed, in words (engines.analysis.stats)."""
    return stats.CI_METHODS[stats.metric_kind(metric)]


def ci_frame(results: list[dict], metric: str) -> pd.DataFrame:
    """framework, mean, ci95_low, ci95_high, n for one metric (for the error bars)."""
    values = stats.metric_values(results, metric)
    rows = []
    for fw in ordered(values):
        s = stats.summarize(values[fw], stats.metric_kind(metric))
        rows.append({"framework": fw, "mean": s["mean"], "ci95_low": s["ci95_low"], "ci95_high": s["ci95_high"],
                     "n": s["n"]})
    return pd.DataFrame(rows, columns=["framework", "mean", "ci95_low", "ci95_high", "n"])


def _names(values: dict) -> dict:
    """Values keyed by display name in the lab's order (stats.pairwise keeps the order)."""
    return {fw: values[fw] for fw in ordered(values)}


def tests(results: list[dict], metric: str) -> list[dict]:
    """engines.analysis.stats.compare for every pair of frameworks on one metric (frameworks in
    the lab's order), each with "framework_a"/"framework_b"."""
    values = stats.metric_values(results, metric)
    for r in results:  # a framework with no value at all still gets its "no test" line
        values.setdefault(r.get("framework"), [])
    return stats.pairwise(_names(values), metric=metric, unit=stats.metric_unit(metric))


def _result_word(r: dict) -> str:
    if not r["test_possible"]:
        if r.get("exact"):
            return "exact difference" if r.get("difference") else "no difference"
        return "no test possible"
    return "significant (p < 0.05)" if r["significant"] else "not significant"


def tests_frame(results: list[dict], metrics: list[str]) -> pd.DataFrame:
    """One row per (metric, pair of frameworks): means, ratio, Welch's t, its degrees of
    freedom, p, Hedges' g and the sentence. NaN where no test was possible."""
    rows = []
    for m in metrics:
        for r in tests(results, m):
            rows.append({"metric": label(m), "unit": unit(m), "framework A": r["framework_a"],
                         "framework B": r["framework_b"], "n A": r["n_a"], "n B": r["n_b"],
                         "mean A": r["mean_a"], "mean B": r["mean_b"], "ratio A/B": r["ratio"], "t": r["t"],
                         "df": r["df"], "p": r["p"], "effect size (Hedges' g)": r["effect_size"],
                         "result": _result_word(r), "sentence": r["sentence"]})
    return pd.DataFrame(rows, columns=TEST_COLUMNS)


def fmt_p(p) -> str:
    if p is None or pd.isna(p):
        return "—"
    return stats.format_p(p)


def identical_pairs(results: list[dict], metric: str) -> list[tuple[str, str]]:
    """Pairs of frameworks whose values of ``metric`` are equal seed by seed (2 or more
    common seeds): the same computation, whatever a test of the means says."""
    df = values_frame(results, metric)
    if df.empty:
        return []
    wide = df.pivot_table(index="seed", columns="framework", values="value", aggfunc="first")
    fws = ordered(wide.columns)
    out = []
    for i, a in enumerate(fws):
        for b in fws[i + 1:]:
            both = wide[[a, b]].dropna()
            if len(both) >= 2 and (both[a] == both[b]).all():
                out.append((a, b))
    return out
