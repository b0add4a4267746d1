"""Energy & memory: joules per epoch and per 1,000 images, mean power, peak memory, CPU."""
import streamlit as st

from labui import charts, reference, widgets
from labui import results as R
from labui.backend import ensure_app_navigation
from labui.text import fmt_bytes

ensure_app_navigation()


def bars_per_measure(frame, value: str, title: str, axis: str, fmt: str) -> None:
    """One bar chart per measure (allocator, NVML, RSS, ...), two to a row, bars by phase;
    `title` and `axis` are format strings given the measure's name."""
    measures = list(dict.fromkeys(frame["measure"]))
    cols = st.columns(min(2, len(measures)))
    for i, m in enumerate(measures):
        df = frame[frame["measure"] == m]
        with cols[i % len(cols)]:
            widgets.chart(charts.framework_bars(df, value, title.format(m), axis.format(m), group="phase",
                                                sort=list(dict.fromkeys(df["phase"])), fmt=fmt))


st.title("Energy & memory")
comparison, results = widgets.pick_comparison("energy")
if comparison is not None:
    energy = R.energy_long(results)
    power = R.power_frame(results)
    memory = R.memory_long(results)
    cpu = R.cpu_frame(results)

    st.header("Energy")
    if energy.empty:
        why = R.energy_notes(results)
        st.info("Energy: not measured in this comparison. It is read from the GPU's energy counter (NVML), "
                "so runs on a CPU, or on a GPU without that counter, have none."
                + (" The workers say: " + "; ".join(why) if why else ""))
    else:
        c1, c2 = st.columns(2)
        with c1:
            tr = energy[energy["what"] == "training, per epoch"]
            if tr.empty:
                st.info("Training energy: not measured.")
            else:
                widgets.chart(charts.framework_bars(tr, "joules", "Training energy per epoch", "energy per epoch (J)",
                                                    fmt=",.1f"))
        with c2:
            inf = energy[energy["what"] != "training, per epoch"]
            if inf.empty:
                st.info("Inference energy: not measured.")
            else:
                widgets.chart(charts.framework_bars(
                    inf, "joules", "Inference energy per 1,000 images", "energy per 1,000 images (J)",
                    group="what", sort=list(dict.fromkeys(inf["what"])), fmt=",.3f"))
    if not power.empty:
        widgets.chart(charts.framework_bars(power, "watts", "Mean GPU power", "mean power (W)", group="phase",
                                            sort=list(dict.fromkeys(power["phase"])), fmt=",.1f"))
        st.caption("Training: energy ÷ total training time. Inference: joules per image × images per second.")

    st.header("Peak memory")
    if memory.empty:
        st.info("Peak memory: not measured in this comparison.")
    else:
        bars_per_measure(memory, "MiB", "Peak memory: {}", "peak memory (MiB)", ",.1f")
        sources = R.memory_sources(results)
        if sources:
            st.caption("What each peak is, in the workers' words: " + "; ".join(sources) + ".")
        st.caption("Allocator peak: what the framework's allocator handed out (PyTorch max_memory_allocated, "
                   "TensorFlow/JAX peak bytes in use). NVML: the whole process on the GPU, including the "
                   "framework's reserved pool and the CUDA context. Where batch sizes run in one process, JAX's "
                   "peak cannot be reset, so they run in increasing order.")

    st.header("CPU")
    if cpu.empty:
        st.info("CPU utilization: not measured in this comparison.")
    else:
        bars_per_measure(cpu, "value", "{}", "{}", ",.2f")
        st.caption("CPU cores used: the worker process's CPU time ÷ wall time (1.0 = one core busy on average). "
                   "Other processes' CPU cores: what every other process on the machine used meanwhile (/proc/stat); "
                   "a timing taken while that was more than the set share of the cores is flagged noisy.")

    reference.show(results, R.inference_summary(results), "energy_j_per_1000_images",
                   {"energy_j_per_1000_images": ",.2f", "allocator_peak_bytes": fmt_bytes,
                    "nvml_process_memory_bytes": fmt_bytes}, "Energy per 1,000 images and peak memory")
