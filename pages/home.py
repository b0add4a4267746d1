"""Home: what the lab compares and how, this machine, and the one-click default comparison."""
import pandas as pd
import streamlit as st

from engines.datasets import OFFLINE_DEFAULT, catalog, dataset_state
from engines.frameworks import FRAMEWORKS, default_frameworks
from engines.frameworks import installed as framework_installed
from engines.machine import machine_info
from labui import widgets
from labui.backend import ensure_app_navigation

ensure_app_navigation()

st.title("Framework comparison lab")
st.markdown(
    "The same image classifier, trained, evaluated and timed in **TensorFlow/Keras**, **PyTorch** "
    "and **JAX/Flax**, side by side: one architecture definition built three ways, the same data "
    "order, initial weights and hyper-parameters, and timings synchronized with the device."
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

# -- the one-click default comparison ------------------------------------------------------
st.header("Try it: the default comparison")
runnable = [fw for fw in default_frameworks() if installed[fw]]
st.markdown(
    f"Trains the small *fan_arch1* CNN for three epochs on **scikit-learn digits** (8×8 px, offline, "
    f"always available) in {', '.join(FRAMEWORKS[f].label for f in runnable) or 'no framework'}, "
    "then times inference at batch sizes 1, 32 and 128. Each framework starts in its own process and "
    "compiles its model first: a minute or two on a GPU workstation, several minutes on a small CPU "
    "machine; seconds once cached.")
job = widgets.current_job()
reason = None
if not runnable:
    reason = "No framework is installed here: see the install commands below."
if st.button("Run the default comparison", type="primary", disabled=reason is not None, help=reason,
             key="default_run"):
    from engines.runs.spec import RunSpec

    # Three epochs: enough for the curves to be lines; digits is small, so it costs seconds.
    spec = RunSpec(dataset=OFFLINE_DEFAULT, frameworks=tuple(runnable), epochs=3)
    jobs, refused = widgets.submit_all({"default": spec})
    if jobs:
        widgets.follow(jobs["default"])
        st.rerun()
    st.error(f"Not queued: {refused['default']}", icon=":material/block:")
if reason:
    st.caption(reason)
if job:
    widgets.job_panel(job)

# -- this machine ----------------------------------------------------------------------------
st.header("This machine")
left, right = st.columns(2)
with left:
    if info["gpus"]:
        for gpu in info["gpus"]:
            st.metric(f"GPU {gpu['index']}", gpu["name"], f"{gpu['memory_bytes'] / 2**30:.0f} GiB",
                      delta_color="off")
        st.caption(f"NVIDIA driver {info['driver']}, CUDA driver API {info['cuda_driver']}")
    else:
        st.metric("GPU", "none")
        st.caption(f"No GPU found ({info['nvml_error']}): everything runs on the CPU, and energy is not measured.")
    st.caption(f"CPU: {info['cpu']}, {info['cores']} cores · Python {info['python']} · "
               f"Streamlit {info['versions'].get('streamlit')}")
with right:
    rows = []
    for fw, f in FRAMEWORKS.items():
        rows.append({
            "framework": fw,
            "installed": "yes" if installed[fw] else "no",
            "versions": ", ".join(f"{d} {info['versions'].get(d) or '—'}" for d in f.distributions),
            "to install": "" if installed[fw] else f.install_hint,
        })
    st.dataframe(pd.DataFrame(rows), hide_index=True, width="stretch")
    missing = [fw for fw in FRAMEWORKS if not installed[fw]]
    if missing:
        st.caption("Missing: " + "; ".join(f"{fw}: `{FRAMEWORKS[fw].install_hint}`" for fw in missing))
    gpu_builds: dict[str, list[str]] = {}  # one command may serve several frameworks (Keras and TensorFlow)
    for fw, f in FRAMEWORKS.items():
        if f.gpu_install_hint:
            gpu_builds.setdefault(f.gpu_install_hint, []).append(fw)
    if info["gpus"] and gpu_builds:
        st.caption("GPU builds: " + "; ".join(f"{', '.join(fws)}: `{cmd}`" for cmd, fws in gpu_builds.items()))

st.header("Datasets here")
ds_rows = []
for entry in catalog().values():
    state = dataset_state(entry)
    ds_rows.append({"dataset": entry.title, "name": entry.name, "task": entry.task,
                    "native px": ", ".join(map(str, entry.native_resolutions)),
                    "state": state.state, "details": state.reason})
st.dataframe(pd.DataFrame(ds_rows), hide_index=True, width="stretch")
