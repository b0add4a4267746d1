"""Every page of the app under streamlit.testing.v1.AppTest: an empty cache, a cache
with realistic results, the widgets, and bad input producing a message."""

import pytest
from conftest import REPO
from helpers import markdown_tables
from sample_results import fill_store, make_result
from streamlit.testing.v1 import AppTest

from engines.frameworks import FRAMEWORKS

pytestmark = pytest.mark.heavy(seconds=135)  # its wall time in the parallel suite: see conftest.py

RESULT_PAGES = ("pages/speed.py", "pages/energy_memory.py", "pages/accuracy.py", "pages/runs.py")


@pytest.fixture(autouse=True)
def _no_background_runner(monkeypatch):
    """The app starts a runner thread bound to the queue of the cache it first sees; in
    tests every test has its own cache, so the tests run jobs themselves (JobQueue.wait)."""
    import labui.backend

    monkeypatch.setattr(labui.backend, "start_runner", lambda: None)


@pytest.fixture(autouse=True)
def _every_chart_is_valid_vega_lite(monkeypatch):
    """labui.widgets.chart draws without Altair's schema check (for the page's time): here
    every chart a page draws is checked against the Vega-Lite schema, as drawn (an invalid
    one raises, and the page shows the exception)."""
    from labui import widgets

    draw = widgets.chart

    def checked(c, where=None):
        draw(c, where)
        type(c).to_dict(c, validate=True)

    monkeypatch.setattr(widgets, "chart", checked)


def app(page=None) -> AppTest:
    at = AppTest.from_file(str(REPO / "app.py"), default_timeout=90).run()
    assert not at.exception, at.exception
    if page:
        at.switch_page(page).run()
        assert not at.exception, at.exception
    return at


@pytest.fixture
def store():
    from engines.runs.store import ResultStore

    return ResultStore()


@pytest.fixture
def filled(store):
    """Two comparisons: a GPU-like one with 2 seeds and an OOM, and a CPU one (no energy or memory)."""
    fill_store(store, seeds=(0, 1), oom_from=1024)
    # Stored second, so listed first (the store orders by time, then by the order of storing).
    fill_store(store, frameworks=("keras", "pytorch"), gpu=False, precision="fp32")
    return store


def texts(at) -> str:
    parts = []
    for kind in ("markdown", "caption", "info", "warning", "error", "success", "header", "title", "subheader"):
        parts += [str(e.value) for e in getattr(at, kind)]
    return "\n".join(parts)


def vega_count(at) -> int:
    return len(at.get("vega_lite_chart"))


# -- home ------------------------------------------------------------------------------------
def test_home_renders_machine_frameworks_and_default_button():
    at = app()
    assert at.title[0].value == "Framework comparison lab"
    headers = [h.value for h in at.header]
    assert {"This machine", "Datasets here", "Try it: the default comparison"} <= set(headers)
    fw = markdown_tables(at)[0]
    assert [row["framework"] for row in fw] == list(FRAMEWORKS)
    assert "to install" in fw[0]
    button = at.button(key="default_run")
    assert button.disabled is False


# -- result pages: empty cache -------------------------------------------------------------
@pytest.mark.parametrize("page", RESULT_PAGES)
def test_result_page_with_empty_cache_says_how_to_make_one(page):
    at = app(page)
    assert "result cache is empty" in texts(at)
    assert vega_count(at) == 0
    assert not at.error


# -- result pages: with results -----------------------------------------------------------
def keys_of(store):
    """(cpu, gpu) comparison keys of the ``filled`` store; the CPU one is the newest."""
    keys = [c["comparison_key"] for c in store.comparisons()]
    return keys[0], keys[1]


def test_speed_page_charts_and_ratio_table(filled):
    cpu, gpu = keys_of(filled)
    at = app("pages/speed.py")
    box = at.selectbox(key="pick_speed")
    assert box.value == cpu and len(box.options) == 2
    assert "digits · 8 px · fan_arch1 · keras, pytorch" in box.options[0]
    assert vega_count(at) >= 4  # throughput, latency, epoch time, compile time
    ratios = at.dataframe[0].value
    assert "throughput at batch 32" in ratios.columns and "training speed" in ratios.columns
    assert "1.00 ×" in set(ratios["throughput at batch 32"])
    box.set_value(gpu).run()
    assert not at.exception
    assert "2 repeats" in texts(at)
    assert "oom" in at.dataframe[1].value["status"].tolist()
    assert "Fastest at each batch size" in texts(at)


def test_choice_is_shared_between_result_pages_and_kept_in_url(filled):
    cpu, gpu = keys_of(filled)
    at = app("pages/speed.py")
    at.selectbox(key="pick_speed").set_value(gpu).run()
    assert at.query_params.get("comparison") == gpu
    at.switch_page("pages/accuracy.py").run()
    assert at.selectbox(key="pick_accuracy").value == gpu
    at.switch_page("pages/energy_memory.py").run()
    assert at.selectbox(key="pick_energy").value == gpu


def test_energy_memory_page_with_and_without_measurements(filled):
    cpu, gpu = keys_of(filled)
    at = app("pages/energy_memory.py")
    t = texts(at)  # the CPU run: no energy, memory as process RSS, CPU cores used
    assert "Energy: not measured" in t and "NVML reads NVIDIA GPUs only" in t
    assert "process peak RSS" in t and "Peak memory: not measured" not in t
    assert vega_count(at) == 2
    at.selectbox(key="pick_energy").set_value(gpu).run()
    assert not at.exception
    assert vega_count(at) >= 6  # training J, inference J, power, allocator + NVML memory, CPU
    assert "not measured" not in texts(at)


def test_accuracy_page_widgets(filled):
    at = app("pages/accuracy.py")
    metrics = at.dataframe[0].value
    assert {"accuracy", "auc", "macro F1", "weighted F1"} <= set(metrics.columns)
    n_charts = vega_count(at)
    assert n_charts >= 5  # per-class, 2 confusion matrices, 2 curves
    at.toggle(key="cm_normalized").set_value(True).run()
    assert not at.exception and vega_count(at) == n_charts
    at.get("button_group")[0].set_value("recall").run()
    assert not at.exception


def test_runs_page_filters_compare_export_delete(filled, store):
    at = app("pages/runs.py")
    table = at.dataframe[0].value
    assert len(table) == 8  # 3 frameworks x 2 seeds + 2
    at.multiselect(key="f_fw").set_value(["jax"]).run()
    assert len(at.dataframe[0].value) == 2
    downloads = at.get("download_button")
    assert len(downloads) == 2
    # compare two comparisons
    assert "B÷A" in " ".join(at.dataframe[1].value.columns)
    # environment of a run
    env = at.dataframe[2].value
    assert "version of torch" in set(env["what"])
    # delete needs the confirmation first
    assert at.button(key="del_btn").disabled
    at.checkbox(key="del_sure").check().run()
    at.button(key="del_btn").click().run()
    assert not at.exception
    assert len(store.comparisons()) == 1


# Every shape of result the lab can produce, on every result page.
SHAPES = {
    "one batch size": dict(batch_sizes=(32,)),
    "one framework": dict(frameworks=("pytorch",)),
    "one class": dict(classes=1),
    "one epoch": dict(epochs=1),
    "all failed": dict(status="error", message="dataset breastmnist: could not download"),
    "inference only": dict(inference_only=True),
    "repeats, one batch size": dict(batch_sizes=(8,), seeds=(0, 1)),
}


@pytest.mark.parametrize("shape", SHAPES)
def test_every_result_page_renders_every_shape_of_result(store, shape):
    fill_store(store, **SHAPES[shape])
    at = app()
    for page in RESULT_PAGES:
        at.switch_page(page).run()
        assert not at.exception, (page, at.exception)
        assert "result cache is empty" not in texts(at)
    if shape == "all failed":
        assert "could not download" in texts(at)


def test_charts_are_drawn_with_text_for_a_projector(filled):
    import json

    from labui.widgets import READABLE

    at = app("pages/speed.py")
    specs = [json.loads(chart.proto.spec) for chart in at.get("vega_lite_chart")]
    assert specs and all(spec["config"]["title"] == READABLE["title"] for spec in specs)
    assert all(spec["config"]["axis"]["labelFontSize"] == READABLE["axis"]["labelFontSize"] for spec in specs)


def test_failed_framework_is_shown_not_hidden(store):
    fill_store(store, frameworks=("keras", "pytorch"))
    store.put("jax-crash", make_result("jax", status="crashed", message="jax: unexpected XlaRuntimeError: boom"))
    at = app("pages/speed.py")
    assert "XlaRuntimeError" in texts(at)
    assert vega_count(at) >= 2


# -- run page -------------------------------------------------------------------------------
def test_run_page_widgets_and_architecture_figures():
    at = app("pages/run.py")
    assert at.selectbox(key="dataset").value == "digits"
    assert at.selectbox(key="resolution").value == 8  # native first
    assert at.selectbox(key="architecture").value == "fan_arch1"
    assert "trainable parameters" in texts(at) and "MFLOPs" in texts(at)
    for fw in FRAMEWORKS:  # all six, from the table
        assert at.checkbox(key=f"fw_{fw}") is not None
    assert at.text_input(key="batch_sizes").value == "1, 32, 128"
    for key in ("cudnn_benchmark", "channels_last", "class_weights", "same_init", "inference_only"):
        assert at.toggle(key=key).help, key
    # compile: each framework's own by default, or one setting for all; the help names who compiles
    assert at.radio(key="compile").value == "per framework" and "on in JAX/Flax, Keras on JAX" in \
        at.radio(key="compile").help
    assert at.selectbox(key="precision").help and at.selectbox(key="xla_autotune").help
    assert not at.error
    at.selectbox(key="resolution").set_value(32).run()
    at.selectbox(key="architecture").set_value("resnet50").run()
    assert "ResNet-50** at 32×32×1" in texts(at) and "trainable parameters" in texts(at) and not at.error


def test_run_page_bad_input_gives_messages_and_disables_submit():
    at = app("pages/run.py")
    at.selectbox(key="architecture").set_value("cifar_cnn").run()  # needs >= 18 px; digits is 8 px
    assert at.error and "resolution" in at.error[0].value and "18" in at.error[0].value
    assert at.button(key="submit").disabled
    at.selectbox(key="resolution").set_value(32).run()
    assert not at.error
    at.text_input(key="batch_sizes").set_value("").run()
    assert "batch sizes" in at.error[0].value
    at.text_input(key="batch_sizes").set_value("8").run()
    for fw in ("keras", "tensorflow", "pytorch", "jax"):
        cb = at.checkbox(key=f"fw_{fw}")
        if not cb.disabled:
            cb.uncheck()
    at.run()
    assert "frameworks" in at.error[0].value.lower() and at.button(key="submit").disabled
    at.selectbox(key="dataset").set_value("chestmnist" if "chestmnist" in at.selectbox(key="dataset").options
                                          else "folder").run()
    assert "dataset" in at.error[0].value.lower()


def test_run_page_opens_on_the_default_comparison():
    """The Run page's form is RunSpec's defaults, the home page's button, field for field:
    queueing it untouched asks for the same comparison; optimizer, learning rate and epochs
    are on the page."""
    from engines.frameworks import default_frameworks, installed
    from engines.runs.spec import RunSpec

    default = RunSpec(frameworks=tuple(f for f in default_frameworks() if installed(f)) or default_frameworks())
    at = app("pages/run.py")
    assert at.selectbox(key="dataset").value == default.dataset
    assert at.selectbox(key="architecture").value == default.architecture
    assert at.number_input(key="epochs").value == default.epochs
    assert at.selectbox(key="optimizer").value == default.optimizer
    assert at.number_input(key="lr").value == pytest.approx(default.learning_rate)
    assert at.number_input(key="train_batch").value == default.train_batch_size
    assert "The default comparison's settings" in texts(at)
    at.button(key="submit").click().run()
    job = at.session_state["job"]
    from engines.runs.queue import JobQueue

    assert JobQueue().status(job)["spec"] == default.to_dict()
    JobQueue().cancel(job)
    # a change is named beside the button, and a new architecture brings its own learning rate
    at.number_input(key="epochs").set_value(1).run()
    assert "Differs from the default comparison in: 1 epoch" in texts(at)
    at.selectbox(key="resolution").set_value(28).run()
    at.selectbox(key="architecture").set_value("blood_resnet").run()
    assert at.number_input(key="lr").value == pytest.approx(0.001)
    assert at.number_input(key="train_batch").value == 128
    assert at.toggle(key="recompute_batchnorm").value is True and not at.toggle(key="recompute_batchnorm").disabled


@pytest.mark.parametrize("key, typed, field", [
    ("epochs", 1_000_000, "Epochs"), ("repeats", 1000, "Repeats"), ("lr", 0.0, "Learning rate"),
    ("train_batch", 0, "Training batch"), ("seed", -1, "Seed"), ("measure", 0, "Measured iterations"),
])
def test_run_page_out_of_range_numbers_disable_queue_and_name_the_field(key, typed, field):
    at = app("pages/run.py")
    at.number_input(key=key).set_value(typed).run()
    assert at.button(key="submit").disabled
    assert f"**{field}**" in at.error[0].value


@pytest.mark.parametrize("typed, ok, problem", [
    ("0", False, "1..65536"), ("1, 65536", True, None), ("1 8 3", True, None), ("12x", False, "'12x'"),
    ("1, 70000", False, "1..65536"),
])
def test_run_page_batch_sizes_are_taken_as_typed(typed, ok, problem):
    at = app("pages/run.py")
    at.text_input(key="batch_sizes").set_value(typed).run()
    assert at.button(key="submit").disabled is (not ok)
    if ok:
        assert not at.error
    else:
        assert "**Inference batch sizes**" in at.error[0].value and problem in at.error[0].value


def test_run_page_lists_datasets_ready_here_first():
    at = app("pages/run.py")
    labels = at.selectbox(key="dataset").options  # "Title (state)"
    usable = [label.endswith(("(ready)", "(ready (offline))")) for label in labels]
    assert any(usable) and not all(usable)
    assert usable == sorted(usable, reverse=True), labels


def test_run_page_unsupported_xla_and_pytorch_toggles():
    """A PyTorch toggle without a PyTorch framework chosen, and an XLA autotune level with PyTorch
    alone, are refused with the toggle named, and nothing can be queued."""
    from engines.frameworks import FRAMEWORKS, installed, owners

    xla = [fw for fw in owners("xla_autotune") if installed(fw)]
    if not installed("pytorch") or not xla:
        pytest.skip("needs PyTorch and an XLA framework installed: the page only lets installed frameworks be chosen")
    at = app("pages/run.py")
    for fw in FRAMEWORKS:
        at.checkbox(key=f"fw_{fw}").set_value(fw == xla[0])
    at.toggle(key="cudnn_benchmark").set_value(True).run()
    error = at.error[0].value.lower()  # the field by its label on the form ("cuDNN benchmark")
    assert "cudnn benchmark" in error and at.button(key="submit").disabled
    assert all(fw in error for fw in owners("cudnn_benchmark"))  # PyTorch's, and Keras on PyTorch's
    for fw in FRAMEWORKS:
        at.checkbox(key=f"fw_{fw}").set_value(fw == "pytorch")
    at.toggle(key="cudnn_benchmark").set_value(False)
    at.selectbox(key="xla_autotune").set_value(2).run()
    error = at.error[0].value.lower()
    assert "xla autotune" in error and "none of which is chosen" in error and "cudnn" not in error
    assert at.button(key="submit").disabled


def test_run_page_offers_pretrained_weights_where_torchvision_publishes_them(tmp_path, monkeypatch):
    import numpy as np

    from engines.pretrained import write_safetensors

    monkeypatch.setenv("LAB_DATA_ROOT", str(tmp_path / "data"))
    (tmp_path / "data" / "pretrained").mkdir(parents=True)
    write_safetensors(tmp_path / "data" / "pretrained" / "mine.safetensors", {"a": np.zeros(1, np.float32)})
    at = app("pages/run.py")
    assert not [s for s in at.selectbox if s.key == "pretrained"]  # fan_arch1: none published
    at.selectbox(key="resolution").set_value(32).run()
    at.selectbox(key="architecture").set_value("mobilenet_v3_small").run()
    box = at.selectbox(key="pretrained")
    assert box.options[1].startswith("torchvision's MobileNet_V3_Small_Weights.IMAGENET1K_V1")
    assert box.value is None and "file pretrained/mine.safetensors" in box.options
    box.set_value("pretrained/mine.safetensors").run()
    assert not at.error and not at.button(key="submit").disabled
    at.toggle(key="same_init").set_value(False).run()
    assert "same in every framework" in at.error[0].value and at.button(key="submit").disabled


def test_run_page_follows_a_job_from_the_url():
    from helpers import run_page_for

    from engines.runs.queue import JobQueue
    from engines.runs.spec import RunSpec

    job = JobQueue().submit(RunSpec(frameworks=("pytorch",), epochs=1), submitter="test")
    at = run_page_for(job)
    assert not at.exception
    assert job in texts(at)
    JobQueue().cancel(job)


def test_a_job_where_everything_failed_says_why_once_and_links_nowhere(monkeypatch):
    from helpers import run_page_for, unreachable_medmnist

    from engines.runs.queue import JobQueue
    from engines.runs.spec import RunSpec

    name = unreachable_medmnist(monkeypatch)
    q = JobQueue()
    job = q.submit(RunSpec(dataset=name, resolution=28, frameworks=("pytorch", "jax")), submitter="test")
    q.run_next()  # fails while fetching the data: no worker starts
    at = run_page_for(job)
    assert not at.exception
    assert sum("LAB_DATA_PATH" in e.value for e in at.error) == 1
    assert "LAB_DATA_PATH" not in "\n".join(str(c.value) for c in at.caption)  # the tasks do not repeat it
    assert not at.get("page_link") and "nothing to see on the result pages" in texts(at)


# A real run through the queue and worker processes: about 30 s on a 2-core CPU.
def test_real_run_on_synthetic_data_appears_on_the_result_pages():
    """Submit from the Run page, run it through the real queue and worker processes on the
    CPU, follow it, then find it on every result page."""
    from engines.frameworks import installed
    from engines.runs.queue import JobQueue

    chosen = [fw for fw in ("pytorch", "jax") if installed(fw)][:2]
    if not chosen:
        pytest.skip("neither pytorch nor jax is installed")
    at = app("pages/run.py")
    at.selectbox(key="dataset").set_value("synthetic").run()
    at.selectbox(key="resolution").set_value(16).run()
    for key, value in (("syn_classes", 4), ("syn_train", 64), ("syn_val", 32), ("syn_test", 32),
                       ("warmup", 2), ("measure", 5)):
        at.number_input(key=key).set_value(value)
    at.text_input(key="batch_sizes").set_value("1, 8")
    # compile per framework (the default): PyTorch eager, JAX under jit, the cheapest here
    for fw in ("keras", "tensorflow", "pytorch", "jax"):
        at.checkbox(key=f"fw_{fw}").set_value(fw in chosen)
    at.run()
    assert not at.error, at.error[0].value
    at.button(key="submit").click().run()
    assert not at.exception
    job = at.session_state["job"]
    assert at.query_params.get("job") == job
    assert job in texts(at)
    final = JobQueue().wait(job)
    assert final["state"] == "done", final
    at.run()  # the panel now shows the finished job and links to the result pages
    assert "done" in texts(at)
    assert [p for p in at.get("page_link")]

    at.switch_page("pages/speed.py").run()
    assert not at.exception
    assert "synthetic · 16 px · fan_arch1" in at.selectbox(key="pick_speed").options[0]
    assert vega_count(at) >= 2
    at.switch_page("pages/accuracy.py").run()
    assert set(at.dataframe[0].value["framework"]) == set(chosen)
    at.switch_page("pages/energy_memory.py").run()
    assert not at.exception
    at.switch_page("pages/runs.py").run()
    assert len(at.dataframe[0].value) == len(chosen)
    # a reload of the Run page with ?job= in the URL follows the job again
    again = AppTest.from_file(str(REPO / "app.py"), default_timeout=90)
    again.query_params["job"] = job
    again.run()
    assert job in texts(again)
