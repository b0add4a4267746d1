"""Unit tests of labui's data shaping and chart builders on realistic results
(tests/sample_results.py), no Streamlit needed."""
import json
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
from conftest import REPO
from sample_results import make_result


# -- unit tests of labui.results ---------------------------------------------------------------
def _results():
    return [make_result(fw, s, oom_from=1024 if fw == "jax" else None) for s in (0, 1)
            for fw in ("keras", "pytorch", "jax")]


def test_inference_summary_means_over_seeds_and_keeps_oom():
    from labui import results as R

    inf = R.inference_summary(_results())
    assert list(inf["framework"].unique()) == ["keras", "pytorch", "jax"]
    assert set(inf["n"]) == {2}
    jax1024 = inf[(inf["framework"] == "jax") & (inf["batch_size"] == 1024)].iloc[0]
    assert jax1024["status"] == "oom" and pd.isna(jax1024["throughput_images_per_s"])
    assert len(R.oom_points(inf)) == 1
    raw = R.inference_frame(_results())
    k32 = raw[(raw["framework"] == "keras") & (raw["batch_size"] == 32)]["throughput_images_per_s"].mean()
    assert inf[(inf["framework"] == "keras") & (inf["batch_size"] == 32)]["throughput_images_per_s"].iloc[0] == k32


def test_ratio_table_fastest_is_one():
    from labui import results as R

    res = _results()
    table = R.ratio_table(R.inference_summary(res), R.train_summary(res)).set_index("framework")
    assert table.loc["jax", "throughput at batch 32"] == 1.0
    assert table.loc["keras", "throughput at batch 32"] < 1.0
    assert pd.isna(table.loc["jax", "throughput at batch 1024"])
    assert table["training speed"].max() == 1.0
    assert R.fastest(R.inference_summary(res))[32] == "jax"


def test_unmeasured_stays_null_and_displays_not_measured():
    from labui import results as R
    from labui.text import NOT_MEASURED, fmt_bytes

    cpu = [make_result(fw, gpu=False, extras=False) for fw in ("keras", "pytorch")]
    assert R.energy_long(cpu).empty and R.memory_long(cpu).empty and R.power_frame(cpu).empty
    rss = R.memory_long([make_result("jax", gpu=False)])
    assert set(rss["measure"]) == {"process peak RSS"} and set(rss["phase"]) == {"training"}
    assert R.energy_notes([make_result("jax", gpu=False)]) == [
        "not measured: the run used the CPU (NVML reads NVIDIA GPUs only)"]
    train = R.train_summary(cpu)
    assert train["energy_j"].isna().all()
    shown = R.display(train, {"energy_j": ",.3g", "peak_memory_bytes": fmt_bytes})
    assert set(shown["energy_j"]) == {NOT_MEASURED} and set(shown["peak_memory_bytes"]) == {NOT_MEASURED}


def test_memory_energy_cpu_extras_are_found():
    from labui import results as R

    res = _results()
    mem = R.memory_long(res)
    assert {"allocator peak", "NVML process memory"} <= set(mem["measure"])
    assert "training" in set(mem["phase"]) and "inference, batch 32" in set(mem["phase"])
    energy = R.energy_long(res)
    assert "training, per epoch" in set(energy["what"])
    assert (R.power_frame(res)["watts"] > 0).all()
    assert set(R.cpu_frame(res)["measure"]) == {"CPU cores used (mean)"}


def test_accuracy_frames():
    from labui import results as R

    res = _results()
    m = R.metrics_frame(res)
    assert list(m["framework"]) == ["keras", "pytorch", "jax"] and m["accuracy"].between(0, 1).all()
    pc = R.per_class_frame(res)
    assert len(pc) == 30 and list(pc["class"][:3]) == ["0", "0", "0"]
    cm = R.confusion_long(res, normalize=True)
    sums = cm.groupby(["framework", "true"])["value"].sum()
    assert np.allclose(sums, 1.0)
    counts = R.confusion_long(res)
    assert counts.groupby("framework")["value"].sum().round().eq(269).all()
    curves = R.curves_long(R.epochs_frame(res))
    assert set(curves["split"]) == {"training", "validation"} and set(curves["metric"]) == {"loss", "accuracy"}


def test_exports_and_runs_frame():
    from labui import results as R

    res = _results()
    for i, r in enumerate(res):
        r["key"], r["created_at"] = f"k{i}", 1_700_000_000 + i
    runs = R.runs_frame(R.run_rows(res))
    assert runs["key"].iloc[0] == "k5"  # newest first
    csv = R.export_csv(res)
    assert csv.splitlines()[0].count("inference.batch_size") == 1
    assert len(csv.splitlines()) == 1 + 6 * 4
    assert json.loads(R.export_json(res))[0]["framework"] == "keras"
    env = R.environment_rows(res[0])
    assert "version of torch" in set(env["what"])


def test_charts_build_with_units_colours_and_log_axis():
    from engines.frameworks import FRAMEWORKS
    from labui import charts
    from labui import results as R

    res = _results()
    spec = charts.throughput_chart(R.inference_summary(res)).to_dict()
    text = json.dumps(spec)
    assert '"type": "log"' in text and "throughput (images/s)" in text and "batch size" in text
    assert FRAMEWORKS["jax"].color in text and "OOM" in text
    for c in (charts.latency_chart(R.inference_summary(res)), charts.epoch_time_chart(R.epochs_frame(res)),
              charts.curves_chart(R.curves_long(R.epochs_frame(res)), "accuracy"),
              charts.per_class_chart(R.per_class_frame(res)),
              charts.confusion_chart(R.confusion_long(res), "jax", False)):
        c.to_dict()


def _vega_ternary(expr: str, label: str) -> str:
    """Evaluates the one Vega expression form legend_labels writes (a chain of
    `datum.label === "a" ? "A" : ...` ending in `datum.label`), for `datum.label` = label."""
    import re

    rest = expr
    while rest != "datum.label":
        m = re.fullmatch(r'datum\.label === ("(?:[^"\\]|\\.)*") \? ("(?:[^"\\]|\\.)*") : (.*)', rest, re.S)
        assert m, f"not the expected form: {rest!r}"
        if json.loads(m.group(1)) == label:
            return json.loads(m.group(2))
        rest = m.group(3)
    return label


def test_chart_legends_show_the_frameworks_labels_and_the_data_keep_their_names():
    from engines.frameworks import FRAMEWORKS
    from labui import charts
    from labui import results as R

    res = _results()
    spec = charts.throughput_chart(R.inference_summary(res)).to_dict()
    colors = [v for v in _encodings(spec, "color") if v.get("legend")]
    assert colors and all("labelExpr" in v["legend"] for v in colors)
    domain = colors[0]["scale"]["domain"]
    assert set(domain) == {r["framework"] for r in res}
    for name in domain:
        assert _vega_ternary(colors[0]["legend"]["labelExpr"], name) == FRAMEWORKS[name].label
    assert _vega_ternary(colors[0]["legend"]["labelExpr"], "mxnet") == "mxnet"  # unknown: as it is
    assert {r["framework"] for r in res} <= set(json.dumps(spec["datasets"]).split('"'))  # data: the names


def _encodings(spec, channel: str) -> list[dict]:
    """Every `channel` encoding in a (layered) Vega-Lite spec."""
    found = [spec["encoding"][channel]] if channel in spec.get("encoding", {}) else []
    for layer in spec.get("layer", []):
        found += _encodings(layer, channel)
    return found

def test_labui_and_pages_import_no_framework():
    """Static check: nothing under labui/ or pages/ (or app.py) names a framework module."""
    import ast

    banned = {"torch", "tensorflow", "jax", "keras", "flax", "optax", "jaxlib"}
    files = [REPO / "app.py", *(REPO / "labui").glob("*.py"), *(REPO / "pages").glob("*.py")]
    for path in files:
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names = [node.module]
            for n in names:
                assert n.split(".")[0] not in banned, f"{path.name} imports {n}"


def test_every_page_runs_without_importing_a_framework(tmp_path):
    """Dynamic check: run every page with AppTest in a fresh interpreter, then look at sys.modules."""
    code = f"""
import os, sys
os.environ["LAB_CACHE_DIR"] = {str(tmp_path)!r}
from streamlit.testing.v1 import AppTest
at = AppTest.from_file({str(REPO / "app.py")!r}, default_timeout=120).run()
assert not at.exception, at.exception
for p in ("run", "speed", "energy_memory", "accuracy", "papers", "runs"):
    at.switch_page(f"pages/{{p}}.py").run()
    assert not at.exception, (p, at.exception)
bad = [m for m in ("torch", "tensorflow", "jax", "keras", "flax") if m in sys.modules]
print("imported:", bad)
sys.exit(1 if bad else 0)
"""
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]


def test_a_markdown_table_shows_every_cell_as_it_is():
    """The home page's tables (labui.text.markdown_table): a cell's `|` cannot split its
    row, and Markdown, LaTeX, emoji codes or links in a value are shown as text, not drawn."""
    from helpers import markdown_tables

    from labui.text import markdown_table

    assert markdown_table([{"a": 1, "b c": None}]) == "| a | b c |\n| --- | --- |\n| 1 |  |"
    nasty = ["x | y", "*bold* _it_ `code`", "$x^2$ costs $3", ":smile: :material/home:", "[link](http://a)",
             "<b>html</b>", "# not a heading", "1. not a list", "ends in a backslash \\", "two\nlines", "./lab install"]
    rows = [{"framework": f"fw{i}", "text": text, "column | with pipe": i} for i, text in enumerate(nasty)]

    class Page:  # what AppTest gives markdown_tables: elements with a value
        markdown = [type("Markdown", (), {"value": markdown_table(rows)})()]

    (shown,) = markdown_tables(Page)
    assert [row["text"] for row in shown] == [" ".join(text.split()) for text in nasty]  # one line per row
    assert list(shown[0]) == ["framework", "text", "column | with pipe"]
    assert markdown_table([]) == ""


# -- a comparison's label, the summary, the checks ------------------------------------------------
def test_comparison_label_names_what_differs_from_the_default():
    from engines.runs.spec import RunSpec, differences_from_default
    from labui.text import comparison_label, setting_words

    default = RunSpec(frameworks=("keras", "pytorch"))
    assert differences_from_default(default.to_dict()) == {}
    tweak = default.replace(epochs=1, optimizer="sgd", precision="fp32")
    assert differences_from_default(tweak.to_dict()) == {"epochs": 1, "optimizer": "sgd", "precision": "fp32"}
    assert setting_words(differences_from_default(tweak.to_dict())) == ["1 epoch", "sgd", "fp32"]
    # the architecture's own learning rate and batch are its defaults, whatever the architecture
    other = RunSpec(dataset="synthetic", resolution=28, architecture="blood_resnet", frameworks=("jax",))
    assert differences_from_default(other.to_dict()) == {}
    row = {"dataset": "digits", "resolution": 8, "architecture": "fan_arch1", "frameworks": ["keras", "pytorch"],
           "seeds": [0], "created_at": 0, "statuses": {"ok": 2}}
    plain = comparison_label({**row, "spec": default.to_dict()})
    changed = comparison_label({**row, "spec": tweak.to_dict()})
    assert "defaults" in plain and plain != changed and "1 epoch, sgd, fp32" in changed


def test_summary_names_the_best_by_how_much_and_significance():
    from labui import summary

    one = [make_result(fw, 0) for fw in ("keras", "pytorch", "jax")]
    lines = summary.headline(one)
    assert lines[0].startswith("**Most accurate:**") and "points more accurate than" in lines[0]
    assert "no test of significance" in lines[0]
    assert lines[1].startswith("**Fastest to train:** JAX/Flax") and "faster than" in lines[1]
    assert lines[2].startswith("**Fastest inference at batch 1024:** JAX/Flax")
    repeats = [make_result(fw, s) for s in (0, 1, 2) for fw in ("keras", "pytorch", "jax")]
    assert all("significant" in line or "exact" in line for line in summary.headline(repeats)[:3])
    failed = one + [make_result("tensorflow", 0, status="error", message="boom")]
    assert "TensorFlow (error)" in summary.headline(failed)[-1]
    assert summary.headline([make_result("jax", 0, status="error")]) == ["**Not in these figures:** JAX/Flax "
                                                                         "(error); see the message below."]


def test_the_summary_and_the_settings_line_say_which_frameworks_compiled():
    """A comparison that left compile to each framework ran JAX compiled beside Keras and
    PyTorch uncompiled: the headline says so beside the times, and the settings line names
    who compiled from the results themselves."""
    from engines.runs.spec import RunSpec
    from labui import summary
    from labui.widgets import _spec_line

    mixed = [make_result(fw, 0) for fw in ("keras", "pytorch", "jax")]
    for r in mixed:
        r["spec"]["compile"] = r["framework"] == "jax"
    line = [x for x in summary.headline(mixed) if x.startswith("**Compiled:**")]
    assert line == ["**Compiled:** JAX/Flax; **not compiled:** Keras, PyTorch, each framework's faster setting "
                    "for a short run on a CPU. To compare them all compiled, or all not, set Compile on the Run page."]
    assert summary.compiled(mixed) == {"keras": False, "pytorch": False, "jax": True}
    spec = {**RunSpec().to_dict(), "compile": None}
    assert "compile per framework (on in JAX/Flax; off in Keras, PyTorch)" in _spec_line(spec, {}, mixed)
    # one setting for all: no such line, and the settings line says it plainly
    same = [make_result(fw, 0) for fw in ("keras", "pytorch", "jax")]
    assert not any(x.startswith("**Compiled:**") for x in summary.headline(same))
    assert "compile on ·" in _spec_line({**spec, "compile": True}, {}, same)
    # a framework that failed is not in the figures, so not in the headline's line either
    mixed[2]["status"] = "error"
    assert not any(x.startswith("**Compiled:**") for x in summary.headline(mixed))


def test_accuracy_gap_warning_and_its_likely_cause():
    from engines.analysis import health

    fine = make_result("pytorch", 0)
    assert health.accuracy_gaps([fine]) == []
    lagging = make_result("jax", 0)
    lagging["train"]["epochs"][-1].update(accuracy=0.95, val_accuracy=0.55)
    lagging["spec"]["recompute_batchnorm"] = False
    (gap,) = health.accuracy_gaps([fine, lagging])
    assert gap["framework"] == "jax" and gap["gap"] == pytest.approx(0.40)
    assert "40 points" in gap["sentence"] and "recompute them" in gap["sentence"]
    # recomputed statistics: the figure after the pass is the one judged
    lagging["spec"]["recompute_batchnorm"] = True
    lagging["train"]["batchnorm"] = {"recomputed": True, "val_accuracy_before": 0.55, "val_accuracy_after": 0.9}
    assert health.accuracy_gaps([lagging]) == []


def test_framework_gap_note_says_when_dropout_masks_can_explain_it():
    """Issue 20: a gap over 2 points from one run each, with dropout in the architecture, is
    said to be possibly the masks; over repeats only a significant gap is flagged, as more
    than the masks; without dropout a single-run gap gets no mask note."""
    from engines.analysis import health
    from labui import summary

    def run(fw, seed, acc, arch="pathmnist_cnn"):
        r = make_result(fw, seed, architecture=arch)
        r["evaluation"]["accuracy"] = acc
        return r

    one_each = [run("keras", 0, 0.78), run("pytorch", 0, 0.74)]
    (gap,) = health.framework_gaps(one_each)
    assert gap["dropout"] and gap["p"] is None and gap["difference"] == pytest.approx(0.04)
    assert "PyTorch's test accuracy is 4.0 points below Keras's" in gap["sentence"]
    assert "its own masks" in gap["sentence"] and "repeats" in gap["sentence"]
    assert gap["sentence"] in summary.warnings(one_each)
    assert health.framework_gaps([run("keras", 0, 0.78), run("pytorch", 0, 0.77)]) == []  # within 2 points
    assert health.framework_gaps([run("keras", 0, 0.78, "cifar_cnn"), run("pytorch", 0, 0.74, "cifar_cnn")]) == []

    noisy = [run(fw, s, acc) for fw, accs in (("keras", (0.78, 0.72, 0.80)), ("pytorch", (0.74, 0.79, 0.70)))
             for s, acc in enumerate(accs)]
    assert health.framework_gaps(noisy) == []  # 2.3 points apart, far from significant
    lagging = [run(fw, s, acc) for fw, accs in (("keras", (0.78, 0.79, 0.80)), ("pytorch", (0.73, 0.731, 0.732)))
               for s, acc in enumerate(accs)]
    (gap,) = health.framework_gaps(lagging)
    assert gap["significant"] and gap["p"] < 0.05 and (gap["n_a"], gap["n_b"]) == (3, 3)
    assert "over 3 and 3 repeats (p " in gap["sentence"] and "more than the masks" in gap["sentence"]


def test_batchnorm_frame_coinciding_curves_and_confusion_difference():
    from labui import charts
    from labui import results as R

    a, b = make_result("keras", 0), make_result("tensorflow", 0)
    b["train"]["epochs"] = [dict(e) for e in a["train"]["epochs"]]  # the same numbers, epoch by epoch
    c = make_result("pytorch", 0)
    curves = R.curves_long(R.epochs_frame([a, b, c]))
    assert R.coinciding_curves(curves, "loss") == [(["keras", "tensorflow"], True)]
    b["train"]["epochs"][0]["loss"] *= 1.001  # off by less than 1% of the chart's height: still one line
    assert R.coinciding_curves(R.curves_long(R.epochs_frame([a, b, c])), "loss") == [(["keras", "tensorflow"], False)]
    b["train"]["epochs"][0]["loss"] *= 1.5
    assert R.coinciding_curves(R.curves_long(R.epochs_frame([a, b, c])), "loss") == []
    assert R.batchnorm_frame([a]).empty
    a["train"]["batchnorm"] = {"recomputed": True, "val_accuracy_before": 0.5, "val_accuracy_after": 0.8,
                               "layers": 15, "images": 512, "time_s": 1.5}
    bn = R.batchnorm_frame([a])
    assert bn.loc[0, "val_accuracy_after"] == 0.8 and bn.loc[0, "framework"] == "keras"
    points = R.recomputed_points([a, c])
    assert points.to_dict("records") == [{"framework": "keras", "epoch": 2, "metric": "accuracy", "value": 0.8}]
    charts.curves_chart(curves, "accuracy", points).to_dict()
    cm = R.confusion_long([a, c])
    assert R.most_different_pair(R.confusion_long([a, b, c])) in (("keras", "pytorch"), ("tensorflow", "pytorch"))
    diff = R.confusion_difference(cm, "keras", "pytorch")
    assert len(diff) == 100
    ka = np.array(a["evaluation"]["confusion_matrix"])
    kc = np.array(c["evaluation"]["confusion_matrix"])
    assert diff.pivot(index="true_index", columns="predicted_index", values="value").to_numpy().tolist() == \
        (ka - kc).tolist()


def test_charts_for_a_single_batch_size_and_zero_bars_render():
    from labui import charts
    from labui import results as R

    one = [make_result(fw, 0, batch_sizes=(32,)) for fw in ("keras", "jax")]
    summary = R.inference_summary(one)
    for chart in (charts.throughput_chart(summary), charts.latency_chart(summary)):
        chart.to_dict()  # Altair validates here: a domain of None raised before
    zero = make_result("keras", 0)
    zero["evaluation"]["per_class"][3]["f1"] = 0.0
    spec = charts.per_class_chart(R.per_class_frame([zero])).to_dict()
    assert any(layer.get("mark", {}).get("type") == "text" for layer in spec["layer"])
