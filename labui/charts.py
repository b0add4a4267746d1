"""Altair chart builders for the result pages (no Streamlit, no framework).

Every chart: the framework colours of ``colors``, units in the axis titles, tooltips
with the exact figures, and batch sizes on a log2 axis.
"""
from __future__ import annotations

import json

import altair as alt
import pandas as pd

from .colors import domain_range, label_of, ordered

HEIGHT = 320


def framework_color(frameworks=None, legend: bool = True) -> alt.Color:
    """The framework colour channel. The data keep the framework names (what the result
    files, the CSV export and the tooltips say); the legend shows each one's label, as
    every other line of the pages does."""
    domain, rng = domain_range(frameworks)
    return alt.Color("framework:N", title="framework", scale=alt.Scale(domain=domain, range=rng),
                     legend=alt.Legend(orient="top", labelExpr=legend_labels(domain)) if legend else None)


def legend_labels(frameworks) -> str:
    """A Vega expression that turns a legend entry's framework name into its label (a
    name the table does not know stays as it is)."""
    expr = "datum.label"
    for name in reversed(list(frameworks)):
        if label_of(name) != name:
            expr = f"datum.label === {json.dumps(name)} ? {json.dumps(label_of(name))} : {expr}"
    return expr


def _batch_x(values) -> alt.X:
    """Batch sizes on a log2 axis, ticks at the sizes measured. One size alone gets a
    domain an octave either side (Altair 6 rejects a domain of None)."""
    ticks = sorted({int(v) for v in values if pd.notna(v)})
    if len(ticks) > 1:
        domain = [min(ticks), max(ticks)]
    elif ticks:
        domain = [ticks[0] / 2, ticks[0] * 2]
    else:
        domain = [1, 2]
    return alt.X("batch_size:Q", title="batch size (images, log scale)",
                 scale=alt.Scale(type="log", base=2, nice=False, domain=domain),
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


def latency_band(summary: pd.DataFrame) -> tuple[str, str]:
    """(lower column, upper column) of the band drawn around the p50 line: p5 to p95 (the
    middle 90% of the calls), or p50 to p95 for results measured before p5 was."""
    lower = "p5_ms" if "p5_ms" in summary and summary["p5_ms"].notna().all() else "p50_ms"
    return lower, "p95_ms"


def latency_chart(summary: pd.DataFrame) -> alt.Chart:
    """p50 latency (ms per batch) as a line inside the band of `latency_band`, which
    contains it (p5 <= p50 <= p95)."""
    ok = summary[summary["p50_ms"].notna()]
    lower, upper = latency_band(ok)
    fws = summary["framework"].unique()
    x = _batch_x(summary["batch_size"])
    tooltip = [alt.Tooltip("framework:N"), alt.Tooltip("batch_size:Q", title="batch size"),
               *([alt.Tooltip("p5_ms:Q", title="p5 (ms)", format=",.3f")] if lower == "p5_ms" else []),
               alt.Tooltip("p50_ms:Q", title="p50 (ms)", format=",.3f"),
               alt.Tooltip("p95_ms:Q", title="p95 (ms)", format=",.3f"),
               alt.Tooltip("p99_ms:Q", title="p99 (ms)", format=",.3f"),
               alt.Tooltip("mean_ms:Q", title="mean (ms)", format=",.3f"),
               alt.Tooltip("std_ms:Q", title="std (ms)", format=",.3f")]
    y = alt.Y("p50_ms:Q", title="latency per batch (ms, log scale)", scale=alt.Scale(type="log"))
    base = alt.Chart(ok).encode(x=x, color=framework_color(fws), tooltip=tooltip)
    band = base.mark_area(opacity=0.22).encode(y=alt.Y(f"{lower}:Q", scale=alt.Scale(type="log")), y2=f"{upper}:Q")
    spans = "p5–p95" if lower == "p5_ms" else "p50–p95"
    return alt.layer(band, base.mark_line().encode(y=y), base.mark_point(filled=True).encode(y=y)).properties(
        height=HEIGHT, title=f"Latency: p50 line, {spans} band")


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


# Line widths by the framework's place in the table: where curves coincide (the same
# weights in the same order give the same numbers), the wider line drawn first shows as a
# coloured rim around the next one, so every framework stays visible.
LINE_WIDTHS = (7.0, 4.5, 2.4, 1.0)


def _widths(frameworks) -> tuple[list[str], list[float]]:
    domain = ordered(frameworks)
    return domain, [LINE_WIDTHS[min(i, len(LINE_WIDTHS) - 1)] for i in range(len(domain))]


def curves_chart(curves: pd.DataFrame, metric: str, recomputed: pd.DataFrame | None = None) -> alt.Chart:
    """Training (solid) and validation (dashed) ``metric`` per epoch; lines nested by
    width (LINE_WIDTHS) and points with one shape per framework, so that frameworks whose
    curves coincide are all seen. ``recomputed`` (results.recomputed_points): the
    validation figure after the BatchNorm statistics were recomputed, a ring at the
    last epoch."""
    df = curves[curves["metric"] == metric]
    fws = df["framework"].unique()
    axis = "loss (cross-entropy)" if metric == "loss" else "accuracy (fraction correct)"
    epochs = sorted(df["epoch"].unique())
    domain, widths = _widths(fws)
    base = alt.Chart(df).encode(
        x=alt.X("epoch:Q", title="epoch", axis=alt.Axis(values=[int(e) for e in epochs], format="d"),
                scale=alt.Scale(domain=[min(epochs) - 0.2, max(epochs) + 0.2] if epochs else alt.Undefined)),
        y=alt.Y("value:Q", title=axis, scale=alt.Scale(zero=False)),
        color=framework_color(fws),
        strokeDash=alt.StrokeDash("split:N", title="split", sort=["training", "validation"]),
        tooltip=[alt.Tooltip("framework:N"), alt.Tooltip("split:N"), alt.Tooltip("epoch:Q"),
                 alt.Tooltip("value:Q", title=metric, format=".4f")])
    # One layer per framework, the widest drawn first: a later, narrower line lies inside it.
    lines = [base.transform_filter(alt.datum.framework == fw).mark_line(strokeWidth=w, opacity=0.95)
             for fw, w in zip(domain, widths)]
    points = base.mark_point(filled=True, size=60, opacity=0.95).encode(
        shape=alt.Shape("framework:N", scale=alt.Scale(domain=domain), legend=None))
    layers = [*lines, points]
    after = recomputed[recomputed["metric"] == metric] if recomputed is not None and not recomputed.empty else None
    if after is not None and not after.empty:
        layers.append(alt.Chart(after).mark_point(shape="circle", size=260, strokeWidth=2.5, filled=False).encode(
            x="epoch:Q", y="value:Q", color=framework_color(fws, legend=False),
            tooltip=[alt.Tooltip("framework:N"), alt.Tooltip("value:Q", format=".4f",
                                                             title=f"validation {metric}, BatchNorm recomputed")]))
    return alt.layer(*layers).properties(height=HEIGHT, title=f"{metric.capitalize()} per epoch")


def per_class_chart(per_class: pd.DataFrame, measure: str = "f1") -> alt.Chart:
    """Bars per class, frameworks side by side; a bar of exactly 0 (which draws nothing)
    gets a "0" in its framework's colour where the bar would stand."""
    sort = list(dict.fromkeys(per_class.sort_values("class_index")["class"]))
    bars = framework_bars(per_class, measure, f"Per-class {measure.upper() if measure == 'f1' else measure} "
                          "on the test split", f"{measure} (0–1)", group="class", sort=sort, fmt=".4f",
                          domain=(0, 1), extra_tooltip=[alt.Tooltip("support:Q", title="test images", format=",.0f")])
    zeros = per_class[per_class[measure] == 0]
    if zeros.empty:
        return bars
    fws = per_class["framework"].unique()
    marks = alt.Chart(zeros).mark_text(dy=-9, fontWeight="bold", fontSize=13).encode(
        x=alt.X("class:N", sort=sort), xOffset=alt.XOffset("framework:N", sort=ordered(fws)),
        y=alt.Y(f"{measure}:Q"), text=alt.value("0"), color=framework_color(fws, legend=False),
        tooltip=[alt.Tooltip("framework:N"), alt.Tooltip("class:N"),
                 alt.Tooltip(f"{measure}:Q", title=f"{measure} (exactly 0)")])
    return alt.layer(bars, marks)


CELL_PX = 46  # a confusion-matrix cell: room for "0.95" or "1,234" in 13 px type


def _class_axes(order: list[str]) -> dict:
    """Both class axes of a confusion matrix, every class named (no label dropped for
    overlap, long names cut only past 220 px, x labels slanted when there are many)."""
    longest = max(map(len, order), default=0)
    angle = 0 if longest <= 4 or (len(order) <= 4 and longest <= 10) else -35
    return dict(
        x=alt.X("predicted:N", title="predicted class", sort=order,
                axis=alt.Axis(labelAngle=angle, labelOverlap=False, labelLimit=220, labelFontSize=13)),
        y=alt.Y("true:N", title="true class", sort=order,
                axis=alt.Axis(labelOverlap=False, labelLimit=220, labelFontSize=13)))


def _cell(v, normalized: bool, sign: bool = False) -> str:
    """A cell's figure: shares with 2 decimals; counts whole, or with one decimal where
    they are means over seeds (26.5), never rounded to a misleading 0."""
    if pd.isna(v):
        return ""
    plus = "+" if sign else ""
    if normalized:
        return format(v, f"{plus}.2f")
    text = format(v, f"{plus},.1f")
    return text[:-2] if text.endswith(".0") else text


def confusion_chart(cm: pd.DataFrame, framework: str, normalized: bool) -> alt.Chart:
    """Heat map of one framework's confusion matrix, a readable cell per class pair
    (CELL_PX), every class name on both axes."""
    df = cm[cm["framework"] == framework].copy()
    order = list(dict.fromkeys(df.sort_values("true_index")["true"]))
    df["text"] = df["value"].map(lambda v: _cell(v, normalized))
    title = "share of the true class" if normalized else "test images"
    base = alt.Chart(df).encode(**_class_axes(order))
    heat = base.mark_rect().encode(
        color=alt.Color("value:Q", title=title, scale=alt.Scale(scheme="blues"), legend=None),
        tooltip=[alt.Tooltip("true:N", title="true"), alt.Tooltip("predicted:N", title="predicted"),
                 alt.Tooltip("value:Q", title=title, format=".4f" if normalized else ",.2f")])
    text = base.mark_text(fontSize=13).encode(
        text="text:N",
        color=alt.condition(alt.datum.value > (df["value"].max() or 0) / 2, alt.value("white"), alt.value("#1F2330")))
    return alt.layer(heat, text).properties(height=CELL_PX * max(len(order), 2), title=label_of(framework))


def confusion_difference_chart(diff: pd.DataFrame, a: str, b: str, normalized: bool) -> alt.Chart:
    """Heat map of A − B per cell (labui.results.confusion_difference): blue where A has
    more, red where B has more, white where they agree; the signed figure in each cell."""
    order = list(dict.fromkeys(diff.sort_values("true_index")["true"]))
    df = diff.copy()
    df["text"] = df["value"].map(lambda v: "" if pd.isna(v) or v == 0 else _cell(v, normalized, sign=True))
    reach = float(df["value"].abs().max() or 0) or 1.0
    what = "share of the true class" if normalized else "test images"
    base = alt.Chart(df).encode(**_class_axes(order))
    heat = base.mark_rect().encode(
        color=alt.Color("value:Q", scale=alt.Scale(scheme="redblue", domain=[-reach, reach]),
                        title=f"{label_of(a)} − {label_of(b)}", legend=alt.Legend(orient="right")),
        tooltip=[alt.Tooltip("true:N", title="true"), alt.Tooltip("predicted:N", title="predicted"),
                 alt.Tooltip("a:Q", title=f"{label_of(a)} ({what})", format=",.4g"),
                 alt.Tooltip("b:Q", title=f"{label_of(b)} ({what})", format=",.4g"),
                 alt.Tooltip("value:Q", title="difference", format="+,.4g")])
    text = base.mark_text(fontSize=13).encode(
        text="text:N",
        color=alt.condition(f"abs(datum.value) > {reach / 2}", alt.value("white"), alt.value("#1F2330")))
    return alt.layer(heat, text).properties(height=CELL_PX * max(len(order), 2),
                                            title=f"{label_of(a)} − {label_of(b)}")


def repeats_chart(values: pd.DataFrame, ci: pd.DataFrame, axis_title: str, title: str,
                  log: bool = False) -> alt.Chart:
    """Strip plot of one metric over the repeats: one dot per seed,
    the mean as a tick and its 95% confidence interval as an error bar (frameworks with
    2 or more repeats). `log`: a log axis, for a quantity that cannot be negative, whose
    interval is multiplicative (engines.analysis.stats): symmetric there, and a wide
    upper end from two repeats does not flatten the dots."""
    fws = ordered(values["framework"].unique())
    x = alt.X("framework:N", title=None, sort=fws, axis=alt.Axis(labelAngle=0))
    y_scale = alt.Scale(type="log") if log else alt.Scale(zero=False)
    if log:
        axis_title = f"{axis_title}, log scale"
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
