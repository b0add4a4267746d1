"""Papers: for each of the five papers the lab grew from, our figures beside the paper's."""
import pandas as pd
import streamlit as st

from engines.analysis.presets import list_presets, match_results
from labui import backend, papers, widgets
from labui import repeats as RP
from labui.backend import ensure_app_navigation
from labui.text import fmt

ensure_app_navigation()

st.title("Papers: ours beside theirs")
st.caption("Each preset is one paper's experiment. Its figures, as printed (with the table or figure they come "
           "from), stand beside the lab's means over the matching runs in the result cache, converted into the "
           "paper's unit. The hardware differs, so compare ratios between frameworks rather than raw times.")

def _height(df: pd.DataFrame):
    """Whole tables up to 30 rows; longer ones scroll."""
    return "content" if len(df) <= 30 else 600


presets = {p.name: p for p in list_presets()}
names = list(presets)
wanted = st.query_params.get("preset") or st.session_state.get("papers_preset_choice")
name = st.selectbox("Paper", names, index=names.index(wanted) if wanted in names else 0, key="papers_preset",
                    format_func=lambda n: presets[n].title, help="The five presets of presets/*.yaml.")
st.session_state["papers_preset_choice"] = name
if st.query_params.get("preset") != name:
    st.query_params["preset"] = name
preset = presets[name]

store = backend.store()
# Matched on the index; only the results of this preset's specs are read in full.
candidates = match_results(preset, store.runs())
all_results = [r.to_dict() for r in store.results(r["key"] for rows in candidates.values() for r in rows)]

# -- the paper --------------------------------------------------------------------------------
paper = preset.paper
st.markdown(f"### {paper['title']}\n{paper.get('authors', '')}")
if preset.summary:
    st.markdown(preset.summary)
st.caption(f"Text of the paper: `{paper['file']}` · preset file: `presets/{preset.name}.yaml`")

kinds = papers.kinds_present(preset, all_results)
if len(kinds) > 1:
    kind = st.radio("Our runs", kinds, key=f"papers_kind_{name}", horizontal=True,
                    format_func=lambda k: papers.RUN_KINDS[k],
                    help="The store holds runs of this preset at more than one size; the table uses one kind.")
else:
    kind = kinds[0] if kinds else None
ours = papers.results_of_kind(preset, all_results, kind)
widgets.show_mixed_devices(ours)

h1, h2 = st.columns(2)
with h1:
    st.markdown("**The paper's hardware**")
    st.markdown(preset.hardware)
with h2:
    st.markdown("**Ours**")
    hw = papers.our_hardware(ours)
    if hw:
        st.markdown(f"{hw} — {papers.RUN_KINDS[kind]}")
        if kind == "reduced":
            st.caption(f"Reduced: {preset.reduced_description}")
    else:
        st.markdown("no run of this preset yet")

# -- datasets and specs -----------------------------------------------------------------------
st.header("Specs and data on this machine")
full_specs = papers.spec_frame(preset, all_results, reduced=False)
reduced_specs = papers.spec_frame(preset, all_results, reduced=True)
missing = papers.missing_data(full_specs) + [m for m in papers.missing_data(reduced_specs)
                                              if m not in papers.missing_data(full_specs)]
for ds, state, why in missing:
    (st.info if state == "needs download" else st.warning)(
        f"**{ds}** — {state}: {why}. The preset still loads; its runs need the data first.",
        icon=":material/download:" if state == "needs download" else ":material/folder_off:")
show_reduced = st.toggle("Show the CPU-reduced specs", key=f"papers_show_reduced_{name}", value=kind == "reduced",
                         help=preset.reduced_description)
table = reduced_specs if show_reduced else full_specs
st.dataframe(table.drop(columns=["why"]), hide_index=True, width="stretch", key="papers_specs",
             height=_height(table))
if show_reduced:
    st.caption(f"Reduced for a CPU: {preset.reduced_description}")


def _load_on_run_page():
    st.session_state["preset_name"] = name
    st.session_state["preset_reduced"] = bool(show_reduced)


if st.button("Open this preset on the Run page", key="papers_to_run", on_click=_load_on_run_page,
             icon=":material/play_circle:", help="The Run page's preset panel, with this paper chosen: pick the "
                                                 "specs to queue there."):
    st.switch_page("pages/run.py")

# -- side by side -----------------------------------------------------------------------------
st.header("Ours beside the paper's")
long = papers.side_by_side_frame(preset, ours)
spec_labels = list(dict.fromkeys(long["spec"]))
with_ours = [s for s in spec_labels if (long[long["spec"] == s]["ours_value"].notna()).any()]
if len(spec_labels) > 1:
    options = ["all"] + spec_labels
    default = options.index(with_ours[0]) if len(with_ours) == 1 else 0
    pick = st.selectbox("Spec", options, index=default, key=f"papers_spec_{name}",
                        format_func=lambda s: "all specs" if s == "all" else
                        (f"{s} (our figures)" if s in with_ours else s),
                        help="Specs marked 'our figures' have matching runs in the result cache.")
    shown = long if pick == "all" else long[long["spec"] == pick]
else:
    shown = long
if not ours:
    st.info("No run of this preset in the result cache yet: the **ours** columns say *no run yet*. Queue it "
            "with **Open this preset on the Run page** above (full size, or reduced for a CPU).",
            icon=":material/info:")
for f in papers.failures(preset, ours):
    st.warning(f"**{f['spec']}**, {f['framework']} (seed {f['seed']}): {f['status']}: {f['message']}",
               icon=":material/warning:")
wide = papers.wide_frame(shown)
if len(spec_labels) <= 1 or (len(shown["spec"].unique()) == 1):
    wide = wide.drop(columns=["spec"])
st.dataframe(wide, hide_index=True, width="stretch", key="papers_side_by_side", height=_height(wide))
st.caption("**ours**: the mean (or sample variance, where the paper gives a variance) over our matching runs, in "
           "the paper's unit. *no run yet*: nothing in the cache matches this spec; *run failed*: it ran and "
           "failed (the message is above); *not measured by the lab*: "
           "a figure the lab does not record (never shown as 0); *needs ≥ 2 repeats*: a variance needs two runs.")

with st.expander("Every figure, with ours ÷ paper, our repeats and the notes"):
    detail = shown.drop(columns=["ours_value", "paper_value", "metric_path"])
    st.dataframe(detail.assign(**{"ours ÷ paper": [fmt(v, ".3f") if pd.notna(v) else "—"
                                                   for v in detail["ours ÷ paper"]]}),
                 hide_index=True, width="stretch", key="papers_detail")

tests = papers.tests_frame(preset, ours)
if not tests.empty:
    st.header("The paper's t statistics beside our Welch's test")
    st.dataframe(tests.assign(**{"our t": [fmt(v, ",.2f") if pd.notna(v) else "—" for v in tests["our t"]],
                                 "our p": [RP.fmt_p(v) for v in tests["our p"]]}),
                 hide_index=True, width="stretch", key="papers_tests", height=_height(tests),
                 column_config={"ours": st.column_config.TextColumn("ours (Welch's test)", width="large")})
    st.caption("The paper's t is as printed. Ours is Welch's t over our repeats; where both sides have no "
               "variance, the difference is exact and no t is computed (the paper divided by that zero).")

st.header("Notes on this comparison")
for note in preset.notes:
    st.markdown(f"- {note}")
