"""Framework-free parts of the engines: config, data order, class weights, LR schedule,
metrics, events. Fast: no framework is imported here."""
import io
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from helpers import needs_framework

from engines.training import plan as data_order
from engines.training.config import ConfigError, TrainConfig
from engines.training.events import JsonLinesEmitter, make_event, parse_events
from engines.training.metrics import MetricsError, evaluate_probabilities


# -- TrainConfig ------------------------------------------------------------------------
def test_config_round_trips_through_json():
    c = TrainConfig("fan_arch1", epochs=3, batch_size=32, lr_schedule="cosine",
                    class_weights=True, precision="bf16", pipeline="device")
    again = TrainConfig.from_dict(json.loads(c.to_json()))
    assert again == c and hash(again) == hash(c)


@pytest.mark.parametrize("field,value,words", [
    ("epochs", 0, "epochs"), ("batch_size", -1, "batch_size"), ("optimizer", "rmsprop", "adam"),
    ("lr_schedule", "linear", "cosine"), ("precision", "fp16", "bf16"),
    ("pipeline", "fast", "idiomatic"), ("learning_rate", 0.0, "> 0"),
    ("learning_rate", float("nan"), "finite"), ("adam_epsilon", 0, "> 0"),
    ("compile", "yes", "true or false"), ("epochs", 2.5, "integer"), ("weight_decay", 0.1, "adamw"),
    ("momentum", 0.9, "sgd"),
])
def test_config_rejects_bad_values_with_a_clear_message(field, value, words):
    with pytest.raises(ConfigError) as e:
        TrainConfig("fan_arch1", **{field: value})
    assert field in str(e.value) and words in str(e.value)


def test_config_rejects_unknown_fields():
    with pytest.raises(ConfigError, match="unknown field"):
        TrainConfig.from_dict({"architecture": "fan_arch1", "epoch": 3})


# -- data order -----------------------------------------------------------------------------
def test_epoch_order_is_a_permutation_fixed_by_seed_and_epoch():
    a = data_order.epoch_permutation(7, 0, 1000)
    assert sorted(a.tolist()) == list(range(1000))
    assert np.array_equal(a, data_order.epoch_permutation(7, 0, 1000))
    assert not np.array_equal(a, data_order.epoch_permutation(7, 1, 1000))
    assert not np.array_equal(a, data_order.epoch_permutation(8, 0, 1000))


def test_batches_drop_the_partial_last_batch():
    b = data_order.epoch_batches(0, 0, 103, 10)
    assert b.shape == (10, 10)
    assert len(np.unique(b)) == 100
    assert data_order.steps_per_epoch(103, 10) == 10


def test_class_weights_formula():
    y = np.array([0] * 6 + [1] * 3 + [2] * 1)
    w = data_order.class_weights(y, 3)
    # n_samples / (n_classes * count)
    np.testing.assert_allclose(w, [10 / (3 * 6), 10 / (3 * 3), 10 / (3 * 1)], rtol=1e-6)
    assert w.dtype == np.float32
    # scikit-learn's "balanced" is the same formula
    from sklearn.utils.class_weight import compute_class_weight
    np.testing.assert_allclose(w, compute_class_weight("balanced", classes=np.arange(3), y=y),
                               rtol=1e-6)
    # an absent class neither divides by zero nor matters
    w4 = data_order.class_weights(y, 4)
    assert np.isfinite(w4).all() and w4[3] == 1.0
    sw = data_order.sample_weights(y, 3, True)
    assert sw.shape == (10,) and sw[0] == w[0] and sw[-1] == w[2]
    assert np.all(data_order.sample_weights(y, 3, False) == 1)


def test_lr_tables():
    c = TrainConfig("fan_arch1", epochs=4, learning_rate=0.1)
    assert np.allclose(data_order.lr_table(c, 5), 0.1)
    cos = data_order.lr_table(c.replace(lr_schedule="cosine"), 5)
    assert cos.shape == (20,) and cos[0] == pytest.approx(0.1)
    assert cos[10] == pytest.approx(0.05) and np.all(np.diff(cos) < 0)
    step = data_order.lr_table(c.replace(lr_schedule="step"), 5)
    # x0.1 from epoch 2 (50% of 4) and x0.01 from epoch 3 (75% of 4): MedMNIST's milestones
    assert np.allclose(step[:10], 0.1) and np.allclose(step[10:15], 0.01)
    assert np.allclose(step[15:], 0.001)


def test_pixels_scaled_to_unit_interval():
    x = np.array([[[[0, 255, 128]]]], dtype=np.uint8)
    f = data_order.to_unit_float(x)
    assert f.dtype == np.float32 and f.min() == 0 and f.max() == 1


# -- metrics -------------------------------------------------------------------------------
def test_metrics_against_a_hand_computed_case():
    # 3 classes, 6 examples; predictions 0,0,1,1,2,0 against labels 0,0,1,2,2,2
    y = np.array([0, 0, 1, 2, 2, 2])
    pred = [0, 0, 1, 1, 2, 0]
    proba = np.full((6, 3), 0.1)
    for i, p in enumerate(pred):
        proba[i, p] = 0.8
    ev = evaluate_probabilities(y, proba, ["a", "b", "c"], test_inference_time_s=0.5)
    assert ev["accuracy"] == pytest.approx(4 / 6)
    assert ev["confusion_matrix"] == [[2, 0, 0], [0, 1, 0], [1, 1, 1]]
    pc = {c["class"]: c for c in ev["per_class"]}
    # class a: tp 2, fp 1, fn 0; class b: tp 1, fp 1, fn 0; class c: tp 1, fp 0, fn 2
    assert pc["a"]["precision"] == pytest.approx(2 / 3) and pc["a"]["recall"] == 1
    assert pc["b"]["precision"] == pytest.approx(1 / 2) and pc["b"]["recall"] == 1
    assert pc["c"]["precision"] == 1 and pc["c"]["recall"] == pytest.approx(1 / 3)
    assert pc["c"]["f1"] == pytest.approx(0.5) and pc["c"]["support"] == 3
    assert ev["macro"]["precision"] == pytest.approx((2 / 3 + 1 / 2 + 1) / 3)
    assert ev["weighted"]["recall"] == pytest.approx((2 * 1 + 1 * 1 + 3 * 1 / 3) / 6)
    assert ev["test_inference_time_s"] == 0.5
    # AUC one-vs-rest macro, by hand: class a: positives {0,1} score .8, negatives
    # {2,3,4,5} scores .1,.1,.1,.8 -> pairs (pos>neg)=2*3 + ties 2*1*0.5 = 7 of 8
    auc_a = 7 / 8
    # class b: positives {2} .8; negatives .1,.1,.8,.1,.1 -> 4 + 0.5 = 4.5 of 5
    auc_b = 4.5 / 5
    # class c: positives {3,4,5} scores .1,.8,.1; negatives {0,1,2} .1,.1,.1
    # pairs: .8 beats 3, each .1 ties 3 -> 3 + 2*3*0.5 = 6 of 9
    auc_c = 6 / 9
    assert ev["auc"] == pytest.approx((auc_a + auc_b + auc_c) / 3)
    json.dumps(ev)  # JSON-able as it is


def test_binary_auc_uses_the_positive_class_score():
    y = np.array([0, 0, 1, 1])
    p1 = np.array([0.1, 0.6, 0.4, 0.9])
    ev = evaluate_probabilities(y, np.stack([1 - p1, p1], 1), ["neg", "pos"])
    assert ev["auc"] == pytest.approx(0.75)  # 3 of 4 positive/negative pairs ordered
    assert ev["test_inference_time_s"] is None


@pytest.mark.parametrize("seed", range(6))
def test_metrics_equal_scikit_learns(seed):
    """The NumPy metrics against scikit-learn's, on cases with tied scores (rounded
    probabilities), classes never predicted and, for some seeds, a class absent from the
    labels or only two classes."""
    from sklearn.metrics import accuracy_score, confusion_matrix, precision_recall_fscore_support, roc_auc_score
    rng = np.random.default_rng(seed)
    k = 2 if seed % 3 == 0 else 5
    n = 40 + 13 * seed
    y = rng.integers(0, k - (seed % 2 if k > 2 else 0), size=n)  # odd seeds: last class absent
    proba = np.round(rng.dirichlet(np.ones(k) * 0.7, size=n), 1) + 1e-9  # many ties
    proba[:, k - 2] *= 0.3  # class k-2 rarely predicted
    ev = evaluate_probabilities(y, proba, [f"c{i}" for i in range(k)])

    labels = list(range(k))
    pred = proba.argmax(axis=1)
    assert ev["accuracy"] == pytest.approx(accuracy_score(y, pred), abs=1e-12)
    assert ev["confusion_matrix"] == confusion_matrix(y, pred, labels=labels).tolist()
    p, r, f, s = precision_recall_fscore_support(y, pred, labels=labels, zero_division=0)
    got = {key: [c[key] for c in ev["per_class"]] for key in ("precision", "recall", "f1", "support")}
    np.testing.assert_allclose(got["precision"], p, atol=1e-12)
    np.testing.assert_allclose(got["recall"], r, atol=1e-12)
    np.testing.assert_allclose(got["f1"], f, atol=1e-12)
    assert got["support"] == s.tolist()
    for kind in ("macro", "weighted"):
        want = precision_recall_fscore_support(y, pred, labels=labels, average=kind,
                                               zero_division=0)[:3]
        assert [ev[kind][m] for m in ("precision", "recall", "f1")] == pytest.approx(want, abs=1e-12)
    if k == 2:
        want_auc = roc_auc_score(y, proba[:, 1])
    else:
        want_auc = np.mean([roc_auc_score(y == c, proba[:, c]) for c in np.unique(y)])
    assert ev["auc"] == pytest.approx(want_auc, abs=1e-12)


def test_evaluating_does_not_import_scikit_learn():
    """Every worker evaluates; importing sklearn.metrics there cost 2 s of CPU per task."""
    code = ("import sys, numpy as np; from engines.training.metrics import evaluate_probabilities; "
            "evaluate_probabilities([0, 1, 2], np.eye(3), ['a', 'b', 'c']); "
            "print('sklearn' in sys.modules)")
    repo = Path(__file__).resolve().parents[1]
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                         cwd=repo, env=dict(os.environ, PYTHONPATH=str(repo)))
    assert out.stdout.strip() == "False", out.stderr


def test_metrics_refuse_labels_outside_the_classes():
    with pytest.raises(MetricsError, match="0..1"):
        evaluate_probabilities([0, 2], np.array([[0.5, 0.5], [0.5, 0.5]]), ["a", "b"])


def test_metrics_refuse_nan_probabilities():
    with pytest.raises(MetricsError, match="NaN"):
        evaluate_probabilities([0, 1], np.array([[np.nan, 0.5], [0.5, 0.5]]), ["a", "b"])


# -- events -----------------------------------------------------------------------------------
def test_events_are_json_lines():
    buf = io.StringIO()
    emit = JsonLinesEmitter(buf, framework="pytorch")
    emit(make_event("step", epoch=1, step=3, loss=np.float32(0.25)))
    emit(make_event("epoch", epoch=1, loss=float("nan"), accuracy=0.5))
    lines = buf.getvalue().splitlines()
    assert len(lines) == 2
    objs = [json.loads(line) for line in lines]
    assert objs[0]["event"] == "step" and objs[0]["loss"] == 0.25
    assert objs[0]["framework"] == "pytorch"
    assert objs[1]["loss"] is None  # NaN is not JSON
    assert parse_events("noise\n" + buf.getvalue() + "{bad json\n") == objs


def test_registry_imports_no_framework():
    import subprocess

    code = ("import sys, engines.frameworks as f; f.available(); "
            "bad=[m for m in ('torch','tensorflow','jax','keras','flax') if m in sys.modules]; "
            "print(bad); sys.exit(1 if bad else 0)")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr


def test_unknown_framework_is_a_clear_error():
    from engines.frameworks import get_engine
    from engines.training.engine import FrameworkMissing

    with pytest.raises(FrameworkMissing, match="unknown framework 'mxnet'"):
        get_engine("mxnet", TrainConfig("fan_arch1"))



def test_a_frameworks_first_import_keeps_its_unused_extras_out_and_only_while_it_runs(tmp_path, monkeypatch):
    """engine_class imports a framework with its `import_without` packages unimportable
    (what Keras' optional imports catch), then they import again; a process that already
    has the framework's packages keeps every module as it is."""
    import dataclasses

    from engines import frameworks

    (tmp_path / "lab_extra_pkg.py").write_text("VALUE = 1\n")
    (tmp_path / "lab_fw_pkg.py").write_text(
        "try:\n    import lab_extra_pkg\nexcept ImportError:\n    lab_extra_pkg = None\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    for m in ("lab_extra_pkg", "lab_fw_pkg"):
        monkeypatch.delitem(sys.modules, m, raising=False)
    fake = dataclasses.replace(frameworks.FRAMEWORKS["keras"], packages=("lab_fw_pkg",),
                               import_without=("lab_extra_pkg",))
    with frameworks._kept_out(fake):
        import lab_fw_pkg
    assert lab_fw_pkg.lab_extra_pkg is None  # the framework's optional import saw it missing
    assert "lab_extra_pkg" not in sys.modules  # and nothing of the block is left
    import lab_extra_pkg
    assert lab_extra_pkg.VALUE == 1  # it imports as usual afterwards

    monkeypatch.delitem(sys.modules, "lab_extra_pkg")
    with frameworks._kept_out(fake):  # lab_fw_pkg is loaded now: nothing is kept out
        import lab_extra_pkg
    assert lab_extra_pkg.VALUE == 1


@needs_framework("keras-jax")
def test_a_keras_worker_imports_keras_without_scikit_learn_or_pandas():
    """A fresh process imports a Keras engine as a worker does (engine_class), and Keras
    comes up without scikit-learn and pandas (about 2 s of every Keras worker's start);
    the worker can still import them afterwards (scikit-learn's digits)."""
    from engines.frameworks import FRAMEWORKS

    code = ("import sys; from engines.frameworks import engine_class; engine_class('keras-jax'); "
            "print(sorted(m for m in ('sklearn', 'pandas') if m in sys.modules)); "
            "import sklearn.datasets, pandas; print('ok')")
    env = {**os.environ, **FRAMEWORKS["keras-jax"].environment}
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env,
                       cwd=Path(__file__).resolve().parents[1])
    assert r.returncode == 0 and r.stdout.split() == ["[]", "ok"], r.stdout + r.stderr[-2000:]

# -- the training loop, with a step that is plain NumPy ---------------------------------------------
class _Split:
    def __init__(self, x, y):
        self.x, self.y = x, y

    def __len__(self):
        return len(self.y)


class _Data:
    """The parts of a dataset the loop reads: the splits' images and labels."""

    num_classes = 3

    def __init__(self, n_train=40, n_val=10):
        rng = np.random.default_rng(0)
        self.train = _Split(np.zeros((n_train, 2, 2, 1), np.uint8), rng.integers(0, 3, n_train))
        self.val = _Split(np.zeros((n_val, 2, 2, 1), np.uint8), rng.integers(0, 3, n_val))


class _FakeSteps:
    """A 'framework' whose update returns a scripted loss and records what the loop asks."""

    def __init__(self, plan, losses):
        self.plan, self.losses, self.calls = plan, iter(losses), []

    def batches(self, epoch):
        self.calls.append(("epoch", epoch))
        for b in self.plan.batches(epoch):
            yield (b,)

    def step(self, idx):
        self.calls.append(("step", len(idx)))
        return np.float32(next(self.losses)), np.int64(len(idx) // 2)

    def predict_logits(self, x, batch_size):
        self.calls.append(("predict", len(x)))
        return np.zeros((len(x), 3), np.float32)

    def before_validation(self):
        self.calls.append(("before_validation",))

    def functions(self):
        from engines.training.loop import StepFunctions

        return StepFunctions(self.batches, self.step, self.predict_logits, self.before_validation)


def test_training_loop_bookkeeping():
    from engines.training.loop import make_plan, train_loop

    ds = _Data()
    cfg = TrainConfig("fan_arch1", epochs=2, batch_size=8, log_every_steps=3)
    plan = make_plan(ds, cfg)
    assert plan.steps_per_epoch == 5
    losses = [2.0, 1.8, 1.6, 1.5, 1.4, 1.3, 1.2, 1.1, 1.0, 0.9]
    fake, events = _FakeSteps(plan, losses), []
    clock = train_loop(plan, ds, fake.functions(), events.append)
    t = clock.result("fake pipeline", ["a note"])

    assert t["first_step_losses"] == pytest.approx(losses[:5])
    assert [e["loss"] for e in t["epochs"]] == pytest.approx([np.mean(losses[:5]), np.mean(losses[5:])])
    assert [e["accuracy"] for e in t["epochs"]] == [0.5, 0.5]  # 4 of each batch of 8
    # validation: zero logits over 3 classes, whatever the labels: loss log 3
    assert t["epochs"][0]["val_loss"] == pytest.approx(np.log(3))
    assert t["steps_per_epoch"] == 5 and t["input_pipeline"] == "fake pipeline" and t["notes"] == ["a note"]
    assert t["compile_time_s"] > 0
    # the first epoch: its 5 steps, the hook, one warm-up batch of the eval step, then the
    # whole validation split; the second epoch has no warm-up
    assert fake.calls[:9] == [("epoch", 0)] + [("step", 8)] * 5 + [("before_validation",), ("predict", 8),
                                                                    ("predict", 10)]
    assert fake.calls[9:] == [("epoch", 1)] + [("step", 8)] * 5 + [("before_validation",), ("predict", 10)]
    # step events: each of the first five steps, then every third step of an epoch
    steps = [(e["epoch"], e["step"]) for e in events if e["event"] == "step"]
    assert steps == [(1, 1), (1, 2), (1, 3), (1, 4), (1, 5), (2, 3)]
    assert [e["epoch"] for e in events if e["event"] == "epoch"] == [1, 2]


def test_training_loop_stops_on_a_non_finite_loss():
    from engines.training.engine import TrainingDiverged
    from engines.training.loop import make_plan, train_loop

    ds = _Data()
    plan = make_plan(ds, TrainConfig("fan_arch1", epochs=2, batch_size=8))
    fake = _FakeSteps(plan, [2.0, 1.0, float("nan")] + [1.0] * 7)
    with pytest.raises(TrainingDiverged, match="epoch 1 \\(step 3 of the run\\)"):
        train_loop(plan, ds, fake.functions())
    assert ("predict", 10) not in fake.calls


def test_a_batch_larger_than_the_split_is_refused_by_the_plan():
    from engines.training.engine import EngineError
    from engines.training.loop import make_plan

    with pytest.raises(EngineError, match="batch size 64 is larger than the training split \\(40 images\\)"):
        make_plan(_Data(), TrainConfig("fan_arch1", batch_size=64))


def test_the_framework_table_is_complete_and_consistent():
    import dataclasses
    from pathlib import Path

    import models
    from engines import frameworks
    from engines.runs.spec import RunSpec
    from engines.trackers.memory import ALLOCATOR_KINDS

    table = frameworks.FRAMEWORKS
    fields = {f.name for f in dataclasses.fields(RunSpec)}
    assert len({f.label for f in table.values()}) == len({f.color for f in table.values()}) == len(table)
    for name, f in table.items():
        module, cls = f.engine.split(":")
        assert f.name == name and f.builder in models.BUILDERS and f.allocator in ALLOCATOR_KINDS
        assert f"class {cls}(" in (Path(frameworks.__file__).parent / f"{module}.py").read_text()
        assert set(f.options) <= fields and set(f.packages) and set(f.distributions)
        assert frameworks.installed(name) == (frameworks.missing(name) is None)
    assert set(frameworks.default_frameworks()) <= set(table)
    assert frameworks.owners("xla_autotune") == tuple(n for n, f in table.items() if f.uses_xla)
    with pytest.raises(dataclasses.FrozenInstanceError):
        table["jax"].label = "JAX"
    with pytest.raises(TypeError):
        table["keras"].environment["KERAS_BACKEND"] = "jax"
