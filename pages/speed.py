"""Speed: inference throughput and latency vs batch size, training and compile time."""
import streamlit as st

from labui import charts, reference, widgets
from labui import repeats as RP
from labui import results as R
from labui.backend import ensure_app_navigation
from labui.text import fmt, fmt_bytes

ensure_app_navigation()

st.title("Speed")
comparison, results = widgets.pick_comparison("speed")
if comparison is not None:
    inf = R.inference_summary(results)
    train = R.train_summary(results)
    epochs = R.epochs_frame(results)
    noisy = R.noisy_frame(results)
    widgets.show_noisy(noisy)

    st.header("Inference")
    if inf.empty:
        st.info("No inference timings in this comparison (every framework failed before timing).")
    else:
        c1, c2 = st.columns(2)
        with c1:
            widgets.chart(charts.throughput_chart(inf))
            st.caption("Images per second at each batch size, warm-up excluded, device synchronized. "
                       "A cross marks a batch size that ran out of memory (OOM) or failed.")
        with c2:
            if inf["p50_ms"].notna().any():
                widgets.chart(charts.latency_chart(inf))
                lower, _ = charts.latency_band(inf[inf["p50_ms"].notna()])
                st.caption("Time per batch: the line is the median call (p50); the band around it spans the middle "
                           "90% of the timed calls (p5 to p95)." if lower == "p5_ms" else
                           "Time per batch: the line is the median call (p50); the band spans p50 to p95 (these "
                           "results were timed before the lab recorded p5). p99 is in the tooltip and the table.")
            else:
                st.info("Latency: not measured.")
        fast = R.fastest(inf)
        if fast:
            st.markdown("**Fastest at each batch size:** " + ", ".join(f"{bs}: {fw}" for bs, fw in fast.items()))

    st.header("Training")
    if train.empty:
        st.info("No training in this comparison (inference only, or it failed before training).")
    else:
        c1, c2 = st.columns(2)
        with c1:
            if not epochs.empty and epochs["time_s"].notna().any():
                widgets.chart(charts.epoch_time_chart(epochs))
            else:
                st.info("Time per epoch: not measured.")
        with c2:
            comp = train[train["compile_time_s"].notna()]
            if comp.empty:
                st.info("Compile time: not measured.")
            else:
                widgets.chart(charts.framework_bars(
                    comp, "compile_time_s", "Compile and first step", "compile + first step (s)",
                    extra_tooltip=[charts.alt.Tooltip("n:Q", title="seeds averaged")]))
        st.caption("Epoch time leaves out the first step's tracing/compilation, which is shown on its own.")

    st.header("Ratios against the fastest")
    ratios = R.ratio_table(inf, train)
    ratio_cols = [c for c in ratios.columns if c != "framework"]
    st.dataframe(R.display(ratios, {c: lambda v: fmt(v, ".2f", "×") for c in ratio_cols}),
                 hide_index=True, width="stretch")
    st.caption("1.00× is the fastest framework in that column; 0.50× means half its throughput "
               "(or, for training, twice its time per epoch).")

    with st.expander("All timings (table)"):
        table = R.mark_noisy(inf, noisy).drop(columns=["message"], errors="ignore")
        st.dataframe(R.display(table, {
            "p50_ms": ",.4g", "p95_ms": ",.4g", "p99_ms": ",.4g", "mean_ms": ",.4g", "std_ms": ",.3g",
            "throughput_images_per_s": ",.1f", "first_call_s": ",.3g", "peak_memory_bytes": fmt_bytes,
            "energy_j_per_1000_images": ",.3g"}), hide_index=True, width="stretch")
        if not train.empty:
            st.dataframe(R.display(train, {
                "epoch_time_s": ",.3g", "compile_time_s": ",.3g", "total_time_s": ",.3g", "images_per_s": ",.1f",
                "energy_j": ",.3g", "energy_j_per_epoch": ",.3g", "mean_power_w": ",.1f",
                "peak_memory_bytes": fmt_bytes}), hide_index=True, width="stretch")

    widgets.statistics_section(results, "speed", RP.SPEED_METRICS + RP.inference_metrics(results),
                               headline="train.total_time_s")
    reference.show(results, inf, "throughput_images_per_s", {"images_per_s": ",.1f"}, "Images per second")
