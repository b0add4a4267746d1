"""Home page of the framework comparison lab. UI only: no framework is imported here."""
import pandas as pd
import streamlit as st

from engines.datasets import catalog, dataset_state
from engines.environment import FRAMEWORKS, GPU_INSTALL_HINTS, framework_installed, machine_info

st.set_page_config(page_title="Framework comparison lab", page_icon="⚖️", layout="wide")

st.title("Framework comparison lab")
st.markdown(
    "The same image classifier, trained, evaluated and timed in **TensorFlow/Keras**, **PyTorch** "
    "and **JAX/Flax**, side by side: one architecture definition built three ways, the same data "
    "order and hyper-parameters, and timings synchronized with the device."
)


@st.cache_data(ttl=60, show_spinner=False)
def _machine():
    return machine_info().to_dict()


info = _machine()
st.header("This machine")
left, right = st.columns(2)
with left:
    if info["gpus"]:
        for gpu in info["gpus"]:
            st.metric(f"GPU {gpu['index']}", gpu["name"], f"{gpu['memory_bytes'] / 2**30:.0f} GiB", delta_color="off")
        st.caption(f"NVIDIA driver {info['driver']}, CUDA driver API {info['cuda_driver']}")
    else:
        st.metric("GPU", "none")
        st.caption(f"No GPU found ({info['nvml_error']}): everything runs on the CPU, and energy is not measured.")
    st.caption(f"CPU: {info['cpu']}, {info['cores']} cores · Python {info['python']}")
with right:
    rows = []
    for fw, (_, dists, install) in FRAMEWORKS.items():
        ok = framework_installed(fw)
        rows.append({
            "framework": fw,
            "installed": "yes" if ok else "no",
            "versions": ", ".join(f"{d} {info['versions'].get(d) or '—'}" for d in dists),
            "to install": "" if ok else install,
        })
    st.dataframe(pd.DataFrame(rows), hide_index=True, width="stretch")
    if info["gpus"]:
        st.caption("GPU builds: " + "; ".join(f"{fw}: `{cmd}`" for fw, cmd in GPU_INSTALL_HINTS.items()))

st.header("Datasets here")
ds_rows = []
for entry in catalog().values():
    state = dataset_state(entry)
    ds_rows.append({"dataset": entry.title, "name": entry.name, "task": entry.task,
                    "native px": ", ".join(map(str, entry.native_resolutions)),
                    "state": state.state, "details": state.reason})
st.dataframe(pd.DataFrame(ds_rows), hide_index=True, width="stretch")
