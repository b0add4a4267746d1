"""Streamlit pieces shared by the pages: the comparison picker, the empty state, the
job progress panel and the framework legend."""
from __future__ import annotations

import functools
import time

import streamlit as st

from . import backend, summary
from .colors import badge, label_of, ordered
from .text import comparison_label, fmt_time, frameworks_of, setting_words

POLL_S = 1.5
PAGES = {"home": "pages/home.py", "run": "pages/run.py", "speed": "pages/speed.py",
         "energy": "pages/energy_memory.py", "accuracy": "pages/accuracy.py", "runs": "pages/runs.py",
         "papers": "pages/papers.py"}


def legend(frameworks) -> None:
    st.markdown(" &nbsp; ".join(badge(f) for f in ordered(frameworks)), unsafe_allow_html=True)


def default_comparison_text(default, runnable: list[str]) -> str:
    """The default comparison in a sentence, read from the spec itself (RunSpec's defaults)."""
    from engines.datasets import get_info
    from engines.runs.spec import compile_text

    info = get_info(default.dataset)
    fws = ", ".join(label_of(f) for f in runnable) or "no framework"
    why = (": each framework's faster setting for a run this short (the Run page's Compile sets one for all)"
           if default.compile is None else "")
    return (f"Trains *{default.architecture}* for {default.epochs} epochs on **{info.title}** "
            f"({default.resolution}×{default.resolution} px) in {fws} with {default.optimizer} at learning rate "
            f"{default.learning_rate:g} (batch {default.train_batch_size}), then times inference at batch sizes "
            f"{', '.join(map(str, default.batch_sizes))}; "
            f"{compile_text(default.compile, {f: default.compiles(f) for f in runnable})}{why}.")


def empty_state(what: str = "results") -> None:
    """What to do when the cache holds nothing yet."""
    st.info(f"No {what} yet: the result cache is empty. Make a comparison first.", icon=":material/info:")
    st.markdown(
        "- **Home** has one button that runs the default comparison (scikit-learn digits, "
        "the small *fan_arch1* CNN, 3 epochs).\n"
        "- **Run** lets you choose the dataset, architecture, frameworks, batch sizes and toggles.\n"
        "- From a terminal: `./lab cli run --dataset digits --arch fan_arch1 --frameworks keras,pytorch,jax`.")
    c1, c2 = st.columns(2)
    c1.page_link(PAGES["home"], label="Home: the one-click default comparison", icon=":material/home:")
    c2.page_link(PAGES["run"], label="Run: choose your own", icon=":material/play_circle:")


def pick_comparison(page: str) -> tuple[dict | None, list[dict]]:
    """The head of every result page: a select box of the cached comparisons (newest
    first), the chosen one's settings, its frameworks' colours and any framework that
    failed. The choice is shared by the result pages (session state) and kept in the URL
    (?comparison=...)."""
    store = backend.store()
    comparisons = store.comparisons()
    if not comparisons:
        empty_state()
        return None, []
    keys = [c["comparison_key"] for c in comparisons]
    wanted = st.query_params.get("comparison") or st.session_state.get("comparison")
    index = keys.index(wanted) if wanted in keys else 0
    by_key = {c["comparison_key"]: c for c in comparisons}
    choice = st.selectbox("Comparison", keys, index=index, key=f"pick_{page}",
                          format_func=lambda k: comparison_label(by_key[k]),
                          help="Every comparison in the result cache, newest first: dataset · size · "
                               "architecture · frameworks · when.")
    st.session_state["comparison"] = choice
    if st.query_params.get("comparison") != choice:
        st.query_params["comparison"] = choice
    # The pages shape frames from schema-1 dicts (their extra fields become columns).
    results = [r.to_dict() for r in store.comparison_results(choice)]
    comparison = by_key[choice]
    spec = comparison.get("spec") or (results[0].get("spec") if results else {}) or {}
    st.caption(_spec_line(spec, comparison, results))
    legend(frameworks_of(results))
    summary_box(results)
    show_failures(results)
    show_mixed_devices(results)
    return comparison, results


def summary_box(results: list[dict]) -> None:
    """Who was most accurate, fastest to train and fastest in inference, by how much and
    whether it is significant (labui.summary), and what to check before trusting it."""
    lines = summary.headline(results)
    if lines:
        with st.container(border=True):
            st.markdown("\n".join(f"- {line}" for line in lines))
    for text in summary.warnings(results):
        st.warning(text, icon=":material/troubleshoot:")


def _spec_line(spec: dict, comparison: dict, results: list[dict]) -> str:
    from engines.runs.spec import compile_text, differences_from_default

    seeds = comparison.get("seeds") or []
    lr = spec.get("learning_rate")
    parts = [f"{spec.get('epochs')} epoch(s)", f"optimizer {spec.get('optimizer')}"
             + (f", learning rate {lr:g}" if isinstance(lr, (int, float)) else ""),
             f"precision {spec.get('precision')}", compile_text(spec.get("compile"), summary.compiled(results)),
             f"pipeline {spec.get('pipeline')}"]
    if spec.get("xla_autotune") is not None:
        parts.append(f"XLA autotune {spec.get('xla_autotune')}")
    if spec.get("recompute_batchnorm") is True:
        parts.append("BatchNorm statistics recomputed over the training split")
    elif spec.get("recompute_batchnorm") is False and not spec.get("inference_only") and _has_batchnorm(spec):
        parts.append("BatchNorm statistics: training's running averages (not recomputed)")
    if spec.get("inference_only"):
        parts.append("inference only")
    changed = setting_words(differences_from_default(spec)) if spec else []
    parts.append("differs from the default comparison in: " + ", ".join(changed) if changed
                 else "the default comparison's settings")
    if len(seeds) > 1:
        parts.append(f"{len(seeds)} repeats (seeds {', '.join(map(str, seeds))}): figures are means")
    return " · ".join(parts)


def _has_batchnorm(spec: dict) -> bool:
    from engines.runs.spec import RunSpec, SpecError

    try:
        return RunSpec.from_dict({k: v for k, v in spec.items() if k != "recompute_batchnorm"}).has_batchnorm()
    except (SpecError, TypeError, ValueError):
        return False


def show_failures(results: list[dict]) -> None:
    for r in results:
        if r.get("status") != "ok":
            seed = (r.get("spec") or {}).get("seed")
            st.warning(f"**{r.get('framework')}** (seed {seed}): {r.get('status')}: "
                       f"{r.get('message') or 'no message'}", icon=":material/warning:")


def show_mixed_devices(results: list[dict], which: str = "") -> None:
    """Every result page says so when the comparison's frameworks computed on different
    kinds of device (engines.devices.mixed), with the reason; `which` names the comparison
    where a page shows two."""
    from engines.devices import mixed

    mix = mixed(results)
    if mix is not None:
        st.error(f"**{which}Not a like-for-like comparison — {mix.reason}**", icon=":material/memory:")


def show_noisy(noisy) -> None:
    """The timings of this comparison taken while other work held the cores (trackers.cpu)."""
    if noisy.empty:
        return
    from engines.settings import noisy_share

    from .colors import label_of

    where = "; ".join(f"{label_of(r['framework'])} {r['phase']}"
                      + (f" (seed {r['seed']})" if noisy["seed"].nunique() > 1 else "")
                      + (f": other work {r['other_cpu_cores']:.1f} cores" if r["other_cpu_cores"] is not None else "")
                      for _, r in noisy.iterrows())
    st.warning(f"**Noisy timings** — other processes held more than {noisy_share():.0%} of this machine's cores "
               f"while these were measured: {where}. Those figures say as much about that work as about the "
               "frameworks; run the comparison again (with **Recompute cached results**) on a quiet machine.",
               icon=":material/speed:")


# -- job progress ---------------------------------------------------------------------------
def current_job() -> str | None:
    """The job this browser follows: from the URL (survives a reload) or the session
    (survives a page change); written back to both. A ?job= value that is not a job id
    (12 hex digits) is dropped from the URL, never shown."""
    from engines.runs.queue import valid_job_id

    wanted = st.query_params.get("job")
    if wanted is not None and not valid_job_id(wanted):
        del st.query_params["job"]
        st.warning("The link's job parameter is not a job id; it was ignored.", icon=":material/link_off:")
        wanted = None
    job = wanted or st.session_state.get("job")
    if job:
        st.session_state["job"] = job
        if st.query_params.get("job") != job:
            st.query_params["job"] = job
    return job


def follow(job_id: str) -> None:
    st.session_state["job"] = job_id
    st.query_params["job"] = job_id
    backend.look_at(job_id)


def submit_all(specs: dict, force: bool = False) -> tuple[dict[str, str], dict[str, str]]:
    """Queue each labelled spec for this session: ({label: job id}, {label: why it was
    refused}). A refusal (a request over the limits, data not here, this session's share of
    the queue taken) is the queue's own sentence, shown as it is."""
    from engines.runs.queue import QueueFull
    from engines.runs.spec import SpecError

    jobs, refused = {}, {}
    for label, spec in specs.items():
        try:
            jobs[label] = backend.submit(spec, force=force)
        except SpecError as e:
            refused[label] = "; ".join(f"{k.replace('_', ' ')}: {v}" for k, v in e.problems.items())
        except QueueFull as e:
            refused[label] = str(e)
    return jobs, refused


def folder_picker(info) -> str | None:
    """The image folders found in the data root and the LAB_DATA_PATH folders, as a list
    to choose from (a folder dataset reads nowhere else); None when there is none."""
    from engines.datasets.folders import find_folders
    from engines.paths import data_root

    found = [str(p) for p in find_folders(info.name, info.class_from)]
    wanted = st.session_state.get("folder_path")
    if wanted and wanted not in found:  # a preset's or an earlier choice: kept, the spec checks it
        found.insert(0, wanted)
    if not found:
        st.caption(f"No image folder found: put one (one sub-folder per class) in {data_root()}, or add its "
                   "parent folder to LAB_DATA_PATH and restart the app.")
        return None
    return st.selectbox("Image folder", found, key="folder_path",
                        help="Folders found in the data root and the LAB_DATA_PATH folders; a folder dataset reads "
                             "nowhere else.")


def forget_job() -> None:
    st.session_state.pop("job", None)
    if "job" in st.query_params:
        del st.query_params["job"]


def job_panel(job_id: str, with_summary: bool = False) -> None:
    """Progress of one job, refreshed every POLL_S seconds while it is queued or
    running (a fragment: only this panel reruns); a full rerun when it ends. With
    `with_summary`, a finished job's results are summed up under it (the home page)."""
    status = backend.job_status(job_id)
    if status is None:
        st.warning("This job is not known to the queue (the cache may have been cleared).")
        st.code(job_id, language=None)
        if st.button("Stop following it", key=f"forget_{job_id}"):
            forget_job()
            st.rerun()
        return
    was_active = status["state"] in backend.ACTIVE

    @st.fragment(run_every=POLL_S if was_active else None)
    def _panel():
        s = backend.job_status(job_id) or status
        role = backend.look_at(job_id) if s["state"] in backend.ACTIVE else None
        render_job(s, can_cancel=role == "owner")
        if role == "watcher":
            st.caption("You are looking at this job (a shared link, or this page after a reload): it shows its "
                       "progress; only the session that queued it can cancel it.")
        if was_active and s["state"] not in backend.ACTIVE:
            st.rerun()  # the whole page: polling stops and the new results appear

    _panel()
    if with_summary and status["state"] not in backend.ACTIVE:
        summary_box([r.to_dict() for r in backend.queue().results(job_id)])


def _task_state(task_state: str) -> str:
    if task_state in ("ok", "cached"):
        return "complete"
    if task_state in ("queued", "running"):  # st.status has no "waiting" state; the label says which
        return "running"
    return "error"


def queue_place(s: dict) -> str:
    """"queued, position 3 (2 jobs ahead)": where a queued job stands (the round robin
    between submitters decides the order)."""
    if s.get("position") is None:
        return "queued"
    ahead = s.get("ahead")
    if ahead is None:
        return f"queued, position {s['position']} in the queue"
    return (f"queued, position {s['position']} in the queue ({ahead} job{'s' if ahead != 1 else ''} ahead"
            f"{', the running one included' if ahead > s['position'] - 1 else ''})")


def render_job(s: dict, can_cancel: bool = False) -> None:
    spec = s.get("spec") or {}
    state = s["state"]
    head = {"queued": queue_place(s), "running": "running", "done": "done", "failed": "finished with failures",
            "cancelled": "cancelled"}.get(state, state)
    st.markdown(f"**Job `{s['id']}`**: {spec.get('dataset')} · {spec.get('resolution') or 'native'} px · "
                f"{spec.get('architecture')} · {', '.join(spec.get('frameworks') or [])} — **{head}**")
    times = [f"submitted {fmt_time(s.get('submitted_at'))}"]
    if s.get("started_at"):
        times.append(f"started {fmt_time(s['started_at'])}")
    if s.get("finished_at"):
        times.append(f"finished {fmt_time(s['finished_at'])}")
    elif s.get("started_at") and isinstance(s["started_at"], (int, float)):
        times.append(f"{time.time() - s['started_at']:.0f} s so far")
    st.caption(" · ".join(times))
    if s.get("message"):
        (st.error if state == "failed" else st.info)(s["message"])
    history = []
    cols = st.columns(max(1, min(4, len(s.get("tasks") or []))))
    for i, task in enumerate(s.get("tasks") or []):
        with cols[i % len(cols)]:
            _task_box(task, state)
        for h in task.get("history") or []:
            history.append({"framework": task["framework"], "seed": task.get("seed", 0), **h})
    if history:
        import pandas as pd

        from . import charts
        from .results import curves_long

        curves = curves_long(pd.DataFrame(history).reindex(
            columns=["framework", "seed", "epoch", "loss", "accuracy", "val_loss", "val_accuracy", "time_s"]))
        if not curves.empty:
            c1, c2 = st.columns(2)
            chart(charts.curves_chart(curves, "loss"), c1)
            chart(charts.curves_chart(curves, "accuracy"), c2)
    if state in backend.ACTIVE:
        if can_cancel and st.button("Cancel this job", key=f"cancel_{s['id']}",
                                    help="Withdraws your request: the job stops (the running framework and the ones "
                                         "still waiting) unless someone else asked for the same comparison."):
            backend.cancel(s["id"])
            st.rerun()
    elif not any(t.get("state") in ("ok", "cached") for t in s.get("tasks") or []):
        st.caption("No framework produced a result, so there is nothing to see on the result pages; "
                   "the messages above say why.")
    else:
        st.markdown("See the results:")
        c = st.columns(4)
        c[0].page_link(PAGES["speed"], label="Speed", icon=":material/speed:")
        c[1].page_link(PAGES["energy"], label="Energy & memory", icon=":material/bolt:")
        c[2].page_link(PAGES["accuracy"], label="Accuracy", icon=":material/target:")
        c[3].page_link(PAGES["runs"], label="Runs", icon=":material/table_view:")


def _task_box(task: dict, job_state: str) -> None:
    t_state = task.get("state", "queued")
    label = f"{task['framework']} · seed {task.get('seed', 0)}: {t_state}"
    # Not used as a context manager: leaving `with st.status(...)` marks it complete.
    box = st.status(label, state=_task_state(t_state), expanded=t_state == "running")
    p = task.get("progress") or {}
    if t_state == "running":
        stage = p.get("stage") or "working"
        epochs, steps = p.get("epochs"), p.get("steps")
        frac = None
        if epochs and p.get("epoch") is not None:
            done_steps = (p.get("step") or 0) / steps if steps else 0
            frac = max(0.0, min(1.0, ((p["epoch"] - 1) + done_steps) / epochs))
        text = stage
        if p.get("epoch") and epochs:
            text += f" · epoch {p['epoch']}/{epochs}"
        if p.get("step") and steps:
            text += f" · step {p['step']}/{steps}"
        if p.get("loss") is not None:
            text += f" · loss {p['loss']:.4f}"
        if frac is not None:
            box.progress(frac, text=text)
        else:
            box.caption(text)
    elif t_state == "cached":
        box.caption("taken from the result cache")
    elif t_state == "ok":
        box.caption("finished")
    elif t_state == "queued":
        box.caption("waiting for its turn" if job_state in backend.ACTIVE else "not run")
    if task.get("message"):
        box.caption(task["message"])


# Text large enough for a projector, on every chart.
READABLE = {"axis": {"labelFontSize": 13, "titleFontSize": 14},
            "legend": {"labelFontSize": 13, "titleFontSize": 14, "symbolSize": 120},
            "title": {"fontSize": 16, "anchor": "start"}}


def chart(c, where=None) -> None:
    """Draw an Altair chart of labui.charts as wide as its column (`where`: a column or
    other container, else the page), with READABLE text.

    Two things Altair does on every draw are left out, for the page's time: its check of
    the whole Vega-Lite spec against the JSON schema (two thirds of a chart's conversion,
    30-60 ms a chart on a 2-core machine; the tests run it on every chart the pages draw:
    tests/test_app_pages.py), and the copies of the chart that `configure_*` makes (one
    per call; a layered chart recombines its layers' parameters on each). The chart is a
    new one per draw, so it is changed in place."""
    c.config = {key: dict(value) for key, value in READABLE.items()}
    # Streamlit converts the chart with chart.to_dict(); this instance's does not validate.
    object.__setattr__(c, "to_dict", functools.partial(type(c).to_dict, c, validate=False))
    (where or st).altair_chart(c, width="stretch")


# -- repeats and statistics --------------------------------------------------------------------
def statistics_section(results: list[dict], page: str, metrics: list[str], headline: str) -> None:
    """"Repeats & statistics": with 2 or more seeds per framework, the summary table
    (mean, std, min, max, 95% CI) of ``metrics``, a strip plot of one chosen metric and
    Welch's t-test between every pair of frameworks with its sentence; otherwise a line
    saying that no test is possible. ``headline`` is the metric chosen first."""
    from . import charts
    from . import repeats as RP
    from .results import display, fmt

    st.header("Repeats & statistics")
    counts = RP.seeds_per_framework(results)
    count_text = ", ".join(f"{fw} {n}" for fw, n in counts.items())
    if not RP.testable(results):
        st.info(f"Repeats per framework: {count_text}. With fewer than 2 repeats per framework no test is "
                "possible: there is no spread to compare a difference with. Set **Repeats** to 2 or more on "
                "the Run page (each repeat uses the next seed, the same one in every framework).",
                icon=":material/info:")
        return
    metrics = RP.available(results, metrics)
    if not metrics:
        st.info("No figure of this page was measured in these repeats.")
        return
    st.caption(f"Repeats per framework (ok runs): {count_text}. Mean, sample standard deviation (n − 1), "
               "min, max and a 95% confidence interval: for times, throughputs, memory, energy and losses, which "
               "cannot be negative, a t interval on the logarithm of the values (around their geometric mean, "
               "never below zero, however few the repeats); for accuracy, AUC and F1 the t interval of the mean "
               "cut to [0, 1]. Frameworks are compared with Welch's t-test (unequal variances) and Hedges' g as "
               "the effect size.")
    summary = RP.summary_frame(results, metrics)
    def num(v, missing="not measured"):
        if v is None or v != v:
            return missing
        return fmt(v, ",.0f") if abs(v) >= 1000 else fmt(v, ".4g")

    nums = {c: num for c in ("mean", "min", "max")}
    nums |= {c: (lambda v: num(v, "needs ≥ 2 repeats")) for c in ("std", "ci95_low", "ci95_high")}
    st.dataframe(display(summary, nums), hide_index=True, width="stretch",
                 column_config={"ci95_low": "95% CI low", "ci95_high": "95% CI high"}, key=f"stats_summary_{page}")

    choice = st.selectbox("Metric for the plot and the tests", metrics, key=f"stats_metric_{page}",
                          index=metrics.index(headline) if headline in metrics else 0,
                          format_func=RP.axis_title, help="The strip plot and Welch's tests below use this figure.")
    c1, c2 = st.columns([1, 1.3])
    with c1:
        chart(charts.repeats_chart(RP.values_frame(results, choice), RP.ci_frame(results, choice),
                                   RP.axis_title(choice), f"{RP.label(choice).capitalize()} over the repeats",
                                   log=RP.positive(results, choice)))
        st.caption("One dot per repeat (seed); the tick is the mean and the bar the 95% interval: "
                   f"{RP.interval_method(choice)}.")
    with c2:
        st.markdown(f"**Welch's t-test on {RP.label(choice)}**")
        found = RP.tests(results, choice)
        for r in found:
            st.markdown(f"- {r['sentence']}")
        for a, b in RP.identical_pairs(results, choice):
            st.info(f"{a} and {b} gave exactly the same {RP.label(choice)} seed by seed (the same seed gives "
                    "both the same initial weights and data order): a test of the means has nothing to find.",
                    icon=":material/info:")
        table = RP.tests_frame(results, [choice]).drop(columns=["metric", "unit", "sentence", "n A", "n B"])
        st.dataframe(display(table, {"mean A": ",.4g", "mean B": ",.4g", "ratio A/B": lambda v: fmt(v, ".3f", "×"),
                                     "t": ",.3f", "df": ".1f", "p": RP.fmt_p,
                                     "effect size (Hedges' g)": ",.2f"}),
                     hide_index=True, width="stretch", key=f"stats_tests_{page}")
        st.caption("p < 0.05 is called significant. Hedges' g: the difference of the means in pooled standard "
                   "deviations (|g| ≈ 0.2 small, 0.5 medium, 0.8 large). Where both sides are the same in every "
                   "repeat, the difference is exact and no t statistic is computed.")


# -- paper presets on the Run page ------------------------------------------------------------
def fill_form_from_preset(name: str, reduced: bool, label: str) -> None:
    """A button callback (it runs before the widgets are made): put one spec of a preset
    into the Run page's form widgets, through session state."""
    from engines.analysis.presets import get_preset
    from engines.frameworks import FRAMEWORKS, installed

    from .papers import form_state

    preset = get_preset(name)
    specs = dict(preset.labelled_specs(reduced))
    spec = specs.get(label) or next(iter(specs.values()))
    state, extra, warnings = form_state(spec.to_dict(), {fw for fw in FRAMEWORKS if installed(fw)})
    for key, value in state.items():
        st.session_state[key] = value
    st.session_state["preset_extra_options"] = {"dataset": spec.dataset, "options": extra} if extra else None
    st.session_state["preset_loaded"] = {"name": name, "title": preset.title, "label": label, "reduced": reduced,
                                         "warnings": warnings}


def pretrained_choice(architecture: str, container=st) -> str | None:
    """The Run page's choice of pretrained weights for architectures torchvision publishes
    weights for: none (the seed's draw), torchvision's file, or a weights file found in
    the data folders. None where the architecture has no pretrained weights."""
    from engines import pretrained
    from models.pretrained import TORCHVISION

    published = TORCHVISION.get(architecture)
    if published is None:
        return None
    options = {None: "none: weights drawn from the seed",
               pretrained.TORCHVISION: f"torchvision's {published.tag} ({published.filename}, downloaded once)"}
    options.update({name: f"file {name}" for name in pretrained.local_files()})
    return container.selectbox(
        "Pretrained weights", list(options), format_func=options.get, key="pretrained",
        help="Every framework starts from the same pretrained weights, with a new classifier for the dataset's "
             "classes drawn from the seed; files are looked for in the data folders (.pth, .safetensors).")

