"""Reference figures beside the user's own: the GPU acceptance runs under reference/.

A class without a GPU still sees what one does: when a file from
benchmarks/gpu_acceptance.py is committed under reference/ (engines.analysis.reference:
its format, and why a smoke run never counts), the Speed and the Energy & memory pages
show its figures, labelled with the GPU and the date. For the comparison's own
architecture they stand beside the user's figures at the same batch sizes; otherwise, for
scale, the reference's models at its largest batch size. No framework is imported.
"""
from __future__ import annotations

import pandas as pd
import streamlit as st

from engines.analysis import reference as ref
from engines.frameworks import label as framework_label

from . import results as R
from .text import is_number, num

COLUMNS = ["reference", "framework", "architecture", "resolution", "variant", "batch_size", "images_per_s",
           "energy_j_per_1000_images", "allocator_peak_bytes", "nvml_process_memory_bytes"]


def frame(docs: list[dict]) -> pd.DataFrame:
    """Every measured row of every reference document, labelled "GPU, date"."""
    rows = []
    for doc in docs:
        name = ref.label(doc)
        resolution = (doc.get("plan") or {}).get("resolution")
        for r in doc["rows"]:
            if r.get("status") == "ok" and is_number(r.get("images_per_s")):
                rows.append({"reference": name, "framework": r.get("framework"), "architecture": r.get("architecture"),
                             "resolution": resolution, "variant": r.get("variant"), "batch_size": r.get("batch_size"),
                             **{k: num(r.get(k)) for k in COLUMNS[6:]}})
    return pd.DataFrame(rows, columns=COLUMNS)


def beside(table: pd.DataFrame, architecture: str | None, yours: pd.DataFrame, value: str) -> tuple[pd.DataFrame, bool]:
    """(rows to show, whether they are the comparison's own architecture). Same
    architecture: each reference row with the user's `value` for that framework and batch
    size beside it ("yours"); otherwise the reference's largest batch size, every model."""
    same = table[table["architecture"] == architecture]
    if not same.empty:
        mine = {(r["framework"], r["batch_size"]): r.get(value) for _, r in yours.iterrows()} if not yours.empty else {}
        same = same.assign(yours=[mine.get((fw, bs)) for fw, bs in zip(same["framework"], same["batch_size"])])
        return same, True
    if table.empty:
        return table, False
    largest = table["batch_size"].max()
    return table[table["batch_size"] == largest], False


def show(results: list[dict], yours: pd.DataFrame, value: str, columns: dict[str, str | callable],
         what: str, folder=None) -> None:
    """The page's reference section, when reference/ holds a GPU's acceptance run.
    `value`: the figure (a column of `yours`, the user's per framework x batch size
    summary) to show beside the reference's first column; `columns`: the reference
    columns to show, with their formats."""
    docs, problems = ref.load(ref.REFERENCE_DIR if folder is None else folder)
    for p in problems:
        st.caption(f"reference/ holds a file that is not a reference: {p}")
    if not docs:
        return
    table = frame(docs)
    spec = results[0].get("spec") if results else {}
    architecture = (spec or {}).get("architecture")
    shown, same = beside(table, architecture, yours, value)
    st.header("Reference: what a GPU does")
    labels = ", ".join(dict.fromkeys(shown["reference"])) or ", ".join(ref.label(d) for d in docs)
    if same:
        st.caption(f"{what} for **{architecture}** measured by the lab's GPU acceptance run on **{labels}** "
                   "(benchmarks/gpu_acceptance.py, its own input size), beside yours at the same batch size.")
    else:
        st.caption(f"No reference for {architecture or 'this architecture'}; for scale, {what.lower()} of the "
                   f"acceptance run's models on **{labels}** at batch {int(shown['batch_size'].max())} "
                   "(benchmarks/gpu_acceptance.py).")
    shown = shown.assign(framework=[framework_label(f) for f in shown["framework"]])
    keep = ["reference", "framework", "architecture", "resolution", "variant", "batch_size", *columns]
    formats = dict(columns)
    if same:
        keep.append("yours")
        formats["yours"] = next(iter(columns.values()))
    st.dataframe(R.display(shown[keep], formats), hide_index=True, width="stretch")
