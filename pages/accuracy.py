"""Accuracy: metrics table, per-class figures, confusion matrices, training curves and the
BatchNorm statistics."""
import streamlit as st

from labui import charts, widgets
from labui import repeats as RP
from labui import results as R
from labui.backend import ensure_app_navigation
from labui.colors import label_of
from labui.text import frameworks_of

ensure_app_navigation()


def confusion_section(results: list[dict]) -> None:
    """One tab per framework (a matrix the page's width, every class named) and a tab with
    the difference of two frameworks' matrices."""
    cm = R.confusion_long(results, normalize=False)
    if cm.empty:
        return
    st.header("Confusion matrices")
    normalized = st.toggle("Normalize rows (share of each true class)", key="cm_normalized",
                           help="Off: counts of test images (means over seeds); on: each row sums to 1.")
    if normalized:
        cm = R.confusion_long(results, normalize=True)
    fws = frameworks_of([{"framework": f} for f in cm["framework"].unique()])
    names = [label_of(f) for f in fws] + (["Difference A − B"] if len(fws) > 1 else [])
    tabs = st.tabs(names)
    for tab, fw in zip(tabs, fws):
        with tab:
            widgets.chart(charts.confusion_chart(cm, fw, normalized))
    if len(fws) > 1:
        with tabs[-1]:
            first, second = R.most_different_pair(cm)
            a_col, b_col = st.columns(2)
            a = a_col.selectbox("A", fws, index=fws.index(first), key="cm_a", format_func=label_of,
                                help="Opens on the two frameworks whose matrices differ most.")
            b = b_col.selectbox("B", fws, index=fws.index(second), key="cm_b", format_func=label_of)
            diff = R.confusion_difference(cm, a, b)
            if a == b:
                st.info("Choose two different frameworks.")
            elif not diff["value"].abs().gt(0).any():
                st.success(f"{label_of(a)} and {label_of(b)} gave the same confusion matrix, cell for cell.")
            else:
                widgets.chart(charts.confusion_difference_chart(diff, a, b, normalized))
                st.caption(f"Each cell: {label_of(a)}'s figure minus {label_of(b)}'s. Blue: {label_of(a)} put more "
                           f"test images there; red: {label_of(b)} did; empty: the same. On the diagonal, blue means "
                           f"{label_of(a)} got more of that class right.")


def batchnorm_section(results: list[dict]) -> None:
    frame = R.batchnorm_frame(results)
    if frame.empty:
        return
    st.header("BatchNorm statistics")
    st.dataframe(R.display(frame.drop(columns=["status", "message"], errors="ignore"), {
        "val_accuracy_before": ".4f", "val_accuracy_after": ".4f", "layers": ",.0f", "images": ",.0f",
        "time_s": ",.3g"}), hide_index=True, width="stretch",
        column_config={"val_accuracy_before": "validation accuracy, training's running averages",
                       "val_accuracy_after": "validation accuracy, recomputed statistics",
                       "time_s": "recompute time (s)"})
    st.caption("After training, each framework replaced its BatchNorm running averages by the trained network's "
               "statistics over the training split (one pass, BatchNorm on batch statistics, dropout off; the same "
               "rule in every framework). The test figures above use the recomputed statistics; the first column "
               "is what the running averages gave on the validation split.")


def curves_section(results: list[dict]) -> None:
    curves = R.curves_long(R.epochs_frame(results))
    if curves.empty:
        return
    recomputed = R.recomputed_points(results)
    st.header("Training and validation curves")
    c1, c2 = st.columns(2)
    with c1:
        widgets.chart(charts.curves_chart(curves, "loss", recomputed))
    with c2:
        widgets.chart(charts.curves_chart(curves, "accuracy", recomputed))
    st.caption("Solid: training split (running mean over the epoch); dashed: validation split at the epoch's end. "
               "Each framework has its own point shape, and its line is drawn wider than the next one's, so lines "
               "that lie on each other show as nested colours."
               + (" A ring at the last epoch: the validation figure once the BatchNorm statistics were recomputed "
                  "(the dashed line shows training's running averages)." if not recomputed.empty else ""))
    for metric in ("loss", "accuracy"):
        for group, exact in R.coinciding_curves(curves, metric):
            names = f"{', '.join(label_of(f) for f in group[:-1])} and {label_of(group[-1])}"
            how = "the same numbers, epoch by epoch" if exact else "numbers within 1% of the chart's height"
            st.info(f"{metric.capitalize()}: {names} lie on each other ({how}): they start from the same initial "
                    "weights and see the same examples in the same order, so the same update gives the same "
                    "curve. Each framework is still drawn: the widest line is the first one's.",
                    icon=":material/stacks:")


st.title("Accuracy")
comparison, results = widgets.pick_comparison("accuracy")
if comparison is not None:
    for origin in R.initial_weights(results):
        st.caption(f"Every framework started from pretrained weights: {origin}.")
    metrics = R.metrics_frame(results)
    if metrics.empty:
        st.info("No evaluation in this comparison (inference only, or every framework failed first).")
    else:
        st.header("Test-split metrics")
        shown = metrics.drop(columns=["status", "message"], errors="ignore")
        st.dataframe(R.display(shown, {c: ".4f" for c in R.METRIC_COLUMNS} | {"test inference time s": ",.3g"}),
                     hide_index=True, width="stretch")
        st.caption("Macro: the plain mean over classes; weighted: weighted by each class's test images. "
                   "AUC: one-vs-rest over the predicted probabilities. n: seeds averaged.")

        per_class = R.per_class_frame(results)
        if not per_class.empty:
            st.header("Per class")
            measure = st.segmented_control("Measure", ["f1", "precision", "recall"], default="f1",
                                           key="per_class_measure",
                                           help="Which per-class figure the bars show.") or "f1"
            widgets.chart(charts.per_class_chart(per_class, measure))
            if (per_class[measure] == 0).any():
                st.caption(f"A “0” marks a {measure} of exactly 0: no bar to draw, but a result all the same.")
        confusion_section(results)

    batchnorm_section(results)
    curves_section(results)
    widgets.statistics_section(results, "accuracy", RP.ACCURACY_METRICS, headline="evaluation.accuracy")
