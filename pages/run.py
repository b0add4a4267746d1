"""Run: choose a comparison, queue it, and watch it run."""
import pandas as pd
import streamlit as st

import models
from engines.analysis.presets import list_presets
from engines.datasets import catalog, dataset_state
from engines.datasets.synthetic import DEFAULT_OPTIONS as SYNTHETIC_DEFAULTS
from engines.frameworks import FRAMEWORKS, default_frameworks, installed, owners
from engines.runs.spec import DATASET_OPTIONS, MAX_BATCH, RunSpec, SpecError
from engines.training.config import OPTIMIZERS, PIPELINES, PRECISIONS, SCHEDULES, XLA_AUTOTUNE_LEVELS
from labui import backend, papers, widgets
from labui.backend import ensure_app_navigation
from labui.results import fmt_time

ensure_app_navigation()

COMMON_SIZES = (8, 16, 28, 32, 64, 96, 128, 224)
BATCH_CHOICES = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048)

st.title("Run a comparison")
st.caption("Choose what to compare; the job joins the queue (one job at a time on this machine) and its "
           "progress shows below, also after you switch pages or reload.")

problems: dict[str, str] = {}
entries = catalog()

# -- a paper's experiment ------------------------------------------------------------------
presets = {p.name: p for p in list_presets()}
loaded = st.session_state.get("preset_loaded")
with st.expander("Start from a paper's experiment (preset)",
                 expanded=bool(loaded or st.session_state.get("preset_jobs")), icon=":material/article:"):
    pc1, pc2 = st.columns([3, 1])
    preset_name = pc1.selectbox("Preset", list(presets), key="preset_name", format_func=lambda n: presets[n].title,
                                help="The five papers the lab grew from: their settings, and their figures to "
                                     "compare with on the Papers page.")
    preset_reduced = pc2.toggle("Reduced for a CPU", key="preset_reduced",
                                help="Fewer epochs and repeats (and smaller images or data where the preset says "
                                     "so), to finish on a CPU in minutes. Results are matched to the paper either way.")
    preset = presets[preset_name]
    st.markdown(f"**{preset.paper['title']}** — {preset.paper.get('authors', '')}  \n{preset.summary}")
    st.caption(f"The paper's hardware: {preset.hardware}.")
    if preset_reduced:
        st.info(f"**Reduced for a CPU:** {preset.reduced_description}", icon=":material/memory:")
    # The index's rows carry what the matching and the counts read (spec, framework, status).
    spec_table = papers.spec_frame(preset, backend.store().runs(), preset_reduced)
    st.dataframe(spec_table.drop(columns=["why"]), hide_index=True, width="stretch", key="preset_spec_table")
    for ds, st_text, why in papers.missing_data(spec_table):
        st.caption(f"`{ds}`: {st_text} — {why}.")
    labels = list(spec_table["spec"])
    usable = [label for label, s in zip(labels, spec_table["data here"])
              if s not in ("needs a local folder", "unsupported")]
    suffix = f"{preset_name}_{int(preset_reduced)}"
    chosen = st.multiselect("Specs to queue", labels, default=usable, key=f"preset_specs_{suffix}",
                            help="Each spec is one comparison (every framework, every repeat). Specs whose data "
                                 "needs a local folder are left out until the folder is there.")
    qc1, qc2, qc3 = st.columns([1.3, 1.6, 1.2], vertical_alignment="bottom")
    form_label = qc2.selectbox("Spec for the form below", labels, key=f"preset_form_spec_{suffix}",
                               help="Which spec the form below is filled with, to look at or change before queueing.")
    qc3.button("Fill the form with it", key="preset_load", on_click=widgets.fill_form_from_preset,
               args=(preset_name, preset_reduced, form_label),
               help="Puts this spec's settings into the form below, to look at or change before queueing.")
    if qc1.button(f"Queue {len(chosen)} spec{'s' if len(chosen) != 1 else ''}", type="primary", key="preset_submit",
                  disabled=not chosen,
                  help="Queues each chosen spec as it is in the preset (identical requests share one job)."):
        specs = dict(preset.labelled_specs(preset_reduced))
        jobs, refused = widgets.submit_all({label: specs[label] for label in chosen})
        if jobs:
            st.session_state["preset_jobs"] = {"preset": preset_name, "jobs": jobs}
            widgets.follow(next(iter(jobs.values())))
        if not refused:
            st.rerun()
        for label, why in refused.items():
            st.error(f"**{label}** was not queued: {why}", icon=":material/block:")
    queued = st.session_state.get("preset_jobs")
    if queued:
        st.success(f"Queued from {queued['preset']}: "
                   + "; ".join(f"{label} → job `{j}`" for label, j in queued["jobs"].items())
                   + ". Their figures beside the paper's: the **Papers** page.", icon=":material/check:")
    if loaded:
        st.success(f"The form below holds **{loaded['label']}** of *{loaded['title']}*"
                   f"{' (reduced for a CPU)' if loaded['reduced'] else ''}.", icon=":material/edit_note:")
        for w in loaded.get("warnings") or []:
            st.warning(w)

# -- what ----------------------------------------------------------------------------------
c1, c2, c3 = st.columns([1.2, 1, 1.4])
with c1:
    names = list(entries)
    dataset = st.selectbox("Dataset", names, index=names.index("digits"), key="dataset",
                           format_func=lambda n: f"{entries[n].title} "
                                                 f"({papers.STATE_TEXT[dataset_state(entries[n]).state]})",
                           help="The images to train and test on. Its state says whether it can be used now.")
    info = entries[dataset]
    options: dict = {}
    if dataset == "synthetic":
        with st.expander("Synthetic data settings"):
            s1, s2 = st.columns(2)
            options["classes"] = s1.number_input("Classes", 2, 1000, SYNTHETIC_DEFAULTS["classes"], key="syn_classes",
                                                 help="How many class patterns to draw.")
            options["channels"] = s2.selectbox("Channels", [3, 1], key="syn_channels", help="Colour (3) or grey (1).")
            s3, s4, s5 = st.columns(3)
            options["train"] = s3.number_input("Train images", 1, 1_000_000, SYNTHETIC_DEFAULTS["train"],
                                               key="syn_train", help="Size of the training split.")
            options["val"] = s4.number_input("Validation images", 1, 1_000_000, SYNTHETIC_DEFAULTS["val"],
                                             key="syn_val", help="Size of the validation split.")
            options["test"] = s5.number_input("Test images", 1, 1_000_000, SYNTHETIC_DEFAULTS["test"], key="syn_test",
                                              help="Size of the test split.")
        # Only what differs from the generator's defaults: the same data, the same cache key as the CLI's.
        options = {k: int(v) for k, v in options.items() if int(v) != SYNTHETIC_DEFAULTS[k]}
    if dataset in DATASET_OPTIONS and "path" in DATASET_OPTIONS[dataset]:
        path = widgets.folder_picker(info)
        if path:
            options["path"] = path
with c2:
    native = list(info.native_resolutions)
    sizes = native + [s for s in COMMON_SIZES if s not in native]
    wanted_size = st.session_state.get("resolution")
    if isinstance(wanted_size, int) and wanted_size not in sizes:  # a preset's size (e.g. 14 px)
        sizes = sorted(sizes + [wanted_size], key=lambda s: (s not in native, s))
    resolution = st.selectbox("Resolution (px)", sizes, key="resolution",
                              format_func=lambda s: f"{s} × {s} (native)" if s in native else f"{s} × {s} (resized)",
                              help="Images are resized to this square size; the dataset's native sizes come first.")
with c3:
    archs = models.list_architectures()
    architecture = st.selectbox("Architecture", archs, index=archs.index("fan_arch1"), key="architecture",
                                format_func=lambda a: f"{a} — {models.get_architecture(a).title}",
                                help="Defined once and built in every framework from that one definition.")

extra = st.session_state.get("preset_extra_options")
if extra and extra.get("dataset") == dataset:
    options.update(extra["options"])
    x1, x2 = st.columns([4, 1])
    x1.caption("From the preset, dataset options without a field on this form: "
               + ", ".join(f"`{k} = {v}`" for k, v in extra["options"].items()))
    if x2.button("Drop them", key="preset_extra_clear", help="Use the dataset's defaults instead."):
        st.session_state["preset_extra_options"] = None
        st.rerun()

state = dataset_state(info, resolution, options.get("path"))
msg = f"**{info.title}**: {info.description} "
if state.state == "unsupported":
    problems["dataset"] = f"{info.title} is unsupported: {state.reason}"
elif state.state == "needs_folder":
    problems["dataset"] = f"{info.title} {state.reason}"
elif state.state == "downloadable":
    size = f" ({state.download_bytes / 1e6:.0f} MB)" if state.download_bytes else ""
    st.info(msg + f"Not on this machine yet: the worker will {state.reason}{size} on first use.",
            icon=":material/download:")
else:
    st.caption(msg + f"State: {state.state}, {state.reason}.")

channels = options.get("channels", info.channels)
classes = len(info.class_names) or (options.get("classes", 10) if dataset == "synthetic" else None)
arch = models.get_architecture(architecture)
try:
    d = models.describe(architecture, resolution, channels, classes or 2)
    n_cls = f"{classes} classes" if classes else "2 classes assumed (the folder decides)"
    st.caption(f"**{arch.title}** at {resolution}×{resolution}×{channels}, {n_cls}: "
               f"**{d['parameters']:,}** trainable parameters, **{d['flops_per_image'] / 1e6:,.2f} MFLOPs** per image "
               f"(2 × multiply-accumulates). {arch.description}")
except ValueError as e:
    problems["resolution"] = str(e)

# -- frameworks and sizes ------------------------------------------------------------------
st.subheader("Frameworks and inference batch sizes")
fcols = st.columns(len(FRAMEWORKS))
frameworks = []
for col, (fw, fw_info) in zip(fcols, FRAMEWORKS.items()):
    ok = installed(fw)
    with col:
        checked = st.checkbox(fw_info.label, value=ok and fw_info.default, disabled=not ok, key=f"fw_{fw}",
                              help=fw_info.description if ok else f"Not installed here: {fw_info.install_hint}")
        if not ok:
            st.caption(f"not installed: `{fw_info.install_hint}`")
    if checked and ok:
        frameworks.append(fw)

b1, b2, b3, b4 = st.columns([2, 1, 1, 1])
batch_sizes = b1.multiselect("Inference batch sizes", BATCH_CHOICES, default=[1, 32, 128], key="batch_sizes",
                             help=f"Inference is timed at each (1..{MAX_BATCH}); a size that runs out of memory "
                                  "is recorded as a data point, not an error.")
inference_only = b4.toggle("Inference only", key="inference_only",
                           help="Skip training: time inference of freshly initialised weights (accuracy is chance).")
epochs = b2.number_input("Epochs", 0 if inference_only else 1, 1000, 1, key="epochs",
                         help="Passes over the training split.")
repeats = b3.number_input("Repeats", 1, 100, 1, key="repeats",
                          help="Runs with seeds seed, seed+1, …; result pages show the means.")

# -- training settings and toggles ---------------------------------------------------------
with st.expander("Training settings", expanded=False):
    t1, t2, t3, t4, t5 = st.columns(5)
    defaults = arch.defaults or {}
    optimizer = t1.selectbox("Optimizer", OPTIMIZERS, key="optimizer",
                             index=OPTIMIZERS.index(defaults.get("optimizer", "adam"))
                             if defaults.get("optimizer", "adam") in OPTIMIZERS else 0,
                             help="The same update rule in every framework.")
    lr = t2.number_input("Learning rate (0 = the architecture's)", 0.0, 9.99, 0.0, format="%.5f", key="lr",
                         help=f"0 keeps the paper's {defaults.get('learning_rate', 1e-3)}.")
    schedule = t3.selectbox("Schedule", SCHEDULES, key="schedule", help="Learning-rate schedule over the steps.")
    tbs = t4.number_input("Training batch (0 = the architecture's)", 0, MAX_BATCH, 0, key="train_batch",
                          help=f"0 keeps the paper's {defaults.get('batch_size', 32)}.")
    seed = t5.number_input("Seed", 0, 2**31 - 1, 0, key="seed", help="Data order and initial weights.")

st.subheader("Toggles")
g1, g2, g3, g4 = st.columns(4)
precision = g1.selectbox("Precision", PRECISIONS, key="precision",
                         help="default: each framework as it comes (TF/JAX use TF32 matmuls on Ampere+, PyTorch "
                              "does not); fp32 strict; tf32 everywhere; bf16 mixed precision.")
compile_ = g2.toggle("Compile", value=True, key="compile",
                     help="torch.compile, TensorFlow jit_compile (XLA), JAX jit; off runs eagerly where possible.")
XLA_NAMES = "/".join(FRAMEWORKS[f].label for f in owners("xla_autotune"))
autotune = g3.selectbox("XLA autotune level", ["XLA's default", *XLA_AUTOTUNE_LEVELS], key="xla_autotune",
                        help=f"XLA's GPU autotuning for {XLA_NAMES}; 0 turns it off and can be many times slower.")
pipeline = g4.radio("Input pipeline", PIPELINES, key="pipeline", horizontal=True,
                    help="idiomatic: each framework's usual loader; device: the whole split on the GPU first.")
h1, h2, h3, h4 = st.columns(4)

def _only(option: str) -> str:
    return "/".join(FRAMEWORKS[f].label for f in owners(option)) + " only"


cudnn = h1.toggle("cuDNN benchmark", key="cudnn_benchmark",
                  help=f"{_only('cudnn_benchmark')}: let cuDNN time its convolution algorithms first.")
channels_last = h2.toggle("Channels last", key="channels_last", help=f"{_only('channels_last')}: NHWC memory format.")
class_weights = h3.toggle("Class-weighted loss", key="class_weights",
                          help="Weights the loss by inverse class frequency (for imbalanced data).")
same_init = h4.toggle("Same initial weights", value=True, key="same_init",
                      help="One numpy draw loaded into every framework; off: each framework's own initializers.")
require_gpu = st.toggle("Require the GPU", key="require_gpu",
                        help="On a machine with a GPU, refuse a framework that would compute on the CPU (its GPU "
                             "build missing) instead of a comparison that mixes devices. The home page and "
                             "`./lab doctor` say where each framework computes.")
with st.expander("Timing settings", expanded=False):
    w1, w2, w3 = st.columns(3)
    warmup = w1.number_input("Warm-up iterations", 0, 10000, 20, key="warmup",
                             help="Untimed calls before measuring (compile and caches).")
    measure = w2.number_input("Measured iterations", 1, 100000, 100, key="measure",
                              help="Timed calls per batch size; percentiles come from these.")
    force = w3.toggle("Recompute cached results", key="force",
                      help="Run again even when this exact job is in the cache.")

# -- validate and submit -------------------------------------------------------------------
if not frameworks:
    problems["frameworks"] = "choose at least one installed framework"
if not batch_sizes:
    problems["batch_sizes"] = "choose at least one inference batch size"
spec = None
try:
    spec = RunSpec(dataset=dataset, resolution=int(resolution), architecture=architecture,
                   frameworks=tuple(frameworks) or default_frameworks(), batch_sizes=tuple(batch_sizes) or (1,),
                   epochs=int(epochs), repeats=int(repeats), seed=int(seed), optimizer=optimizer,
                   learning_rate=float(lr) or None, lr_schedule=schedule, train_batch_size=int(tbs) or None,
                   precision=precision, compile=bool(compile_),
                   xla_autotune=None if autotune == "XLA's default" else int(autotune), cudnn_benchmark=bool(cudnn),
                   channels_last=bool(channels_last), pipeline=pipeline, class_weights=bool(class_weights),
                   same_init=bool(same_init), inference_only=bool(inference_only), warmup_iters=int(warmup),
                   measure_iters=int(measure), dataset_options=options, require_gpu=bool(require_gpu))
except SpecError as e:
    for field, text in e.problems.items():
        problems.setdefault(field, text)
if problems:
    st.error("Cannot queue this yet:\n" + "\n".join(f"- **{k.replace('_', ' ')}**: {v}" for k, v in problems.items()),
             icon=":material/block:")
if st.button("Queue this comparison", type="primary", disabled=bool(problems),
             key="submit", help="Adds the job to the queue; identical requests share one job."):
    jobs, refused = widgets.submit_all({"this comparison": spec}, force=bool(force))
    if jobs:
        widgets.follow(jobs["this comparison"])
        st.rerun()
    st.error(f"Not queued: {refused['this comparison']}", icon=":material/block:")

# -- progress ------------------------------------------------------------------------------
job = widgets.current_job()
if job:
    st.subheader("Progress")
    widgets.job_panel(job)

q = backend.queue()
if q is not None:
    active = q.jobs(states=["queued", "running"])
    if active:
        st.subheader("The queue now (everyone's jobs)")
        rows = [{"job": j["id"], "state": j["state"], "position": j.get("position"),
                 "what": f"{j['spec'].get('dataset')} · {j['spec'].get('architecture')} · "
                         f"{', '.join(j['spec'].get('frameworks') or [])}",
                 "submitted": fmt_time(j.get("submitted_at"))} for j in active]
        st.dataframe(pd.DataFrame(rows), hide_index=True, width="stretch")
