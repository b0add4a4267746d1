"""Accuracy: metrics table, per-class F1, confusion matrices, training curves."""
import streamlit as st

from labui import charts, widgets
from labui import repeats as RP
from labui import results as R
from labui.backend import ensure_app_navigation

ensure_app_navigation()

st.title("Accuracy")
comparison, results = widgets.pick_comparison("accuracy")
if comparison is not None:
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

        cm = R.confusion_long(results, normalize=False)
        if not cm.empty:
            st.header("Confusion matrices")
            normalized = st.toggle("Normalize rows (share of each true class)", key="cm_normalized",
                                   help="Off: counts of test images (means over seeds); on: each row sums to 1.")
            if normalized:
                cm = R.confusion_long(results, normalize=True)
            fws = R.frameworks_of([{"framework": f} for f in cm["framework"].unique()])
            cols = st.columns(min(3, len(fws)))
            for i, fw in enumerate(fws):
                with cols[i % len(cols)]:
                    widgets.chart(charts.confusion_chart(cm, fw, normalized))

    curves = R.curves_long(R.epochs_frame(results))
    if not curves.empty:
        st.header("Training and validation curves")
        c1, c2 = st.columns(2)
        with c1:
            widgets.chart(charts.curves_chart(curves, "loss"))
        with c2:
            widgets.chart(charts.curves_chart(curves, "accuracy"))
        st.caption("Solid: training split (running mean over the epoch); dashed: validation split at the epoch's end.")

    widgets.statistics_section(results, "accuracy", RP.ACCURACY_METRICS, headline="evaluation.accuracy")
