"""Runs: every cached run, filters, two comparisons side by side, delete, export, environment."""
import pandas as pd
import streamlit as st

from engines import settings
from labui import backend, widgets
from labui import results as R
from labui.backend import ensure_app_navigation
from labui.text import comparison_label, fmt_time, frameworks_of

ensure_app_navigation()

st.title("Runs")
store = backend.store()
index_rows = store.runs()  # the index only: no result file is read for the list
if not index_rows:
    widgets.empty_state("runs")
    st.stop()

runs = R.runs_frame(index_rows)
by_key = {r["key"]: r for r in index_rows}

# -- filters -------------------------------------------------------------------------------
f1, f2, f3, f4, f5 = st.columns(5)


def _pick(col, label, column, key):
    values = sorted(runs[column].dropna().astype(str).unique())
    return col.multiselect(label, values, key=key, placeholder="all", help=f"Show only these {label.lower()}.")
datasets = _pick(f1, "Datasets", "dataset", "f_dataset")
archs = _pick(f2, "Architectures", "architecture", "f_arch")
fws = _pick(f3, "Frameworks", "framework", "f_fw")
statuses = _pick(f4, "Statuses", "status", "f_status")
machines = _pick(f5, "Machines", "host", "f_host")  # where each ran: this machine, a Ray cluster's nodes
shown = runs
for column, chosen in (("dataset", datasets), ("architecture", archs), ("framework", fws), ("status", statuses),
                       ("host", machines)):
    if chosen:
        shown = shown[shown[column].astype(str).isin(chosen)]
st.caption(f"{len(shown)} of {len(runs)} runs (one per framework and seed).")
st.dataframe(
    shown.drop(columns=["key"]), hide_index=True, width="stretch",
    column_config={
        "accuracy": st.column_config.NumberColumn("accuracy", format="%.4f"),
        "auc": st.column_config.NumberColumn("AUC", format="%.4f"),
        "train_time_s": st.column_config.NumberColumn("training (s)", format="%.2f"),
        "best_throughput_images_per_s": st.column_config.NumberColumn("best images/s", format="%.0f"),
        "parameters": st.column_config.NumberColumn("parameters", format="localized"),
        "flops_per_image": st.column_config.NumberColumn("FLOPs/image", format="compact"),
        "comparison": st.column_config.TextColumn("comparison", width="small"),
        "host": st.column_config.TextColumn("machine", help="The host the run's worker ran on (a Ray node, say)."),
        "gpu_index": st.column_config.NumberColumn("GPU", help="Which of the machine's GPUs (NVML's index)."),
    })

shown_keys = [k for k in shown["key"] if k in by_key]


def _shown_results() -> list[dict]:
    """Read when a download is asked for, not on every run of the page."""
    return [r.to_dict() for r in store.results(shown_keys)]


e1, e2 = st.columns(2)
e1.download_button("Export these runs as CSV", lambda: R.export_csv(_shown_results()), file_name="lab-runs.csv",
                   mime="text/csv", key="export_csv", disabled=not shown_keys,
                   help="One line per run and inference batch size; nested figures as JSON text.")
e2.download_button("Export these runs as JSON", lambda: R.export_json(_shown_results()), file_name="lab-runs.json",
                   mime="application/json", key="export_json", disabled=not shown_keys,
                   help="The RunResults as stored (schema 1), for scripts.")

# -- compare two ---------------------------------------------------------------------------
comparisons = store.comparisons()
labels = {c["comparison_key"]: comparison_label(c) for c in comparisons}
st.header("Compare two comparisons")
if len(comparisons) < 2:
    st.info("Two comparisons are needed; the cache holds one. Run another (e.g. another precision or "
            "resolution) on the Run page.")
else:
    keys = list(labels)
    a_col, b_col = st.columns(2)
    a = a_col.selectbox("A", keys, index=0, format_func=labels.get, key="cmp_a")
    b = b_col.selectbox("B", keys, index=1, format_func=labels.get, key="cmp_b")
    if a == b:
        st.warning("Choose two different comparisons.")
    else:
        rows = []
        for side, ck in (("A", a), ("B", b)):
            res = [r.to_dict() for r in store.comparison_results(ck)]
            widgets.show_mixed_devices(res, f"Comparison {side}: ")
            met = R.metrics_frame(res).set_index("framework") if res else pd.DataFrame()
            inf = R.inference_summary(res)
            tr = R.train_summary(res).set_index("framework") if res else pd.DataFrame()
            for fw in frameworks_of(res):
                best = inf[(inf["framework"] == fw)]["throughput_images_per_s"].max() if not inf.empty else None
                rows.append({"framework": fw, "side": side,
                             "accuracy": met["accuracy"].get(fw) if "accuracy" in met else None,
                             "best images/s": best,
                             "epoch time s": tr["epoch_time_s"].get(fw) if "epoch_time_s" in tr else None,
                             "compile s": tr["compile_time_s"].get(fw) if "compile_time_s" in tr else None})
        table = pd.DataFrame(rows)
        wide = table.pivot_table(index="framework", columns="side", aggfunc="first", dropna=False)
        wide.columns = [f"{m} ({s})" for m, s in wide.columns]
        for m in ("accuracy", "best images/s", "epoch time s", "compile s"):
            if f"{m} (A)" in wide and f"{m} (B)" in wide:
                wide[f"{m} B÷A"] = wide[f"{m} (B)"] / wide[f"{m} (A)"]
        wide = wide.reset_index()
        st.dataframe(R.display(wide, {c: ",.4g" for c in wide.columns if c != "framework"}),
                     hide_index=True, width="stretch")
        st.caption("B÷A above 1 means B is higher: better for accuracy and images/s, slower for times.")

# -- environment ----------------------------------------------------------------------------
st.header("A run's environment")


def _run_label(k):
    r = by_key[k]
    return (f"{r['framework']} · seed {r['seed']} · {r['dataset']} · {r['resolution']} px · "
            f"{r['architecture']} · {r['status']} · {fmt_time(r['created_at'])}")


run_key = st.selectbox("Run", list(shown["key"]), key="env_run", format_func=_run_label,
                       help="One framework's run (one seed) among those the filters show.")
chosen_run = store.get(run_key) if run_key else None
if chosen_run is not None:
    r = chosen_run.to_dict()
    st.dataframe(R.environment_rows(r), hide_index=True, width="stretch")
    spec_col, msg_col = st.columns(2)
    with spec_col.expander("Its spec"):
        st.json(r.get("spec") or {})
    if r.get("message"):
        msg_col.warning(f"{r.get('status')}: {r['message']}")

# -- delete ---------------------------------------------------------------------------------
st.header("Delete")
if not settings.allow_delete():
    st.caption("Deleting results is switched off on this machine (LAB_ALLOW_DELETE=0).")
    st.stop()
d1, d2 = st.columns([3, 1])
victim = d1.selectbox("Comparison to delete", list(labels), format_func=labels.get, key="del_cmp",
                      help="Removes the comparison and its results, except a result that another comparison also "
                              "holds (the same job asked for by another request).")
sure = d2.checkbox("Yes, delete it", key="del_sure", help="Asked again before every delete.")


def _delete(comparison_key: str) -> None:
    """Runs before the next run of the page: the box is unticked again, so the next delete
    asks again (a widget's value can be reset only from its callback)."""
    n = store.delete_comparison(comparison_key)
    st.session_state["del_sure"] = False
    st.session_state.pop("comparison", None)
    st.session_state["_deleted"] = n


if st.button("Delete this comparison", disabled=not sure, key="del_btn", on_click=_delete, args=(victim,),
             help="Tick the box first; the trained weights stay in the cache, so running it again reuses them."):
    st.toast(f"Deleted the comparison and {st.session_state.pop('_deleted', 0)} results (a result another "
             "comparison holds stays).")
