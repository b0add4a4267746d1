"""engines.analysis.stats: summaries, Welch's t-test, the sentence, and reading RunResults."""
import math

import numpy as np
import pytest
from scipy.special import betainc

from engines.analysis import stats

# ----------------------------------------------------------------------------- known case
A = [1.0, 2.0, 3.0, 4.0, 5.0]
B = [2.0, 4.0, 6.0, 8.0, 10.0, 12.0]


def _welch_by_hand(a, b):
    """Textbook Welch: t = (ma - mb) / sqrt(va/na + vb/nb), Welch–Satterthwaite df, and the
    two-sided p from the regularized incomplete beta function I_{df/(df+t^2)}(df/2, 1/2)."""
    na, nb = len(a), len(b)
    ma, mb = sum(a) / na, sum(b) / nb
    va = sum((x - ma) ** 2 for x in a) / (na - 1)
    vb = sum((x - mb) ** 2 for x in b) / (nb - 1)
    se2 = va / na + vb / nb
    t = (ma - mb) / math.sqrt(se2)
    df = se2 ** 2 / ((va / na) ** 2 / (na - 1) + (vb / nb) ** 2 / (nb - 1))
    p = betainc(df / 2, 0.5, df / (df + t * t))
    return t, df, p


def test_welch_matches_textbook_formula():
    t, df, p = _welch_by_hand(A, B)
    # the same numbers written out: means 3 and 7, variances 2.5 and 14
    assert t == pytest.approx(-4 / math.sqrt(2.5 / 5 + 14 / 6), abs=1e-12)
    assert t == pytest.approx(-2.376354103, abs=1e-6)
    assert df == pytest.approx(5780 / 829, abs=1e-9)  # (17/6)^2 / (1/16 + 49/45)
    r = stats.compare(A, B, name_a="Keras", name_b="PyTorch", metric="train.total_time_s")
    assert r["test_possible"] is True
    assert r["t"] == pytest.approx(t, abs=1e-6)
    assert r["df"] == pytest.approx(df, abs=1e-6)
    assert r["p"] == pytest.approx(p, abs=1e-6)
    assert 0.04 < r["p"] < 0.06
    assert r["significant"] is (r["p"] < 0.05)
    assert r["ratio"] == pytest.approx(3 / 7)
    assert r["difference"] == pytest.approx(-4)


def test_effect_size_is_hedges_g():
    r = stats.compare(A, B, metric="evaluation.accuracy")
    pooled = math.sqrt((4 * 2.5 + 5 * 14) / 9)
    d = (3 - 7) / pooled
    assert r["effect_size_kind"] == "hedges_g"
    assert r["effect_size"] == pytest.approx(d * (1 - 3 / (4 * 11 - 9)), abs=1e-12)


def _sample(mean, variance, n=15):
    """n values whose sample mean and sample variance are exactly the given ones."""
    z = np.linspace(-1.0, 1.0, n)
    z = (z - z.mean()) / z.std(ddof=1)
    return list(mean + math.sqrt(variance) * z)


@pytest.mark.parametrize("keras, tf, paper_t", [
    ((296.97, 19.58), (228.84, 15.17), 44.76),   # Architecture 1, MNIST (Figure 9, Section 4.D)
    ((295.20, 11.74), (219.95, 15.82), 55.52),   # Architecture 1, F-MNIST
    ((33.48, 0.46), (27.84, 4.09), 10.24),       # Architecture 1, cancer
    ((737.58, 15.02), (739.10, 21.62), 0.97),    # Architecture 2, MNIST (absolute value)
    ((737.91, 9.82), (746.82, 21.67), 6.15),     # Architecture 2, F-MNIST (absolute value)
    ((134.24, 19.90), (145.87, 7.72), 8.57),     # Architecture 2, cancer (absolute value)
])
def test_reproduces_the_variance_papers_training_time_t(keras, tf, paper_t):
    r = stats.compare(_sample(*keras), _sample(*tf), name_a="Keras", name_b="TensorFlow",
                      metric="train.total_time_s")
    assert abs(r["t"]) == pytest.approx(paper_t, abs=0.006)
    assert r["significant"] is (paper_t > 2.05)


# ----------------------------------------------------------------------------- edge cases
def test_zero_variance_both_sides_equal_means():
    r = stats.compare([0.99] * 15, [0.99] * 15, name_a="Keras", name_b="TensorFlow",
                      metric="evaluation.accuracy")
    assert r["test_possible"] is False and r["exact"] is True
    assert r["t"] is None and r["p"] is None and r["significant"] is None
    assert r["effect_size"] == 0.0 and r["better"] is None
    assert "no difference" in r["sentence"] and "no difference" in r["reason"]


def test_zero_variance_both_sides_different_means_does_not_divide_by_zero():
    r = stats.compare([0.9905] * 15, [0.9772] * 15, name_a="Keras", name_b="TensorFlow",
                      metric="evaluation.accuracy")
    assert r["test_possible"] is False and r["exact"] is True
    assert r["t"] is None and r["p"] is None and r["effect_size"] is None
    assert r["better"] == "Keras"
    assert "exact" in r["reason"] and "divide by zero" in r["reason"]
    assert r["sentence"].startswith("Keras is 1.3 points more accurate than TensorFlow in every repeat")
    assert "the difference is exact" in r["sentence"]


def test_zero_variance_one_side_still_tests():
    r = stats.compare([10.0, 10.0, 10.0], [12.0, 13.0, 14.0], metric="train.total_time_s")
    assert r["test_possible"] is True and r["exact"] is False
    assert math.isfinite(r["t"]) and r["df"] == pytest.approx(2.0)


@pytest.mark.parametrize("a, b", [([5.0], [1.0, 2.0, 3.0]), ([], [1.0, 2.0]), ([1.0, 2.0], [None])])
def test_fewer_than_two_repeats(a, b):
    r = stats.compare(a, b, name_a="JAX", name_b="PyTorch", metric="train.total_time_s")
    assert r["test_possible"] is False
    assert r["reason"] == "fewer than 2 repeats: no test is possible"
    assert "fewer than 2 repeats: no test is possible" in r["sentence"]
    assert r["t"] is None and r["p"] is None and r["significant"] is None


def test_nan_and_none_are_dropped():
    r = stats.compare([1.0, 2.0, float("nan"), 3.0, None], [4.0, 5.0, 6.0, float("inf")],
                      metric="train.total_time_s")
    assert (r["n_a"], r["n_b"], r["dropped_a"], r["dropped_b"]) == (3, 3, 2, 1)
    ref = stats.compare([1.0, 2.0, 3.0], [4.0, 5.0, 6.0], metric="train.total_time_s")
    assert r["t"] == pytest.approx(ref["t"]) and r["p"] == pytest.approx(ref["p"])
    assert "3 missing or non-finite values left out" in r["sentence"]


# ----------------------------------------------------------------------------- sentences
def test_sentence_time_significant():
    keras = [640.0, 650.0, 645.0, 642.0, 648.0]
    torch = [375.0, 380.0, 370.0, 378.0, 372.0]
    r = stats.compare(torch, keras, name_a="PyTorch", name_b="Keras", metric="train.total_time_s")
    assert r["sentence"] == "PyTorch trains 1.7× faster than Keras; the difference is significant (p < 0.001)."
    assert r["higher_is_better"] is False and r["better"] == "PyTorch"
    # order of the arguments does not change who wins
    r2 = stats.compare(keras, torch, name_a="Keras", name_b="PyTorch", metric="train.total_time_s")
    assert r2["sentence"] == r["sentence"]


def test_sentence_accuracy_not_significant():
    keras = [0.90, 0.92, 0.88, 0.91]
    jax = [0.89, 0.91, 0.86, 0.905]
    r = stats.compare(keras, jax, name_a="Keras", name_b="JAX", metric="evaluation.accuracy")
    assert not r["significant"]
    points = (np.mean(keras) - np.mean(jax)) * 100
    p = f"{r['p']:.2f}"
    assert r["sentence"] == (f"Keras is {points:.1f} points more accurate than JAX; "
                             f"the difference is not significant (p = {p}).")


def test_sentence_inference_and_throughput():
    r = stats.compare([0.28, 0.27, 0.29], [0.50, 0.49, 0.51], name_a="JAX", name_b="PyTorch",
                      metric="evaluation.test_inference_time_s")
    assert r["sentence"].startswith("JAX runs inference 1.8× faster than PyTorch; the difference is significant")
    r = stats.compare([11700.0, 11739.0, 11760.0], [5900.0, 5915.0, 5930.0], name_a="JAX", name_b="PyTorch",
                      metric="inference.128.throughput_images_per_s")
    assert r["higher_is_better"] is True
    assert r["sentence"].startswith("JAX has 2.0× the throughput of PyTorch")


def test_p_value_format_never_crosses_the_threshold():
    assert stats.p_phrase(0.0004) == "p < 0.001"
    assert stats.p_phrase(0.31) == "p = 0.31"
    assert stats.p_phrase(0.0312) == "p = 0.031"
    assert stats.p_phrase(0.0499) == "p = 0.0499"
    assert stats.p_phrase(0.0042) == "p = 0.004"
    assert stats.p_phrase(0.0504) == "p = 0.050"
    assert stats.p_phrase(0.072) == "p = 0.072"


def test_tables_print_p_as_the_sentences_do():
    from labui import repeats

    for p in (0.0004, 0.31, 0.0312, 0.0499, 0.0504):
        assert stats.p_phrase(p).endswith(repeats.fmt_p(p))
    assert repeats.fmt_p(0.0499) == "0.0499" and repeats.fmt_p(None) == "—"


# ----------------------------------------------------------------------------- summaries
def test_summarize_ci_by_hand():
    s = stats.summarize([10.0, 12.0, 14.0])
    # n = 3: mean 12, sample sd 2; t(0.975, df=2) has the closed form (2p-1)/sqrt(2p(1-p))
    t975 = 0.95 / math.sqrt(2 * 0.975 * 0.025)
    half = t975 * 2 / math.sqrt(3)
    assert (s["n"], s["mean"], s["min"], s["max"]) == (3, 12.0, 10.0, 14.0)
    assert s["std"] == pytest.approx(2.0, abs=1e-12)
    assert s["ci95_low"] == pytest.approx(12 - half, abs=1e-9)
    assert s["ci95_high"] == pytest.approx(12 + half, abs=1e-9)
    assert half == pytest.approx(4.968275, abs=1e-6)


def test_summarize_small_and_missing():
    one = stats.summarize([3.5, None, float("nan")])
    assert one == {"n": 1, "mean": 3.5, "std": None, "min": 3.5, "max": 3.5,
                   "ci95_low": None, "ci95_high": None, "dropped": 2}
    none = stats.summarize([])
    assert none["n"] == 0 and none["mean"] is None and none["ci95_low"] is None
    flat = stats.summarize([7.0, 7.0, 7.0])
    assert flat["std"] == 0.0 and flat["ci95_low"] == flat["ci95_high"] == 7.0


# ----------------------------------------------------------------------------- results
def _result(fw, status="ok", total=10.0, acc=0.9, infer=None):
    return {"schema": 1, "framework": fw, "status": status,
            "spec": {"dataset": "digits", "resolution": 8, "architecture": "fan_arch1"},
            "environment": {"device": "cpu", "cpu": "test cpu", "gpu": None},
            "train": {"epochs": [{"epoch": 1, "loss": 1.0, "accuracy": 0.5, "val_loss": 1.1,
                                  "val_accuracy": 0.4, "time_s": 4.0},
                                 {"epoch": 2, "loss": 0.5, "accuracy": 0.8, "val_loss": 0.6,
                                  "val_accuracy": 0.7, "time_s": 3.0}],
                      "total_time_s": total, "energy_j": 20.0, "compile_time_s": 1.0},
            "evaluation": {"accuracy": acc, "auc": None, "macro": {"f1": 0.8},
                           "test_inference_time_s": 0.5},
            "inference": infer if infer is not None else [
                {"batch_size": 1, "status": "ok", "throughput_images_per_s": 100.0,
                 "latency_ms": {"p50": 10.0, "p95": 12.0}, "peak_memory_bytes": 1000},
                {"batch_size": 32, "status": "oom", "throughput_images_per_s": None,
                 "latency_ms": None, "peak_memory_bytes": None}]}


def test_metric_values_skips_failed_and_null():
    results = [_result("keras", total=10.0), _result("keras", total=12.0),
               _result("keras", status="error", total=99.0), _result("pytorch", total=5.0),
               _result("pytorch", acc=None, total=6.0), _result("jax", status="oom")]
    assert stats.metric_values(results, "train.total_time_s") == {"keras": [10.0, 12.0], "pytorch": [5.0, 6.0]}
    assert stats.metric_values(results, "evaluation.accuracy") == {"keras": [0.9, 0.9], "pytorch": [0.9]}
    assert stats.metric_values(results, "evaluation.auc") == {}
    assert stats.metric_values(results, "evaluation.macro.f1")["pytorch"] == [0.8, 0.8]


def test_metric_values_inference_and_derived():
    r = [_result("jax")]
    assert stats.metric_values(r, "inference.1.throughput_images_per_s") == {"jax": [100.0]}
    assert stats.metric_values(r, "inference.1.latency_ms.p95") == {"jax": [12.0]}
    assert stats.metric_values(r, "inference.32.throughput_images_per_s") == {}  # oom entry
    assert stats.metric_values(r, "inference.128.throughput_images_per_s") == {}  # not measured
    assert stats.metric_values(r, "train.final_val_accuracy") == {"jax": [0.7]}
    assert stats.metric_values(r, "train.final_epoch_time_s") == {"jax": [3.0]}
    assert stats.metric_values(r, "train.energy_j_per_epoch") == {"jax": [10.0]}
    assert stats.metric_values(r, "no.such.metric") == {}


def test_pairwise_every_pair_in_order():
    out = stats.pairwise({"keras": [1.0, 2.0, 3.0], "pytorch": [2.0, 3.0, 4.0], "jax": [5.0]},
                         metric="train.total_time_s")
    assert [(r["framework_a"], r["framework_b"]) for r in out] == [
        ("keras", "pytorch"), ("keras", "jax"), ("pytorch", "jax")]
    assert out[0]["name_a"] == "Keras" and out[0]["name_b"] == "PyTorch"
    assert out[0]["test_possible"] and not out[1]["test_possible"]


def test_intervals_of_positive_quantities_never_go_below_zero():
    """Two repeats of a training time (105.6 s and 151.8 s): the t interval of the mean runs
    from -164.8 s to 422.2 s; the interval on the logarithm stays above zero."""
    plain = stats.summarize([105.6, 151.8])
    assert plain["ci95_low"] == pytest.approx(-164.81, abs=0.01)
    assert plain["ci95_high"] == pytest.approx(422.21, abs=0.01)
    logt = stats.summarize([105.6, 151.8], "positive")
    assert logt["ci95_low"] == pytest.approx(12.62, abs=0.01) and logt["ci95_high"] == pytest.approx(1269.9, abs=0.1)
    assert logt["mean"] == plain["mean"] and logt["std"] == plain["std"]  # only the interval changes
    assert stats.summarize([7.0, 7.0, 7.0], "positive")["ci95_low"] == 7.0  # exactly the same: exactly it
    # a zero or negative value cannot be logged: the plain interval, as for "any"
    assert stats.summarize([0.0, 2.0], "positive")["ci95_low"] == stats.summarize([0.0, 2.0])["ci95_low"]
    frac = stats.summarize([0.5, 0.99], "fraction")
    assert frac["ci95_low"] == 0.0 and frac["ci95_high"] == 1.0  # cut to [0, 1]
    with pytest.raises(ValueError, match="kind"):
        stats.summarize([1.0, 2.0], "negative")


@pytest.mark.parametrize("metric, kind", [
    ("train.total_time_s", "positive"), ("inference.32.throughput_images_per_s", "positive"),
    ("inference.8.latency_ms.p50", "positive"), ("train.peak_memory_bytes", "positive"),
    ("train.energy_j_per_epoch", "positive"), ("train.final_val_loss", "positive"),
    ("evaluation.accuracy", "fraction"), ("evaluation.macro.f1", "fraction"), ("evaluation.auc", "fraction"),
    ("train.steps_per_epoch", "any"),
])
def test_metric_kind(metric, kind):
    assert stats.metric_kind(metric) == kind
