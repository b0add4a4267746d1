"""Issue 8 in the app: the Papers page (ours beside the paper's), loading a preset on the
Run page, and the "Repeats & statistics" sections of the Speed and Accuracy pages; with
unit tests of the pure shaping in labui.papers and labui.repeats."""

import numpy as np
import pandas as pd
import pytest
from conftest import REPO
from sample_results import fill_store, make_result
from scipy import stats as sps
from streamlit.testing.v1 import AppTest

pytestmark = pytest.mark.heavy(seconds=45)  # its wall time in the parallel suite: see conftest.py


@pytest.fixture(autouse=True)
def _no_background_runner(monkeypatch):
    import labui.backend

    monkeypatch.setattr(labui.backend, "start_runner", lambda: None)


@pytest.fixture
def store():
    from engines.runs.store import ResultStore

    return ResultStore()


def app(page=None, query=None) -> AppTest:
    at = AppTest.from_file(str(REPO / "app.py"), default_timeout=90).run()
    assert not at.exception, at.exception
    if page:
        for k, v in (query or {}).items():
            at.query_params[k] = v
        at.switch_page(page).run()
        assert not at.exception, at.exception
    return at


def texts(at) -> str:
    parts = []
    for kind in ("markdown", "caption", "info", "warning", "error", "success", "header", "title", "subheader"):
        parts += [str(e.value) for e in getattr(at, kind)]
    return "\n".join(parts)


def frame_with(at, *columns) -> pd.DataFrame:
    for d in at.dataframe:
        if set(columns) <= set(d.value.columns):
            return d.value
    raise AssertionError(f"no table with {columns}: {[list(d.value.columns) for d in at.dataframe]}")


def preset_results(framework, seed, *, train_batch_size, **kw) -> dict:
    r = make_result(framework, seed, **kw)
    r["spec"]["train_batch_size"] = train_batch_size
    return r


def put_h100(store, frameworks=("pytorch", "jax")):
    """The full-size 'ResNet-50 · train batch 32' spec of jax_pytorch_h100, one seed."""
    for fw in frameworks:
        store.put(f"h100-{fw}", preset_results(fw, 0, train_batch_size=32, dataset="imagenet100", resolution=224,
                                               architecture="resnet50", batch_sizes=(1, 8, 32, 128), epochs=2,
                                               classes=100))


def put_variance(store, seeds=(0, 1, 2)):
    """The reduced 'Architecture 1 · MNIST' spec of tf_keras_variance (14 px, 1 epoch)."""
    for seed in seeds:
        for fw in ("keras", "tensorflow"):
            store.put(f"fan-{fw}-{seed}", preset_results(fw, seed, train_batch_size=32, dataset="mnist",
                                                          resolution=14, architecture="fan_arch1", epochs=1,
                                                          batch_sizes=(1, 32, 128), gpu=False))


# -- the Papers page --------------------------------------------------------------------------
def test_papers_page_empty_store_shows_the_papers_figures_and_data_states():
    at = app("pages/papers.py")
    box = at.selectbox(key="papers_preset")
    assert len(box.options) == 5 and box.value == "pathmnist_cnn"
    t = texts(at)
    assert "Comparative Analysis of CNN Performance in Keras, PyTorch and JAX on PathMNIST" in t
    assert "not stated in the paper" in t  # its hardware
    assert "needs download" in t and "pathmnist" in t  # a state, not an error
    assert not at.error
    wide = frame_with(at, "Keras ours", "Keras paper")
    time_row = wide[wide["metric"] == "training time"].iloc[0]
    assert time_row["Keras paper"] == "642.59" and time_row["Keras ours"] == "no run yet"
    assert "Table 2" in set(wide["source"])
    assert at.query_params.get("preset") == "pathmnist_cnn"


@pytest.mark.parametrize("name,state", [("bloodmnist_resnet", "needs download"), ("cifar10_cnn", "needs download"),
                                        ("jax_pytorch_h100", "needs a local folder")])
def test_papers_page_data_not_here_is_a_state(name, state):
    at = app("pages/papers.py", {"preset": name})
    assert at.selectbox(key="papers_preset").value == name
    assert state in texts(at) and not at.error and not at.exception
    specs = frame_with(at, "data here", "our ok runs")
    assert state in set(specs["data here"])


def test_papers_page_cifar_host_figures_are_not_measured_never_zero(store):
    for seed in (0, 1):
        for fw in ("pytorch", "keras"):
            store.put(f"c-{fw}-{seed}", preset_results(fw, seed, train_batch_size=32, dataset="cifar10",
                                                        resolution=32, architecture="cifar_cnn", epochs=10))
    at = app("pages/papers.py", {"preset": "cifar10_cnn"})
    wide = frame_with(at, "PyTorch ours", "PyTorch paper")
    cpu = wide[wide["metric"] == "CPU utilisation"].iloc[0]
    assert cpu["PyTorch ours"] == "not measured by the lab" and cpu["PyTorch paper"] == "68"
    acc = wide[wide["metric"] == "test accuracy"].iloc[0]
    assert acc["PyTorch paper"] == "73" and acc["PyTorch ours"] not in ("no run yet", "not measured", "0")
    assert 0 < float(acc["PyTorch ours"]) <= 100  # a fraction shown in the paper's %


def test_papers_page_h100_ours_beside_the_paper(store):
    put_h100(store)
    at = app("pages/papers.py", {"preset": "jax_pytorch_h100"})
    assert not at.error
    spec_box = at.selectbox(key="papers_spec_jax_pytorch_h100")
    assert spec_box.value == "ResNet-50 · train batch 32"  # the spec with our figures comes first
    wide = frame_with(at, "PyTorch ours", "PyTorch paper", "JAX/Flax ours", "JAX/Flax paper")
    row = wide[wide["metric"] == "inference throughput, batch 1"].iloc[0]
    expected = make_result("pytorch", 0, batch_sizes=(1,))["inference"][0]["throughput_images_per_s"]
    assert row["PyTorch paper"] == "498" and row["JAX/Flax paper"] == "774"
    assert float(row["PyTorch ours"].replace(",", "")) == pytest.approx(expected, rel=1e-3)
    mem = wide[wide["metric"] == "inference peak memory, batch 1"].iloc[0]
    assert mem["unit"] == "MB" and float(mem["PyTorch ours"]) == pytest.approx(50.2, rel=1e-3)  # bytes -> MB
    t = texts(at)
    assert "NVIDIA H100 80GB HBM3" in t and "H100 NVL" in t  # our hardware and the paper's
    assert "full size" in t
    assert "ImageNet-100 is a local folder" in t  # the preset's notes
    # every spec at once
    spec_box.set_value("all").run()
    assert len(frame_with(at, "PyTorch ours")) > len(wide)


def test_papers_page_variance_preset_with_repeats(store):
    put_variance(store)
    at = app("pages/papers.py", {"preset": "tf_keras_variance"})
    assert not at.exception and not at.error
    wide = frame_with(at, "Keras ours", "TensorFlow ours")
    var = wide[wide["metric"] == "training time (variance)"].iloc[0]
    assert var["unit"] == "s^2" and var["Keras paper"] == "19.58"
    assert var["Keras ours"] not in ("no run yet", "needs ≥ 2 repeats")
    acc = wide[wide["metric"] == "test accuracy"].iloc[0]
    assert acc["Keras paper"] == "99.05" and 0 < float(acc["Keras ours"]) <= 100
    t = texts(at)
    assert "reduced for a CPU" in t and "CPU AMD EPYC 9454" in t and "Tesla K80" in t
    tests = frame_with(at, "paper t", "our t")
    row = tests[(tests["spec"] == "Architecture 1 · MNIST") & (tests["metric"] == "training time")].iloc[0]
    assert row["paper t"] == 44.76 and row["our t"] != "—" and "significant" in row["ours"]
    other = tests[tests["spec"] == "Architecture 2 · MNIST"].iloc[0]
    assert other["ours"] == "no run yet"


def test_papers_page_one_repeat_variance_needs_repeats(store):
    put_variance(store, seeds=(0,))
    at = app("pages/papers.py", {"preset": "tf_keras_variance"})
    wide = frame_with(at, "Keras ours")
    assert wide[wide["metric"] == "training time (variance)"].iloc[0]["Keras ours"] == "needs ≥ 2 repeats"
    assert "fewer than 2 repeats" in frame_with(at, "paper t")["ours"].iloc[0]


def test_papers_page_button_opens_the_preset_on_the_run_page():
    at = app("pages/papers.py", {"preset": "bloodmnist_resnet"})
    at.button(key="papers_to_run").click().run()
    assert not at.exception
    assert at.selectbox(key="preset_name").value == "bloodmnist_resnet"
    assert "Run a comparison" in [t.value for t in at.title]


# -- the Run page's preset panel ----------------------------------------------------------------
def test_run_page_preset_fills_the_form():
    from engines.frameworks import installed as framework_installed

    at = app("pages/run.py")
    at.selectbox(key="preset_name").set_value("tf_keras_variance").run()
    at.toggle(key="preset_reduced").set_value(True).run()
    assert "1 epoch instead of 20" in texts(at)  # the reduced description
    specs = frame_with(at, "spec", "data here")
    assert len(specs) == 6 and set(specs["epochs"]) == {1} and set(specs["repeats"]) == {3}
    assert "needs a local folder" in set(specs["data here"])  # breast histology
    chosen = at.multiselect(key="preset_specs_tf_keras_variance_1").value
    assert "Architecture 1 · breast histology" not in chosen and "Architecture 1 · MNIST" in chosen
    at.selectbox(key="preset_form_spec_tf_keras_variance_1").set_value("Architecture 2 · Fashion-MNIST").run()
    at.button(key="preset_load").click().run()
    assert not at.exception
    assert at.selectbox(key="dataset").value == "fashion_mnist"
    assert at.selectbox(key="resolution").value == 14
    assert at.selectbox(key="architecture").value == "fan_arch2"
    assert at.selectbox(key="optimizer").value == "sgd"
    assert at.number_input(key="lr").value == pytest.approx(0.01)
    assert at.number_input(key="epochs").value == 1 and at.number_input(key="repeats").value == 3
    assert at.number_input(key="train_batch").value == 32
    assert at.checkbox(key="fw_keras").value is framework_installed("keras")
    assert at.checkbox(key="fw_tensorflow").value is framework_installed("tensorflow")
    assert at.checkbox(key="fw_pytorch").value is False and at.checkbox(key="fw_jax").value is False
    assert "The form below holds **Architecture 2 · Fashion-MNIST**" in texts(at)
    assert not at.error


def test_run_page_preset_synthetic_and_folder_options():
    at = app("pages/run.py")
    at.selectbox(key="preset_name").set_value("jax_pytorch_h100").run()
    at.toggle(key="preset_reduced").set_value(True).run()
    assert len(frame_with(at, "spec", "data here")) == 4
    at.button(key="preset_load").click().run()
    assert at.selectbox(key="dataset").value == "synthetic"
    assert at.number_input(key="syn_classes").value == 100 and at.number_input(key="syn_train").value == 256
    assert at.text_input(key="batch_sizes").value == "1, 8, 32"
    assert at.number_input(key="warmup").value == 2 and at.number_input(key="measure").value == 10
    assert at.selectbox(key="architecture").value == "resnet50"
    # breast histology: max_per_class has no field of its own; it is carried and can be dropped
    at.selectbox(key="preset_name").set_value("tf_keras_variance").run()
    at.selectbox(key="preset_form_spec_tf_keras_variance_1").set_value("Architecture 1 · breast histology").run()
    at.button(key="preset_load").click().run()
    assert "max_per_class = 300" in texts(at)
    assert "dataset" in at.error[0].value.lower()  # the folder is missing: a message, not a crash
    at.button(key="preset_extra_clear").click().run()
    assert "max_per_class" not in texts(at)


def test_run_page_queues_the_chosen_preset_specs():
    from engines.runs.queue import JobQueue

    at = app("pages/run.py")
    at.selectbox(key="preset_name").set_value("bloodmnist_resnet").run()
    at.toggle(key="preset_reduced").set_value(True).run()
    at.multiselect(key="preset_specs_bloodmnist_resnet_1").set_value(["BloodMNIST 64 px"]).run()
    assert at.button(key="preset_submit").label == "Queue 1 spec"
    at.button(key="preset_submit").click().run()
    assert not at.exception
    jobs = at.session_state["preset_jobs"]["jobs"]
    assert list(jobs) == ["BloodMNIST 64 px"]
    q = JobQueue()
    status = q.status(jobs["BloodMNIST 64 px"])
    assert status["spec"]["resolution"] == 64 and status["spec"]["epochs"] == 2 and status["spec"]["repeats"] == 2
    assert "Papers" in texts(at) and jobs["BloodMNIST 64 px"] in texts(at)
    q.cancel(jobs["BloodMNIST 64 px"])


# -- repeats and statistics on the result pages ---------------------------------------------------
def test_statistics_with_three_seeds(store):
    fill_store(store, seeds=(0, 1, 2))
    at = app("pages/speed.py")
    assert "Repeats & statistics" in [h.value for h in at.header]
    summary = frame_with(at, "mean", "std", "min", "max", "ci95_low", "ci95_high")
    row = summary[(summary["metric"] == "training time (total)") & (summary["framework"] == "keras")].iloc[0]
    assert row["n"] == 3 and row["std"] != "needs ≥ 2 repeats"
    assert at.selectbox(key="stats_metric_speed").value == "train.total_time_s"
    tests = frame_with(at, "framework A", "framework B", "p", "effect size (Hedges' g)")
    assert len(tests) == 3  # keras-pytorch, keras-jax, pytorch-jax
    # Welch's sentences of the statistics section (the summary box at the top has its own)
    sentences = [m.value for m in at.markdown if "faster than" in str(m.value) and "**Most accurate:**" not in m.value]
    assert len(sentences) == 3 and all("significant" in s and "trains" in s for s in sentences)
    assert any("JAX/Flax trains" in s and "faster than Keras" in s for s in sentences)  # the table's labels
    n_charts = len(at.get("vega_lite_chart"))
    at.selectbox(key="stats_metric_speed").set_value("inference.32.throughput_images_per_s").run()
    assert not at.exception and len(at.get("vega_lite_chart")) == n_charts

    at.switch_page("pages/accuracy.py").run()
    assert not at.exception
    assert at.selectbox(key="stats_metric_accuracy").value == "evaluation.accuracy"
    acc = [m.value for m in at.markdown if ("accurate than" in str(m.value) or "same mean" in str(m.value))
           and "**Most accurate:**" not in m.value]
    assert len(acc) == 3 and all("significant" in s or "exact" in s for s in acc)


def test_statistics_with_one_seed_says_no_test():
    from engines.runs.store import ResultStore

    fill_store(ResultStore())
    for page in ("pages/speed.py", "pages/accuracy.py"):
        at = app(page)
        t = texts(at)
        assert "Repeats & statistics" in t and "no test is possible" in t
        assert "keras 1, pytorch 1, jax 1" in t


# -- pure shaping -----------------------------------------------------------------------------------
def test_repeats_frames_match_numpy_and_scipy():
    from labui import repeats as RP

    res = [make_result(fw, s) for s in (0, 1, 2) for fw in ("keras", "jax")]
    keras = [r["train"]["total_time_s"] for r in res if r["framework"] == "keras"]
    jax = [r["train"]["total_time_s"] for r in res if r["framework"] == "jax"]
    summary = RP.summary_frame(res, ["train.total_time_s"]).set_index("framework")
    assert summary.loc["keras", "mean"] == pytest.approx(np.mean(keras))
    assert summary.loc["keras", "std"] == pytest.approx(np.std(keras, ddof=1))
    # a time cannot be negative: its interval is a t interval on the logarithm
    half = sps.t.ppf(0.975, 2) * np.std(np.log(keras), ddof=1) / np.sqrt(3)
    assert summary.loc["keras", "ci95_high"] == pytest.approx(np.exp(np.mean(np.log(keras)) + half))
    assert summary.loc["keras", "ci95_low"] == pytest.approx(np.exp(np.mean(np.log(keras)) - half))
    acc = RP.summary_frame(res, ["evaluation.accuracy"]).set_index("framework")  # a fraction: the t interval
    acc_values = [r["evaluation"]["accuracy"] for r in res if r["framework"] == "keras"]
    acc_half = sps.t.ppf(0.975, 2) * np.std(acc_values, ddof=1) / np.sqrt(3)
    assert acc.loc["keras", "ci95_high"] == pytest.approx(min(1.0, np.mean(acc_values) + acc_half))
    tests = RP.tests_frame(res, ["train.total_time_s"])
    ref = sps.ttest_ind(keras, jax, equal_var=False)
    assert tests["t"].iloc[0] == pytest.approx(ref.statistic) and tests["p"].iloc[0] == pytest.approx(ref.pvalue)
    assert RP.seeds_per_framework(res) == {"keras": 3, "jax": 3} and RP.testable(res)
    assert list(RP.values_frame(res, "evaluation.accuracy")["framework"]) == ["keras"] * 3 + ["jax"] * 3
    assert RP.axis_title("train.total_time_s") == "training time (total) (s)"
    assert RP.inference_metrics(res) == [f"inference.{b}.throughput_images_per_s" for b in (1, 32, 128, 1024)]
    assert RP.identical_pairs(res, "evaluation.accuracy") == []
    twins = [make_result("keras", s) for s in (0, 1)]
    twins += [dict(r, framework="tensorflow") for r in twins]
    assert RP.identical_pairs(twins, "evaluation.accuracy") == [("keras", "tensorflow")]
    one = [make_result(fw) for fw in ("keras", "jax")]
    assert not RP.testable(one)
    assert "no test is possible" in RP.tests(one, "train.total_time_s")[0]["sentence"]


def test_repeats_chart_has_units_colours_and_ci():
    import json

    from engines.frameworks import FRAMEWORKS
    from labui import charts
    from labui import repeats as RP

    res = [make_result(fw, s) for s in (0, 1, 2) for fw in ("keras", "pytorch")]
    c = charts.repeats_chart(RP.values_frame(res, "train.total_time_s"), RP.ci_frame(res, "train.total_time_s"),
                             RP.axis_title("train.total_time_s"), "t")
    text = json.dumps(c.to_dict())
    assert "training time (total) (s)" in text and FRAMEWORKS["keras"].color in text and "ci95_low" in text


def test_papers_shaping_units_and_form_state():
    from engines.analysis.presets import get_preset
    from labui import papers

    p = get_preset("pathmnist_cnn")
    res = [make_result(fw, s, dataset="pathmnist", resolution=28, architecture="pathmnist_cnn", epochs=2,
                       classes=9) for s in (0, 1, 2) for fw in ("keras", "pytorch", "jax")]
    for r in res:
        r["spec"]["train_batch_size"] = 32
    assert papers.kinds_present(p, res) == ["reduced"]  # 2 epochs: the CPU-reduced form
    long = papers.side_by_side_frame(p, res)
    acc = long[(long["metric_path"] == "train.final_accuracy") & (long["framework"] == "keras")].iloc[0]
    finals = [r["train"]["epochs"][-1]["accuracy"] * 100 for r in res if r["framework"] == "keras"]
    assert acc["unit"] == "%" and acc["ours_value"] == pytest.approx(np.mean(finals)) and acc["n"] == 3
    assert papers.fmt_value(12345.6) == "12,346" and papers.fmt_value(0.91234) == "0.9123"
    assert papers.fmt_value(None) == "not measured" and papers.fmt_paper(0.9) == "0.9"
    state, extra, warnings = papers.form_state(
        dict(get_preset("tf_keras_variance").labelled_specs(True))["Architecture 1 · breast histology"].to_dict(),
        installed={"keras"})
    assert state["resolution"] == 25 and state["fw_keras"] and not state["fw_tensorflow"]
    assert extra == {"max_per_class": 300} and warnings == ["tensorflow is not installed here, so it is left out"]
    # the Compile control: a spec's None / True / False, and back to the spec's value
    assert state["compile"] == "per framework"
    for value in (None, True, False):
        choice = papers.compile_choice(value)
        assert papers.COMPILE_CHOICES[choice] is value


def test_papers_page_a_failed_framework_says_so(store):
    put_h100(store, frameworks=("pytorch",))
    bad = preset_results("jax", 0, train_batch_size=32, dataset="imagenet100", resolution=224,
                         architecture="resnet50", epochs=2, status="error",
                         message="invalid job spec: cudnn_benchmark: applies to pytorch only")
    store.put("h100-jax-bad", bad)
    at = app("pages/papers.py", {"preset": "jax_pytorch_h100"})
    wide = frame_with(at, "PyTorch ours", "JAX/Flax ours")
    row = wide[wide["metric"] == "inference throughput, batch 1"].iloc[0]
    assert row["JAX/Flax ours"] == "run failed" and row["PyTorch ours"] not in ("run failed", "no run yet")
    assert any("applies to pytorch only" in w.value for w in at.warning)
