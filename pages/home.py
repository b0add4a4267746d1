"""Home: what the lab compares and how, this machine, and the one-click default comparison.

The first page a visitor opens, so it imports no pandas: its two small tables are Markdown
(labui.text.markdown_table), not st.dataframe (issue 16).
"""
import streamlit as st

from engines.datasets import catalog, dataset_state, ready_first
from engines.frameworks import FRAMEWORKS
from engines.frameworks import installed as framework_installed
from engines.machine import machine_info
from engines.runs.spec import default_request
from labui import doctor as doctor_ui
from labui import widgets
from labui.backend import ensure_app_navigation
from labui.text import fmt_time, markdown_table

ensure_app_navigation()

st.title("Framework comparison lab")
_labels = [f"**{f.label}**" for f in FRAMEWORKS.values()]  # the table's names, in its order
st.markdown(
    f"The same image classifier, trained, evaluated and timed in {', '.join(_labels[:-1])} and {_labels[-1]}, "
    "side by side: one architecture definition built in each, the same data order, initial (or "
    "pretrained) weights and hyper-parameters, and timings synchronized with the device."
)
with st.expander("How a comparison is made", expanded=False):
    st.markdown(
        "1. **Choose** a dataset, a resolution, an architecture, the frameworks and the inference batch "
        "sizes on the *Run* page (or press the button below for the default).\n"
        "2. The job **queues**: one job runs at a time on this machine's GPU, whoever submitted it; an "
        "identical request joins the one already queued, and finished results come from the cache.\n"
        "3. Each framework runs in its **own worker process** (XLA flags and GPU memory settings are set "
        "before the framework starts, and a crash cannot take the app down): it trains, evaluates on the "
        "test split, then times inference at each batch size with warm-up excluded, and reads peak memory "
        "and, on an NVIDIA GPU, energy.\n"
        "4. The **result pages** put the frameworks side by side: *Speed* (throughput, latency, training "
        "and compile time), *Energy & memory*, *Accuracy* (metrics, per-class F1, confusion matrices, "
        "curves), *Runs* (every cached run, comparison of two, export) and *Papers* (our figures beside "
        "each paper's published ones)."
    )


@st.cache_data(ttl=60, show_spinner=False)
def _machine():
    return machine_info().to_dict()


info = _machine()
installed = {fw: framework_installed(fw) for fw in FRAMEWORKS}


def frameworks_panel(info: dict, installed: dict) -> None:
    """Each framework: installed, versions, and (`./lab doctor`'s probe, run once per server
    in the background) its build, the device it computes on, and what to run to fix it."""
    probing = doctor_ui.probing()
    state = "not probed (LAB_PROBE_ON_HOME=0): `./lab doctor`" if probing is None else "probing…"
    waiting = probing is not None and not probing.done

    @st.fragment(run_every=2 if waiting else None)
    def panel():
        if waiting and probing.done:
            st.rerun()  # the whole page: polling stops
        report = probing.report if probing is not None else None
        rows = doctor_ui.framework_rows(info["versions"], installed, report, state)
        st.markdown(markdown_table(rows))
        if probing is not None and probing.error:
            st.warning(f"The probe failed: {probing.error}. `./lab doctor` in a terminal says more.")
        for row in (report or {}).get("frameworks", []):
            if row["fix"]:
                st.warning(f"**{row['label']}** {row['verdict']}. To fix: {row['fix']}.", icon=":material/build:")
        if report and report["mixed"]:
            st.warning(report["mixed"][0].upper() + report["mixed"][1:] + ".", icon=":material/warning:")
        if probing is not None and probing.done:
            c1, c2 = st.columns([3, 1])
            c1.caption(f"Probed at {fmt_time(probing.finished)}: each framework started in its own worker process "
                       "and computed a small product; `./lab doctor` prints the same in a terminal.")
            if c2.button("Probe again", key="doctor_again", help="After installing or changing something."):
                doctor_ui.forget()
                st.rerun()
        if waiting:
            st.caption("Each framework starts in its own worker process to say where it computes "
                       "(about a minute on a small CPU machine).")

    panel()

# -- the one-click default comparison ------------------------------------------------------
st.header("Try it: the default comparison")
default = default_request()  # the one definition of the default (`python -m engines demo` runs it too)
runnable = [fw for fw in default.frameworks if installed[fw]]
st.markdown(widgets.default_comparison_text(default, runnable) + " Each framework runs in its own process: "
            "about 20 s in all on a 2-core CPU machine, from an empty cache; seconds once cached. The *Run* page "
            "opens on these same settings.")
job = widgets.current_job()
reason = None
if not runnable:
    reason = "No framework is installed here: see the install commands below."
if st.button("Run the default comparison", type="primary", disabled=reason is not None, help=reason,
             key="default_run"):
    jobs, refused = widgets.submit_all({"default": default})
    if jobs:
        widgets.follow(jobs["default"])
        st.rerun()
    st.error(f"Not queued: {refused['default']}", icon=":material/block:")
if reason:
    st.caption(reason)
if job:
    widgets.job_panel(job, with_summary=True)

# -- this machine ----------------------------------------------------------------------------
st.header("This machine")
if info["gpus"]:
    for gpu, column in zip(info["gpus"], st.columns(max(3, len(info["gpus"])))):
        column.metric(f"GPU {gpu['index']}", gpu["name"], f"{gpu['memory_bytes'] / 2**30:.0f} GiB",
                      delta_color="off")
    st.caption(f"NVIDIA driver {info['driver']}, CUDA driver API {info['cuda_driver']}")
else:
    st.metric("GPU", "none")
    st.caption(f"No GPU found ({info['nvml_error']}): everything runs on the CPU, and energy is not measured.")
st.caption(f"CPU: {info['cpu']}, {info['cores']} cores · Python {info['python']} · "
           f"Streamlit {info['versions'].get('streamlit')}")
frameworks_panel(info, installed)  # full width: a Markdown table is as wide as its text

st.header("Datasets here")
ds_rows = []
for entry in ready_first(catalog().values()):
    state = dataset_state(entry)
    ds_rows.append({"dataset": entry.title, "name": entry.name, "task": entry.task,
                    "native px": ", ".join(map(str, entry.native_resolutions)),
                    "state": state.state, "details": state.reason})
st.markdown(markdown_table(ds_rows))
