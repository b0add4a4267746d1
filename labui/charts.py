"""Altair chart builders for the result pages (no Streamlit, no framework).

Every chart: the framework colours of ``colors``, units in the axis titles, tooltips
with the exact figures, and batch sizes on a log2 axis.
"""
from __future__ import annotations

import altair as alt
import pandas as pd

from .colors import domain_range, ordered

HEIGHT = 320


def framework_color(frameworks=None, legend: bool = True) -> alt.Color:
    domain, rng = domain_range(frameworks)
    return alt.Color("framework:N", title="framework", scale=alt.Scale(domain=domain, range=rng),
                     legend=alt.Legend(orient="top") if legend else None)


def _batch_x(values) -> alt.X:
    ticks = sorted({int(v) for v in values if pd.notna(v)})
    return alt.X("batch_size:Q", title="batch size (images, log scale)",
                 scale=alt.Scale(type="log", base=2, nice=False,
                                 domain=[min(ticks), max(ticks)] if len(ticks) > 1 else None),
                 axis=alt.Axis(values=ticks, format="d"))


def throughput_chart(summary: pd.DataFrame) -> alt.Chart:
    """Throughput (images/s) vs batch size, one line per framework; batch sizes that ran
    out of memory (or failed) as crosses on the bottom of the chart."""
    ok = summary[summary["throughput_images_per_s"].notna()]
    fws = summary["framework"].unique()
    x = _batch_x(summary["batch_size"])
    tooltip = [alt.Tooltip("framework:N"), alt.Tooltip("batch_size:Q", title="batch size"),
               alt.Tooltip("throughput_images_per_s:Q", title="images/s", format=",.1f"),
               alt.Tooltip("p50_ms:Q", title="p50 latency (ms)", format=",.3f"),
               alt.Tooltip("n:Q", title="seeds averaged")]
    base = alt.Chart(ok).encode(x=x, y=alt.Y("throughput_images_per_s:Q", title="throughput (images/s)"),
                                color=framework_color(fws), tooltip=tooltip)
    layers = [base.mark_line(), base.mark_point(filled=True, size=60)]
    bad = summary[summary["status"].astype(str).str.startswith(("oom", "error"))].copy()
    if not bad.empty:
        floor = float(ok["throughput_images_per_s"].min()) if not ok.empty else 1.0
        bad["y"] = floor * 0.9 if not ok.empty else 0.0
        bad["label"] = bad["status"].astype(str).str.upper().str.replace("ERROR", "failed")
        marks = alt.Chart(bad).encode(
            x=x, y=alt.Y("y:Q"), color=framework_color(fws),
            tooltip=[alt.Tooltip("framework:N"), alt.Tooltip("batch_size:Q", title="batch size"),
                     alt.Tooltip("status:N", title="result"), alt.Tooltip("message:N")])
        layers += [marks.mark_point(shape="cross", size=160, filled=True, angle=45),
                   marks.mark_text(dy=-12, fontWeight="bold").encode(text="label:N")]
    return alt.layer(*layers).properties(height=HEIGHT, title="Inference throughput vs batch size")


def latency_chart(summary: pd.DataFrame) -> alt.Chart:
    """p50 latency (ms per batch) as a line, with the band from p95 to p99."""
    ok = summary[summary["p50_ms"].notna()]
    fws = summary["framework"].unique()
    x = _batch_x(summary["batch_size"])
    tooltip = [alt.Tooltip("framework:N"), alt.Tooltip("batch_size:Q", title="batch size"),
               alt.Tooltip("p50_ms:Q", title="p50 (ms)", format=",.3f"),
               alt.Tooltip("p95_ms:Q", title="p95 (ms)", format=",.3f"),
               alt.Tooltip("p99_ms:Q", title="p99 (ms)", format=",.3f"),
               alt.Tooltip("mean_ms:Q", title="mean (ms)", format=",.3f"),
               alt.Tooltip("std_ms:Q", title="std (ms)", format=",.3f")]
    y = alt.Y("p50_ms:Q", title="latency per batch (ms, log scale)", scale=alt.Scale(type="log"))
    base = alt.Chart(ok).encode(x=x, color=framework_color(fws), tooltip=tooltip)
    band = base.mark_area(opacity=0.25).encode(y=alt.Y("p95_ms:Q", scale=alt.Scale(type="log")), y2="p99_ms:Q")
    return alt.layer(band, base.mark_line().encode(y=y), base.mark_point(filled=True).encode(y=y)).properties(
        height=HEIGHT, title="Latency: p50 line, p95–p99 band")


def framework_bars(df: pd.DataFrame, value: str, title: str, axis_title: str, *, group: str | None = None,
                   fmt: str = ",.3f", extra_tooltip: list | None = None, sort: list | None = None,
                   domain: tuple[float, float] | None = None) -> alt.Chart:
    """Bars of ``value`` per framework; with ``group``, frameworks side by side within
    each group (e.g. each batch size). ``domain`` fixes the value axis (a 0–1 measure)."""
    fws = df["framework"].unique()
    tooltip = [alt.Tooltip("framework:N"), alt.Tooltip(f"{value}:Q", title=axis_title, format=fmt)]
    if group:
        tooltip.insert(1, alt.Tooltip(f"{group}:N"))
    tooltip += extra_tooltip or []
    if group:
        enc = dict(x=alt.X(f"{group}:N", title=None, sort=sort, axis=alt.Axis(labelAngle=0, labelLimit=240)),
                   xOffset=alt.XOffset("framework:N", sort=ordered(fws)))
    else:
        enc = dict(x=alt.X("framework:N", title=None, sort=ordered(fws), axis=alt.Axis(labelAngle=0)))
    return alt.Chart(df).mark_bar().encode(
        y=alt.Y(f"{value}:Q", title=axis_title, scale=alt.Scale(domain=list(domain)) if domain else alt.Undefined),
        color=framework_color(fws), tooltip=tooltip, **enc,
    ).properties(height=HEIGHT, title=title)


def epoch_time_chart(epochs: pd.DataFrame) -> alt.Chart:
    """Training time of each epoch (s), frameworks side by side per epoch; means over seeds."""
    df = epochs.groupby(["framework", "epoch"], sort=False)["time_s"].agg(["mean", "count"]).reset_index()
    df = df.rename(columns={"mean": "time_s", "count": "n"})
    df["epoch_label"] = "epoch " + df["epoch"].astype(int).astype(str)
    return framework_bars(df, "time_s", "Training time per epoch (compile excluded)", "time per epoch (s)",
                          group="epoch_label", sort=[f"epoch {e}" for e in sorted(df["epoch"].unique())],
                          extra_tooltip=[alt.Tooltip("n:Q", title="seeds averaged")])


def curves_chart(curves: pd.DataFrame, metric: str) -> alt.Chart:
    """Training (solid) and validation (dashed) ``metric`` per epoch."""
    df = curves[curves["metric"] == metric]
    fws = df["framework"].unique()
    axis = "loss (cross-entropy)" if metric == "loss" else "accuracy (fraction correct)"
    epochs = sorted(df["epoch"].unique())
    base = alt.Chart(df).encode(
        x=alt.X("epoch:Q", title="epoch", axis=alt.Axis(values=[int(e) for e in epochs], format="d")),
        y=alt.Y("value:Q", title=axis, scale=alt.Scale(zero=False)),
        color=framework_color(fws),
        strokeDash=alt.StrokeDash("split:N", title="split", sort=["training", "validation"]),
        tooltip=[alt.Tooltip("framework:N"), alt.Tooltip("split:N"), alt.Tooltip("epoch:Q"),
                 alt.Tooltip("value:Q", title=metric, format=".4f")])
    return alt.layer(base.mark_line(), base.mark_point(filled=True)).properties(
        height=HEIGHT, title=f"{metric.capitalize()} per epoch")


def per_class_chart(per_class: pd.DataFrame, measure: str = "f1") -> alt.Chart:
    sort = list(dict.fromkeys(per_class.sort_values("class_index")["class"]))
    return framework_bars(per_class, measure, f"Per-class {measure.upper() if measure == 'f1' else measure} "
                          "on the test split", f"{measure} (0–1)", group="class", sort=sort, fmt=".4f", domain=(0, 1),
                          extra_tooltip=[alt.Tooltip("support:Q", title="test images", format=",.0f")])


def confusion_chart(cm: pd.DataFrame, framework: str, normalized: bool) -> alt.Chart:
    """Heat map of one framework's confusion matrix, class names on both axes."""
    df = cm[cm["framework"] == framework].copy()
    order = list(dict.fromkeys(df.sort_values("true_index")["true"]))
    fmt = ".2f" if normalized else ",.0f"
    df["text"] = df["value"].map(lambda v: format(v, fmt) if pd.notna(v) else "")
    title = "share of the true class" if normalized else "test images"
    base = alt.Chart(df).encode(
        x=alt.X("predicted:N", title="predicted class", sort=order, axis=alt.Axis(labelAngle=0)),
        y=alt.Y("true:N", title="true class", sort=order))
    heat = base.mark_rect().encode(
        color=alt.Color("value:Q", title=title, scale=alt.Scale(scheme="blues"), legend=None),
        tooltip=[alt.Tooltip("true:N", title="true"), alt.Tooltip("predicted:N", title="predicted"),
                 alt.Tooltip("value:Q", title=title, format=".4f" if normalized else ",.2f")])
    size = 9 if len(order) > 12 else 11
    text = base.mark_text(fontSize=size).encode(
        text="text:N",
        color=alt.condition(alt.datum.value > (df["value"].max() or 0) / 2, alt.value("white"), alt.value("#1F2330")))
    return alt.layer(heat, text).properties(height=max(220, 22 * len(order)), title=framework)



def repeats_chart(values: pd.DataFrame, ci: pd.DataFrame, axis_title: str, title: str) -> alt.Chart:
    """Strip plot of one metric over the repeats: one dot per seed,
    the mean as a tick and its 95% confidence interval as an error bar (frameworks with
    2 or more repeats)."""
    fws = ordered(values["framework"].unique())
    x = alt.X("framework:N", title=None, sort=fws, axis=alt.Axis(labelAngle=0))
    y_scale = alt.Scale(zero=False)
    dots = alt.Chart(values).mark_circle(size=70, opacity=0.75).encode(
        x=x, y=alt.Y("value:Q", title=axis_title, scale=y_scale), color=framework_color(fws),
        tooltip=[alt.Tooltip("framework:N"), alt.Tooltip("seed:Q"),
                 alt.Tooltip("value:Q", title=axis_title, format=",.4g")],
    )
    layers = []
    ok = ci.dropna(subset=["mean"])
    if not ok.empty:
        tip = [alt.Tooltip("framework:N"), alt.Tooltip("n:Q", title="repeats"),
               alt.Tooltip("mean:Q", title="mean", format=",.4g"),
               alt.Tooltip("ci95_low:Q", title="95% CI low", format=",.4g"),
               alt.Tooltip("ci95_high:Q", title="95% CI high", format=",.4g")]
        layers.append(alt.Chart(ok).mark_tick(thickness=3, size=34).encode(
            x=x, y=alt.Y("mean:Q", scale=y_scale), color=framework_color(fws, legend=False), tooltip=tip))
        bars = ok.dropna(subset=["ci95_low", "ci95_high"])
        if not bars.empty:
            layers.append(alt.Chart(bars).mark_rule(strokeWidth=2, opacity=0.8).encode(
                x=x, y=alt.Y("ci95_low:Q", title=axis_title, scale=y_scale), y2="ci95_high:Q",
                color=framework_color(fws, legend=False), tooltip=tip))
    layers.append(dots)
    return alt.layer(*layers).resolve_scale(color="shared").properties(height=HEIGHT, title=title)
