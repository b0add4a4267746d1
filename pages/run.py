"""Run: choose a comparison, queue it, and watch it run."""
import pandas as pd
import streamlit as st

import models
from engines.datasets import catalog, dataset_state
from engines.environment import FRAMEWORKS as FW_INSTALL
from engines.environment import framework_installed
from engines.spec import DATASET_OPTIONS, FRAMEWORKS, MAX_BATCH, OPTIMIZERS, PRECISIONS, SCHEDULES, RunSpec, SpecError
from labui import backend, widgets
from labui.colors import FRAMEWORK_LABELS
from labui.results import fmt_time

COMMON_SIZES = (8, 16, 28, 32, 64, 96, 128, 224)
BATCH_CHOICES = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048)
SYNTHETIC_DEFAULTS = {"classes": 10, "channels": 3, "train": 512, "val": 128, "test": 128}
STATE_TEXT = {"ready": "ready", "offline": "ready (offline)", "downloadable": "downloads on first use",
              "needs_folder": "needs a local folder", "unsupported": "unsupported"}

st.title("Run a comparison")
st.caption("Choose what to compare; the job joins the queue (one job at a time on this machine) and its "
           "progress shows below, also after you switch pages or reload.")

problems: dict[str, str] = {}
entries = catalog()

# -- what ----------------------------------------------------------------------------------
c1, c2, c3 = st.columns([1.2, 1, 1.4])
with c1:
    names = list(entries)
    dataset = st.selectbox("Dataset", names, index=names.index("digits"), key="dataset",
                           format_func=lambda n: f"{entries[n].title} ({STATE_TEXT[dataset_state(entries[n]).state]})",
                           help="The images to train and test on. Its state says whether it can be used now.")
    info = entries[dataset]
    options: dict = {}
    if dataset == "synthetic":
        with st.expander("Synthetic data settings"):
            s1, s2 = st.columns(2)
            options["classes"] = s1.number_input("Classes", 2, 1000, 10, key="syn_classes",
                                                 help="How many class patterns to draw.")
            options["channels"] = s2.selectbox("Channels", [3, 1], key="syn_channels", help="Colour (3) or grey (1).")
            s3, s4, s5 = st.columns(3)
            options["train"] = s3.number_input("Train images", 1, 1_000_000, 512, key="syn_train",
                                               help="Size of the training split.")
            options["val"] = s4.number_input("Validation images", 1, 1_000_000, 128, key="syn_val",
                                             help="Size of the validation split.")
            options["test"] = s5.number_input("Test images", 1, 1_000_000, 128, key="syn_test",
                                              help="Size of the test split.")
        # Only what differs from the generator's defaults: the same data, the same cache key as the CLI's.
        options = {k: int(v) for k, v in options.items() if int(v) != SYNTHETIC_DEFAULTS[k]}
    if dataset in DATASET_OPTIONS and "path" in DATASET_OPTIONS[dataset]:
        path = st.text_input("Image folder", key="folder_path",
                             help="A folder with one sub-folder of images per class (on the machine running the app).")
        if path.strip():
            options["path"] = path.strip()
with c2:
    native = list(info.native_resolutions)
    sizes = native + [s for s in COMMON_SIZES if s not in native]
    resolution = st.selectbox("Resolution (px)", sizes, key="resolution",
                              format_func=lambda s: f"{s} × {s} (native)" if s in native else f"{s} × {s} (resized)",
                              help="Images are resized to this square size; the dataset's native sizes come first.")
with c3:
    archs = models.list_architectures()
    architecture = st.selectbox("Architecture", archs, index=archs.index("fan_arch1"), key="architecture",
                                format_func=lambda a: f"{a} — {models.get_architecture(a).title}",
                                help="Defined once and built in every framework from that one definition.")

state = dataset_state(info, resolution, options.get("path"))
msg = f"**{info.title}**: {info.description} "
if state.state == "unsupported":
    problems["dataset"] = f"{info.title} is unsupported: {state.reason}"
elif state.state == "needs_folder":
    problems["dataset"] = f"{info.title} {state.reason}"
elif state.state == "downloadable":
    size = f" ({state.download_bytes / 1e6:.0f} MB)" if state.download_bytes else ""
    st.info(msg + f"Not on this machine yet: the worker will {state.reason}{size} on first use.", icon=":material/download:")
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
for col, fw in zip(fcols, FRAMEWORKS):
    ok = framework_installed(fw)
    hint = {"keras": "Keras 3 on the TensorFlow backend (model.fit)",
            "tensorflow": "low-level TensorFlow (tf.function training loop)",
            "pytorch": "PyTorch (eager, torch.compile when compile is on)",
            "jax": "JAX with Flax NNX and optax (jit)"}[fw]
    with col:
        checked = st.checkbox(FRAMEWORK_LABELS[fw], value=ok and fw != "tensorflow", disabled=not ok,
                              key=f"fw_{fw}", help=hint if ok else f"Not installed here: {FW_INSTALL[fw][2]}")
        if not ok:
            st.caption(f"not installed: `{FW_INSTALL[fw][2]}`")
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
autotune = g3.selectbox("XLA autotune level", ["XLA's default", 0, 1, 2, 3, 4], key="xla_autotune",
                        help="XLA's GPU autotuning for JAX/TF/Keras; 0 turns it off and can be many times slower.")
pipeline = g4.radio("Input pipeline", ["idiomatic", "device"], key="pipeline", horizontal=True,
                    help="idiomatic: each framework's usual loader; device: the whole split on the GPU first.")
h1, h2, h3, h4 = st.columns(4)
cudnn = h1.toggle("cuDNN benchmark", key="cudnn_benchmark",
                  help="PyTorch only: let cuDNN time its convolution algorithms first.")
channels_last = h2.toggle("Channels last", key="channels_last", help="PyTorch only: NHWC memory format.")
class_weights = h3.toggle("Class-weighted loss", key="class_weights",
                          help="Weights the loss by inverse class frequency (for imbalanced data).")
same_init = h4.toggle("Same initial weights", value=True, key="same_init",
                      help="One numpy draw loaded into every framework; off: each framework's own initializers.")
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
                   frameworks=tuple(frameworks) or ("pytorch",), batch_sizes=tuple(batch_sizes) or (1,),
                   epochs=int(epochs), repeats=int(repeats), seed=int(seed), optimizer=optimizer,
                   learning_rate=float(lr) or None, lr_schedule=schedule, train_batch_size=int(tbs) or None,
                   precision=precision, compile=bool(compile_),
                   xla_autotune=None if autotune == "XLA's default" else int(autotune), cudnn_benchmark=bool(cudnn),
                   channels_last=bool(channels_last), pipeline=pipeline, class_weights=bool(class_weights),
                   same_init=bool(same_init), inference_only=bool(inference_only), warmup_iters=int(warmup),
                   measure_iters=int(measure), dataset_options=options)
except SpecError as e:
    for field, text in e.problems.items():
        problems.setdefault(field, text)
if problems:
    st.error("Cannot queue this yet:\n" + "\n".join(f"- **{k.replace('_', ' ')}**: {v}" for k, v in problems.items()),
             icon=":material/block:")
queue_reason = None if backend.queue_available() else "The job queue (engines/jobqueue.py) is not part of this checkout yet."
if queue_reason:
    st.caption(queue_reason)
if st.button("Queue this comparison", type="primary", disabled=bool(problems) or queue_reason is not None,
             key="submit", help="Adds the job to the queue; identical requests share one job."):
    job_id = backend.queue().submit(spec, force=bool(force), submitter="run page")
    widgets.follow(job_id)
    st.rerun()

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
