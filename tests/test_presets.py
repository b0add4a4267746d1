"""engines.analysis.presets and presets/*.yaml: the five papers' experiments and their figures."""
import math
import re
from pathlib import Path

import numpy as np
import pytest

from engines.analysis import presets as P
from engines.analysis import stats
from engines.datasets import dataset_state, get_info
from engines.runs.spec import RunSpec

REPO = Path(__file__).resolve().parent.parent
NAMES = ["pathmnist_cnn", "bloodmnist_resnet", "tf_keras_variance", "jax_pytorch_h100", "cifar10_cnn"]


def _pub(preset, spec_label=None, metric=None, stat="mean"):
    """framework -> published value for one spec and metric."""
    return {r["framework"]: r["value"] for r in P.published_rows(preset)
            if (spec_label is None or r["spec_label"] == spec_label) and r["metric"] == metric
            and r["stat"] == stat}


def test_the_five_presets_load_in_order():
    presets = P.list_presets()
    assert [p.name for p in presets] == NAMES
    for p in presets:
        assert p.title and p.paper["title"] and p.hardware and p.reduced_description
        assert p.paper["file"].startswith("shared/papers/")
        assert P.get_preset(p.name) == p
    with pytest.raises(KeyError, match="unknown preset"):
        P.get_preset("nope")


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("reduced", [False, True])
def test_every_spec_validates(name, reduced):
    preset = P.get_preset(name)
    specs = preset.specs(reduced=reduced)
    assert specs and all(isinstance(s, RunSpec) for s in specs)
    labels = [label for label, _ in preset.labelled_specs(reduced)]
    assert len(set(labels)) == len(labels)
    assert len(set(s.to_dict().__repr__() for s in specs)) == len(specs)


@pytest.mark.parametrize("name", NAMES)
def test_cpu_reduced_is_smaller(name):
    preset = P.get_preset(name)
    full = dict(preset.labelled_specs(False))
    reduced = preset.labelled_specs(True)
    assert len(reduced) <= len(full)
    for label, r in reduced:
        f = full[label]
        assert r.epochs <= f.epochs and r.repeats <= f.repeats
        assert r.epochs * r.repeats < f.epochs * f.repeats or r.resolution < f.resolution
        assert r.frameworks == f.frameworks and r.architecture == f.architecture


def test_presets_fill_the_issues_settings():
    (path,) = P.get_preset("pathmnist_cnn").specs()
    assert (path.dataset, path.resolution, path.architecture, path.epochs, path.repeats) == (
        "pathmnist", 28, "pathmnist_cnn", 20, 10)
    assert path.train_batch_size == 32 and path.learning_rate == 0.00027092 and path.class_weights
    assert set(path.frameworks) == {"keras", "pytorch", "jax"}
    blood = P.get_preset("bloodmnist_resnet").specs()
    assert [s.resolution for s in blood] == [28, 64]
    assert all(s.train_batch_size == 128 and s.epochs == 20 for s in blood)
    fan = P.get_preset("tf_keras_variance").specs()
    assert {(s.architecture, s.dataset) for s in fan} == {
        (a, d) for a in ("fan_arch1", "fan_arch2") for d in ("mnist", "fashion_mnist", "breast_histology_idc")}
    assert all(s.frameworks == ("keras", "tensorflow") and s.repeats == 15 and s.learning_rate == 0.01
               and s.train_batch_size == 32 and s.epochs == 20 for s in fan)
    assert {s.resolution for s in fan if s.dataset == "breast_histology_idc"} == {50}
    h100 = P.get_preset("jax_pytorch_h100").specs()
    assert {s.architecture for s in h100} == {"resnet50", "vit_b_16", "mobilenet_v3_small", "efficientnet_b0"}
    assert {s.train_batch_size for s in h100} == {32, 64, 128}
    assert all(s.resolution == 224 and s.batch_sizes == (1, 8, 32, 128) and s.warmup_iters == 20
               and s.measure_iters == 100 and s.epochs == 2 and s.learning_rate == 1e-4
               and s.lr_schedule == "cosine" and s.frameworks == ("pytorch", "jax") for s in h100)
    (cifar,) = P.get_preset("cifar10_cnn").specs()
    assert (cifar.dataset, cifar.architecture, cifar.frameworks) == ("cifar10", "cifar_cnn", ("pytorch", "keras"))


def test_a_preset_whose_data_is_absent_still_loads():
    preset = P.get_preset("tf_keras_variance")
    breast = [s for s in preset.specs() if s.dataset == "breast_histology_idc"]
    assert len(breast) == 2
    assert dataset_state(get_info("breast_histology_idc")).state in ("needs_folder", "ready")


# ----------------------------------------------------------------------------- published figures
def test_pathmnist_figures_match_the_issue():
    p = P.get_preset("pathmnist_cnn")
    assert _pub(p, metric="train.total_time_s") == {"keras": 642.59, "pytorch": 375.31, "jax": 343.14}
    assert _pub(p, metric="evaluation.test_inference_time_s") == {"keras": 2.304, "pytorch": 0.498, "jax": 0.279}
    assert _pub(p, metric="evaluation.accuracy") == {"keras": 0.90, "pytorch": 0.86, "jax": 0.76}
    assert {r["source"] for r in P.published_rows(p) if r["metric"] == "train.total_time_s"} == {"Table 2"}


def test_bloodmnist_figures_match_the_issue():
    p = P.get_preset("bloodmnist_resnet")
    t = "evaluation.test_inference_time_s"
    assert _pub(p, "BloodMNIST 28 px", t) == {"keras": 0.8985, "pytorch": 0.3032, "jax": 0.3620}
    assert _pub(p, "BloodMNIST 64 px", t) == {"keras": 2.0182, "pytorch": 1.5961, "jax": 1.2692}
    assert _pub(p, "BloodMNIST 28 px", "evaluation.accuracy") == {"keras": 0.9442, "pytorch": 0.9486, "jax": 0.9570}
    assert _pub(p, "BloodMNIST 64 px", "evaluation.accuracy") == {"keras": 0.9763, "pytorch": 0.9822, "jax": 0.9790}
    # Tables 3 and 4: accuracy and six macro/weighted metrics, three frameworks, two sizes
    rows = [r for r in P.published_rows(p) if r["metric"].startswith(("evaluation.macro", "evaluation.weighted"))]
    assert len(rows) == 2 * 6 * 3
    assert _pub(p, "BloodMNIST 64 px", "evaluation.weighted.f1") == {"keras": 0.9763, "pytorch": 0.9821, "jax": 0.9790}
    assert _pub(p, "BloodMNIST 28 px", "evaluation.macro.recall") == {"keras": 0.9368, "pytorch": 0.9417, "jax": 0.9489}


def test_variance_figures_match_figures_9_10_17_18():
    p = P.get_preset("tf_keras_variance")
    a1m, a2c = "Architecture 1 · MNIST", "Architecture 2 · breast histology"
    assert _pub(p, a1m, "train.total_time_s") == {"keras": 296.97, "tensorflow": 228.84}
    assert _pub(p, a1m, "train.total_time_s", "variance") == {"keras": 19.58, "tensorflow": 15.17}
    assert _pub(p, a1m, "evaluation.accuracy") == {"keras": 99.05, "tensorflow": 97.72}
    assert _pub(p, a2c, "train.total_time_s") == {"keras": 134.24, "tensorflow": 145.87}
    assert _pub(p, a2c, "evaluation.accuracy", "variance") == {"keras": 0.07, "tensorflow": 0.01}
    rows = P.published_rows(p)
    assert len(rows) == 2 * 3 * 2 * 2 * 2  # arch x dataset x metric x stat x framework
    assert {r["source"].split()[1] for r in rows} == {"9", "10", "17", "18"}


def test_h100_figures_table_one_is_table_two_at_batch_128():
    p = P.get_preset("jax_pytorch_h100")
    rn = "ResNet-50 · train batch 32"
    assert _pub(p, rn, "inference.128.throughput_images_per_s") == {"pytorch": 5915, "jax": 11739}
    assert _pub(p, rn, "inference.128.latency_ms.p50") == {"pytorch": 21.4, "jax": 10.8}
    assert _pub(p, "ViT-B/16 · train batch 32", "inference.128.throughput_images_per_s") == {"pytorch": 946, "jax": 530}
    assert _pub(p, "MobileNetV3-Small · train batch 32", "inference.1.peak_memory_bytes") == {"pytorch": 46, "jax": 322}
    # Table III: ResNet-50 at batch 128, and no JAX ViT training
    assert _pub(p, "ResNet-50 · train batch 128", "train.final_epoch_time_s") == {"pytorch": 94.7, "jax": 167.2}
    assert _pub(p, "ViT-B/16 · train batch 32", "train.energy_j_per_epoch") == {"pytorch": 151.0}
    inference = [r for r in P.published_rows(p) if r["metric"].startswith("inference.")]
    assert len(inference) == 4 * 2 * 4 * 4  # Table II: models x frameworks x batch sizes x metrics
    training = [r for r in P.published_rows(p) if r["metric"].startswith("train.")]
    assert len(training) == (4 * 3 * 2 - 3) * 4  # Table III/IV rows x (acc, time, energy, loss)


def test_cifar_figures():
    p = P.get_preset("cifar10_cnn")
    assert _pub(p, metric="evaluation.accuracy") == {"pytorch": 73, "keras": 70}
    assert _pub(p, metric="train.final_val_loss") == {"pytorch": 0.744, "keras": 0.884}
    assert _pub(p, metric="host.cpu_percent") == {"pytorch": 68, "keras": 82}
    assert _pub(p, metric="host.memory_percent") == {"pytorch": 15, "keras": 38}


@pytest.mark.parametrize("name", NAMES)
def test_every_published_figure_is_printed_in_its_paper(name):
    preset = P.get_preset(name)
    paper = REPO.parent / preset.paper["file"]
    if not paper.is_file():
        pytest.skip(f"{paper} is absent")
    text = paper.read_text(encoding="utf-8")
    numbers = set(re.findall(r"\d+(?:\.\d+)?", text.replace(",", "")))
    as_printed = {float(n) for n in numbers}
    for r in P.published_rows(preset):
        assert float(r["value"]) in as_printed, (r, "not printed in", paper.name)
        ref = re.match(r"(Table|Figure|Section) ([0-9IVX]+(?:\.[0-9A-Z]+)?)", r["source"])
        assert ref, r["source"]
        kind, number = ref.groups()
        if kind != "Section":  # sections are numbered but not always titled "Section" in the text
            assert f"{kind} {number}".lower() in text.lower(), r["source"]


def test_published_tests_reproduce_from_the_published_summaries():
    """The variance paper's own t statistics for training time follow from its means and
    variances (Welch form, 15 runs each); the lab's compare() gives the same."""
    p = P.get_preset("tf_keras_variance")
    checked = 0
    for t in p.published_tests:
        if t["metric"] != "train.total_time_s":
            continue
        checked += 1
        means = _pub(p, t["spec"], t["metric"])
        variances = _pub(p, t["spec"], t["metric"], "variance")

        def sample(fw, means=means, variances=variances):
            z = np.linspace(-1, 1, 15)
            z = (z - z.mean()) / z.std(ddof=1)
            return list(means[fw] + math.sqrt(variances[fw]) * z)

        r = stats.compare(sample("keras"), sample("tensorflow"), metric=t["metric"])
        assert abs(r["t"]) == pytest.approx(t["t"], abs=0.006), t
    assert checked, "the preset publishes no t statistic for training time"


# ----------------------------------------------------------------------------- side by side
def _fake(spec: RunSpec, fw, seed, *, total, acc, status="ok", infer_tput=None, mem=None, gpu="Fake GPU"):
    job = spec.job(fw, seed).to_dict()
    infer = []
    if infer_tput is not None:
        infer = [{"batch_size": b, "status": "ok", "throughput_images_per_s": infer_tput,
                  "latency_ms": {"p50": 1.0, "p95": 2.0}, "peak_memory_bytes": mem} for b in spec.batch_sizes]
    return {"schema": 1, "key": f"{fw}-{seed}", "framework": fw, "status": status, "message": None,
            "spec": job, "environment": {"device": "cuda", "gpu": gpu, "cpu": "Fake CPU"},
            "train": {"epochs": [{"epoch": 1, "loss": 0.5, "accuracy": acc, "val_loss": 0.6,
                                  "val_accuracy": acc, "time_s": total}],
                      "total_time_s": total, "energy_j": 2000.0},
            "evaluation": {"accuracy": acc, "auc": 0.99, "macro": {"f1": acc}, "weighted": {"f1": acc},
                           "test_inference_time_s": total / 100},
            "inference": infer}


def _row(rows, fw, metric, stat="mean", label=None):
    (r,) = [r for r in rows if r["framework"] == fw and r["metric"] == metric and r["stat"] == stat
            and (label is None or r["spec_label"] == label)]
    return r


def test_side_by_side_pathmnist():
    preset = P.get_preset("pathmnist_cnn")
    (spec,) = preset.specs()
    results = [_fake(spec, "keras", s, total=t, acc=0.9) for s, t in enumerate([600.0, 610.0, 620.0])]
    results += [_fake(spec, "pytorch", s, total=t, acc=a) for s, (t, a) in enumerate([(300.0, 0.8), (310.0, 0.9)])]
    results.append(_fake(spec, "pytorch", 9, total=1.0, acc=0.1, status="crashed"))  # skipped
    other = RunSpec(dataset="digits", architecture="pathmnist_cnn", resolution=28, frameworks=("jax",))
    results.append(_fake(other, "jax", 0, total=5.0, acc=0.5))  # another dataset: no match
    rows = P.side_by_side(preset, results)
    assert len(rows) == len(preset.published)
    r = _row(rows, "keras", "train.total_time_s")
    assert (r["ours"], r["paper"], r["unit"], r["n"]) == (610.0, 642.59, "s", 3)
    assert r["our_hardware"] == "Fake GPU" and "not stated" in r["paper_hardware"]
    assert r["spec_label"] == "PathMNIST 28 px" and r["source"] == "Table 2"
    r = _row(rows, "pytorch", "evaluation.accuracy")
    assert r["ours"] == pytest.approx(0.85) and r["paper"] == 0.86 and r["n"] == 2
    r = _row(rows, "pytorch", "train.final_val_accuracy")  # fraction shown in the paper's %
    assert r["ours"] == pytest.approx(85.0) and r["unit"] == "%"
    r = _row(rows, "jax", "train.total_time_s")
    assert r["ours"] is None and r["n"] == 0 and r["paper"] == 343.14 and r["our_hardware"] is None


def test_side_by_side_matches_cpu_reduced_runs_and_variances():
    preset = P.get_preset("tf_keras_variance")
    reduced = dict(preset.labelled_specs(reduced=True))
    label = "Architecture 1 · Fashion-MNIST"
    spec = reduced[label]
    assert spec.resolution == 14
    results = [_fake(spec, "keras", s, total=t, acc=a, gpu=None)
               for s, (t, a) in enumerate([(10.0, 0.80), (12.0, 0.82), (14.0, 0.84)])]
    rows = P.side_by_side(preset, results)
    mean_t = _row(rows, "keras", "train.total_time_s", label=label)
    assert mean_t["ours"] == pytest.approx(12.0) and mean_t["our_hardware"] == "Fake CPU"
    var_t = _row(rows, "keras", "train.total_time_s", "variance", label)
    assert var_t["ours"] == pytest.approx(4.0) and var_t["paper"] == 11.74 and var_t["unit"] == "s^2"
    var_a = _row(rows, "keras", "evaluation.accuracy", "variance", label)
    assert var_a["ours"] == pytest.approx(4.0)  # (0.02 fraction)^2 in %^2
    assert _row(rows, "keras", "evaluation.accuracy", label=label)["ours"] == pytest.approx(82.0)
    # nothing leaked into the other datasets' rows
    assert _row(rows, "keras", "train.total_time_s", label="Architecture 1 · MNIST")["ours"] is None


def test_side_by_side_h100_units_and_batch_sizes():
    preset = P.get_preset("jax_pytorch_h100")
    specs = dict(preset.labelled_specs())
    rn32, rn128 = specs["ResNet-50 · train batch 32"], specs["ResNet-50 · train batch 128"]
    results = [_fake(rn32, "jax", 0, total=300.0, acc=0.3, infer_tput=11000.0, mem=1_724_000_000),
               _fake(rn128, "jax", 0, total=170.0, acc=0.25)]
    rows = P.side_by_side(preset, results)
    r = _row(rows, "jax", "inference.128.peak_memory_bytes", label="ResNet-50 · train batch 32")
    assert r["ours"] == pytest.approx(1724.0) and r["unit"] == "MB" and r["paper"] == 1724
    r = _row(rows, "jax", "inference.1.throughput_images_per_s", label="ResNet-50 · train batch 32")
    assert r["ours"] == 11000.0 and r["paper"] == 774
    r = _row(rows, "jax", "train.final_epoch_time_s", label="ResNet-50 · train batch 128")
    assert r["ours"] == 170.0 and r["paper"] == 167.2
    r = _row(rows, "jax", "train.energy_j_per_epoch", label="ResNet-50 · train batch 128")
    assert r["ours"] == pytest.approx(2.0) and r["unit"] == "kJ"  # 2000 J over 1 epoch
    r = _row(rows, "jax", "train.final_epoch_time_s", label="ResNet-50 · train batch 64")
    assert r["ours"] is None


def test_side_by_side_unmeasured_metrics_say_so():
    preset = P.get_preset("cifar10_cnn")
    (spec,) = preset.specs()
    rows = P.side_by_side(preset, [_fake(spec, "pytorch", 0, total=50.0, acc=0.7)])
    cpu = _row(rows, "pytorch", "host.cpu_percent")
    assert cpu["ours"] is None and cpu["paper"] == 68 and "not measured" in cpu["note"]
    assert _row(rows, "pytorch", "evaluation.accuracy")["ours"] == pytest.approx(70.0)
    assert _row(rows, "pytorch", "train.final_val_loss")["ours"] == pytest.approx(0.6)


def test_malformed_preset_names_the_file(tmp_path):
    (tmp_path / "bad.yaml").write_text(
        "name: bad\ntitle: t\npaper: {title: x, file: shared/papers/x.txt, hardware: h}\n"
        "specs: [{label: one, spec: {dataset: digits, frameworks: [keras]}}]\n"
        "published: [{metric: train.total_time_s, unit: s, source: Table 1, values: {jax: 1.0}}]\n"
        "cpu_reduced: {description: d, changes: {}}\n")
    with pytest.raises(P.PresetError, match=r"bad.yaml: .*jax is not among the frameworks"):
        P.list_presets(tmp_path)
    (tmp_path / "bad.yaml").write_text(
        "name: bad\ntitle: t\npaper: {title: x, file: shared/papers/x.txt, hardware: h}\n"
        "specs: [{label: one, spec: {dataset: digits, frameworks: [keras], epochs: 0}}]\n"
        "published: []\ncpu_reduced: {description: d}\n")
    (preset,) = P.list_presets(tmp_path)  # loads; the spec fails when it is built
    with pytest.raises(Exception, match="bad / one / epochs"):
        preset.specs()
