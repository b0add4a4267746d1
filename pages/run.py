"""Run: choose a comparison, queue it, and watch it run."""
import pandas as pd
import streamlit as st

import models
from engines.analysis.presets import list_presets
from engines.datasets import catalog, dataset_state, ready_first
from engines.datasets.synthetic import DEFAULT_OPTIONS as SYNTHETIC_DEFAULTS
from engines.frameworks import FRAMEWORKS, compiled_by_default, installed, owners
from engines.runs.spec import (
    DATASET_OPTIONS,
    MAX_BATCH,
    RunSpec,
    SpecError,
    architecture_defaults,
    compile_text,
    default_request,
    differences_from_default,
)
from engines.training.batchnorm import has_batchnorm
from engines.training.config import OPTIMIZERS, PIPELINES, PRECISIONS, SCHEDULES, XLA_AUTOTUNE_LEVELS
from labui import backend, papers, widgets
from labui.backend import ensure_app_navigation
from labui.text import fmt_time, setting_words

ensure_app_navigation()

COMMON_SIZES = (8, 16, 28, 32, 64, 96, 128, 224)
# The form opens on the home page's default comparison, field for field (one definition).
DEFAULT = default_request()


def _open_on_defaults() -> None:
    """Every form field not yet in this session's state starts at DEFAULT's value (a
    preset or the user's earlier choice, already there, stays)."""
    state, _, _ = papers.form_state(DEFAULT.to_dict(), {f for f in FRAMEWORKS if installed(f)})
    state.update({key: SYNTHETIC_DEFAULTS[k] for k, key in papers.SYNTHETIC_KEYS.items()},
                 force=False)
    for key, value in state.items():
        st.session_state.setdefault(key, value)


def _dataset_changed() -> None:
    """A new dataset opens at its own smallest native size."""
    st.session_state["resolution"] = catalog()[st.session_state["dataset"]].default_resolution


def _architecture_changed() -> None:
    """A new architecture brings its paper's learning rate and training batch (what
    RunSpec would resolve) and recomputes BatchNorm statistics where it has BatchNorm."""
    arch = st.session_state["architecture"]
    defaults = architecture_defaults(arch)
    st.session_state["lr"] = defaults["learning_rate"]
    st.session_state["train_batch"] = defaults["train_batch_size"]
    st.session_state["recompute_batchnorm"] = True


# A RunSpec field as this form labels it, for the list of what keeps Queue disabled.
FIELD_LABELS = {"batch_sizes": "Inference batch sizes", "train_batch_size": "Training batch",
                "learning_rate": "Learning rate", "lr_schedule": "Schedule", "warmup_iters": "Warm-up iterations",
                "measure_iters": "Measured iterations", "recompute_batchnorm": "Recompute BatchNorm statistics",
                "xla_autotune": "XLA autotune level", "cudnn_benchmark": "cuDNN benchmark",
                "channels_last": "Channels last", "dataset_options": "Dataset settings",
                "resolution": "Resolution (px)", "class_weights": "Class-weighted loss",
                "require_gpu": "Require the GPU", "same_init": "Same initial weights",
                "pretrained": "Pretrained weights", "queue": "Not queued"}


def _field_name(field: str) -> str:
    return FIELD_LABELS.get(field, field.replace("_", " ").capitalize())


_open_on_defaults()

st.title("Run a comparison")
st.caption(f"Choose what to compare; the job joins the queue (its tasks run {backend.where_jobs_run()}) and its "
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
    names = [e.name for e in ready_first(entries.values())]
    dataset = st.selectbox("Dataset", names, key="dataset", on_change=_dataset_changed,
                           format_func=lambda n: f"{entries[n].title} "
                                                 f"({papers.STATE_TEXT[dataset_state(entries[n]).state]})",
                           help="The images to train and test on; those usable on this machine now come first. "
                                "Its state says whether it can be used now.")
    info = entries[dataset]
    options: dict = {}
    if dataset == "synthetic":
        with st.expander("Synthetic data settings"):
            s1, s2 = st.columns(2)
            options["classes"] = s1.number_input("Classes", step=1, key="syn_classes",
                                                 help="How many class patterns to draw.")
            options["channels"] = s2.selectbox("Channels", [3, 1], key="syn_channels", help="Colour (3) or grey (1).")
            s3, s4, s5 = st.columns(3)
            options["train"] = s3.number_input("Train images", step=1, key="syn_train",
                                               help="Size of the training split.")
            options["val"] = s4.number_input("Validation images", step=1, key="syn_val",
                                             help="Size of the validation split.")
            options["test"] = s5.number_input("Test images", step=1, key="syn_test", help="Size of the test split.")
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
    architecture = st.selectbox("Architecture", archs, key="architecture", on_change=_architecture_changed,
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
        checked = st.checkbox(fw_info.label, disabled=not ok, key=f"fw_{fw}",
                              help=fw_info.description if ok else f"Not installed here: {fw_info.install_hint}")
        if not ok:
            st.caption(f"not installed: `{fw_info.install_hint}`")
    if checked and ok:
        frameworks.append(fw)

b1, b4 = st.columns([3, 1])
batch_text = b1.text_input("Inference batch sizes", key="batch_sizes",
                           help=f"Inference is timed at each, as typed, separated by commas (1..{MAX_BATCH:,}); a size "
                                "that runs out of memory is recorded as a data point, not an error.")
batch_sizes, batch_problem = papers.parse_batch_sizes(batch_text)
if batch_problem:
    problems["batch_sizes"] = batch_problem
inference_only = b4.toggle("Inference only", key="inference_only",
                           help="Skip training: time inference of freshly initialised weights (accuracy is chance).")

# -- training: what changes accuracy most, in view ----------------------------------------
st.subheader("Training")
defaults = architecture_defaults(architecture)
t1, t2, t3, t4, t5 = st.columns(5)
epochs = t1.number_input("Epochs", step=1, key="epochs", help="Passes over the training split.")
optimizer = t2.selectbox("Optimizer", OPTIMIZERS, key="optimizer", help="The same update rule in every framework.")
lr = t3.number_input("Learning rate", step=None, format="%g", key="lr",
                     help=f"{architecture}'s paper uses {defaults['learning_rate']:g} (what changing the architecture "
                          "puts here).")
tbs = t4.number_input("Training batch", step=1, key="train_batch",
                      help=f"{architecture}'s paper uses {defaults['train_batch_size']}.")
repeats = t5.number_input("Repeats", step=1, key="repeats",
                          help="Runs with seeds seed, seed+1, …; result pages show the means and test the differences.")
with st.expander("More training settings", expanded=False):
    m1, m2 = st.columns(2)
    schedule = m1.selectbox("Schedule", SCHEDULES, key="schedule", help="Learning-rate schedule over the steps.")
    seed = m2.number_input("Seed", step=1, key="seed", help="Data order and initial weights.")

st.subheader("Toggles")
g1, g2, g3, g4 = st.columns(4)
precision = g1.selectbox("Precision", PRECISIONS, key="precision",
                         help="default: each framework as it comes (TF/JAX use TF32 matmuls on Ampere+, PyTorch "
                              "does not); fp32 strict; tf32 everywhere; bf16 mixed precision.")
compile_ = g2.radio("Compile", papers.COMPILE_CHOICES, key="compile", horizontal=True,
                    help="torch.compile, TensorFlow jit_compile (XLA), JAX jit. *per framework*: each framework's "
                         "faster setting for a short run on a CPU (measured), on in "
                         f"{', '.join(FRAMEWORKS[f].label for f in compiled_by_default())}, "
                         "off in the others; *on* / *off*: the same in every framework (compile time is paid once, so "
                         "it counts for less in long runs). The results say which ran.")
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
same_init = h4.toggle("Same initial weights", key="same_init",
                      help="One numpy draw loaded into every framework; off: each framework's own initializers.")
require_gpu = st.toggle("Require the GPU", key="require_gpu",
                        help="On a machine with a GPU, refuse a framework that would compute on the CPU (its GPU "
                             "build missing) instead of a comparison that mixes devices. The home page and "
                             "`./lab doctor` say where each framework computes.")
try:
    arch_has_bn = has_batchnorm(architecture, int(resolution), int(channels))
except ValueError:  # the input does not fit: said above, by name
    arch_has_bn = False
recompute_bn = st.toggle(
    "Recompute BatchNorm statistics after training", key="recompute_batchnorm",
    disabled=not arch_has_bn or bool(inference_only),
    help="One pass over the training split after training replaces the BatchNorm running averages (slow with the "
         "papers' momentum 0.99: after a few epochs they still remember the untrained network) by the trained "
         "network's statistics, the same rule in every framework. On by default where the architecture has "
         "BatchNorm." if arch_has_bn else f"{architecture} has no BatchNorm layer: nothing to recompute.")
pretrained = widgets.pretrained_choice(architecture)
with st.expander("Timing settings", expanded=False):
    w1, w2, w3 = st.columns(3)
    warmup = w1.number_input("Warm-up iterations", step=1, key="warmup",
                             help="Untimed calls before measuring (compile and caches).")
    measure = w2.number_input("Measured iterations", step=1, key="measure",
                              help="Timed calls per batch size; percentiles come from these.")
    force = w3.toggle("Recompute cached results", key="force",
                      help="Run again even when this exact job is in the cache.")

# -- validate and submit -------------------------------------------------------------------
if not frameworks:
    problems["frameworks"] = "choose at least one installed framework"
spec = None
try:
    spec = RunSpec(dataset=dataset, resolution=int(resolution), architecture=architecture,
                   frameworks=tuple(frameworks) or DEFAULT.frameworks,
                   batch_sizes=tuple(batch_sizes) or DEFAULT.batch_sizes,
                   epochs=epochs, repeats=repeats, seed=seed, optimizer=optimizer, learning_rate=lr,
                   lr_schedule=schedule, train_batch_size=tbs, precision=precision,
                   compile=papers.COMPILE_CHOICES[compile_],
                   xla_autotune=None if autotune == "XLA's default" else int(autotune), cudnn_benchmark=bool(cudnn),
                   channels_last=bool(channels_last), pipeline=pipeline, class_weights=bool(class_weights),
                   same_init=bool(same_init), pretrained=pretrained,
                   recompute_batchnorm=bool(recompute_bn) if arch_has_bn and not inference_only else None,
                   inference_only=bool(inference_only), warmup_iters=warmup, measure_iters=measure,
                   dataset_options=options, require_gpu=bool(require_gpu))
except SpecError as e:
    for field, text in e.problems.items():
        problems.setdefault(field, text)
q1, q2 = st.columns([1, 3], vertical_alignment="top")
if q1.button("Queue this comparison", type="primary", disabled=bool(problems),
             key="submit", help="Adds the job to the queue; identical requests share one job."):
    jobs, refused = widgets.submit_all({"this comparison": spec}, force=bool(force))
    if jobs:
        widgets.follow(jobs["this comparison"])
        st.rerun()
    problems["queue"] = refused["this comparison"]
if problems:
    q2.error("Cannot queue this yet, fix:\n" + "\n".join(f"- **{_field_name(k)}**: {v}"
                                                         for k, v in problems.items()), icon=":material/block:")
elif spec is not None:
    changed = setting_words(differences_from_default(spec.to_dict()))
    q2.caption(("Differs from the default comparison in: " + ", ".join(changed) if changed
                else "The default comparison's settings (the home page's button).")
               + (f" C{compile_text(None, spec.compile_by_framework())[1:]}." if spec.compile is None else ""))

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
