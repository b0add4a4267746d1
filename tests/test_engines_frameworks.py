"""The engines on small synthetic data, through the Engine interface the scenario calls
(get_engine(name, config) -> build -> train | load -> evaluate -> save): same updates,
same order, weights round trips, clear errors for bad input, parseable progress events.

One process holds every framework that can run in it (fine for numerics; timings are
measured in separate processes by benchmarks/train_throughput.py): Keras on TensorFlow,
TensorFlow, PyTorch and JAX/Flax here. Keras on JAX and Keras on PyTorch need their own
KERAS_BACKEND, so tests/keras_backends.py runs this file again in a process per
backend, with LAB_TEST_FRAMEWORKS naming the frameworks to test there.
"""
import io
import os

os.environ.setdefault("KERAS_BACKEND", "tensorflow")

import numpy as np
import pytest
import run_memo
from helpers import cheapest_compile, frameworks_under_test

import models
from benchmarks.backend_agreement import compiles_on_a_cpu
from engines.datasets.synthetic import make_synthetic
from engines.frameworks import FRAMEWORKS as ENGINE_TABLE
from engines.frameworks import get_engine
from engines.runs.scenario import run_framework
from engines.training.config import ConfigError, TrainConfig
from engines.training.engine import EngineError, FrameworkMissing, TrainingDiverged, WeightsError
from engines.training.events import JsonLinesEmitter, parse_events
from engines.training.loop import make_plan

FRAMEWORKS = frameworks_under_test()
pytestmark = [pytest.mark.skipif(not FRAMEWORKS, reason="no framework installed"),
              pytest.mark.heavy(seconds=170)]  # its wall time in the parallel suite: see conftest.py


def _data(channels=1, classes=4, train=96, seed=0):
    return make_synthetic(28, channels=channels, classes=classes, seed=seed, train=train,
                          val=32, test=40)


def _cfg(arch="fan_arch1", **kw):
    base = dict(epochs=1, batch_size=16, learning_rate=1e-3, dropout=False, seed=3,
                pipeline="device", precision="fp32", compile=False, log_every_steps=2)
    base.update(kw)
    return TrainConfig(arch, **base)


def _engine(fw, ds, cfg, weights="canonical"):
    """Built as the scenario builds it: the canonical draw from the seed when the run
    shares its initial weights (same_init), else the framework's own."""
    engine = get_engine(fw, cfg)
    if weights == "canonical":
        weights = models.init_weights(cfg.architecture, resolution=ds.resolution, channels=ds.channels,
                                      num_classes=ds.num_classes, seed=cfg.seed) if cfg.same_init else None
    engine.build(cfg.architecture, ds.resolution, ds.channels, ds.num_classes, weights)
    return engine


def _train(fw, ds, cfg, on_event=lambda e: None):
    engine = _engine(fw, ds, cfg)
    return engine, engine.train(ds, on_event)


def _first_losses(fw, ds, cfg) -> list[float]:
    return _train(fw, ds, cfg)[1]["first_step_losses"]


# -- the engines implement the same update --------------------------------------------------
@pytest.mark.skipif(len(FRAMEWORKS) < 2, reason="fewer than two frameworks installed: nothing to agree with")
@pytest.mark.parametrize("arch", ["fan_arch1", "blood_resnet"])
def test_first_five_steps_agree_across_frameworks(arch):
    ds = _data(channels=3 if arch == "blood_resnet" else 1, train=80)
    losses = {}
    for fw in FRAMEWORKS:
        # lr 1e-4: blood_resnet's head (global max pool, no normalization after it) starts
        # with logits near 6, and at 1e-3 its loss falls 25x in four steps; a step that
        # large amplifies float rounding past 1e-3 even between Keras and low-level TF,
        # which share every op.  The check is of the update rule, not of chaos.
        cfg = _cfg(arch, compile=compiles_on_a_cpu(fw), class_weights=True, learning_rate=1e-4)
        # Keras on TensorFlow's are also the Keras backends' reference (tests/keras_backends.py,
        # the same data and config): computed once per run by whichever file gets there first.
        losses[fw] = np.array(run_memo.once(run_memo.key("first_step_losses", fw, cfg, ds), _first_losses, fw, ds, cfg))
        assert len(losses[fw]) == 5
    ref = losses[FRAMEWORKS[0]]
    for fw, got in losses.items():
        np.testing.assert_allclose(got, ref, rtol=1e-3, err_msg=f"{fw} vs {FRAMEWORKS[0]}: {losses}")
    # the steps did something: the loss moved
    assert abs(ref[-1] - ref[0]) > 1e-4


@pytest.mark.parametrize("fw", [fw for fw in FRAMEWORKS if ENGINE_TABLE[fw].builder == "keras"])
def test_the_same_seed_draws_the_same_dropout_masks_in_any_process(fw):
    """pathmnist_cnn (five dropout layers) trained twice from the same seed, with Python's
    and NumPy's generators left in other states before each build, as two worker
    processes find them: the same losses. Keras seeds each dropout layer's generator from
    Python's when the layer is made; built before the run's seed was set, Keras on
    TensorFlow and on JAX drew other masks in every process. The models that the Keras
    builder makes (TensorFlow's too); Flax and PyTorch draw from the run's seed alone."""
    import random

    ds = _data(train=32)
    cfg = _cfg("pathmnist_cnn", dropout=True, compile=cheapest_compile(fw))
    losses = []
    for state in (1, 2):
        random.seed(state)
        np.random.seed(state)
        losses.append(_train(fw, ds, cfg)[1]["first_step_losses"])
    assert losses[0] == losses[1], losses


def test_both_pipelines_see_the_same_batches():
    """Same losses from the idiomatic pipeline as from the device one: one order for both."""
    ds = _data(train=64)
    for fw in FRAMEWORKS:
        a = _train(fw, ds, _cfg(pipeline="device", class_weights=True, compile=cheapest_compile(fw)))[1]
        b = _train(fw, ds, _cfg(pipeline="idiomatic", class_weights=True, compile=cheapest_compile(fw)))[1]
        np.testing.assert_allclose(a["first_step_losses"], b["first_step_losses"], rtol=1e-5, err_msg=fw)
        assert a["input_pipeline"].startswith("device")
        assert b["input_pipeline"].startswith("idiomatic")


def test_keras_tf_data_feeds_the_planned_order():
    if "keras" not in FRAMEWORKS:
        pytest.skip("keras not installed")
    from engines.frameworks.keras_engine import ordered_train_dataset

    ds = _data(train=50)
    plan = make_plan(ds, _cfg(epochs=2, batch_size=8))
    got = [(x.numpy(), y.numpy()) for x, y in ordered_train_dataset(ds, plan, prenormalized=False)]
    want = [b for e in range(2) for b in plan.batches(e)]
    assert len(got) == len(want) == 12
    for (x, y), idx in zip(got, want):
        np.testing.assert_array_equal(y, ds.train.y[idx])
        np.testing.assert_allclose(x, ds.train.x[idx] / 255.0, rtol=1e-6)


def test_keras_on_tensorflow_traces_its_training_step_once():
    """Every variable exists before fit (Keras3Engine.train builds the optimizer and passes
    a metric object): fit traces the step once. Keras on TensorFlow otherwise makes them
    in a first trace and tf.function traces the step again, which the compile time counted."""
    if "keras" not in FRAMEWORKS:
        pytest.skip("Keras on TensorFlow is not tested in this process")
    ds = _data(train=32)
    engine = _engine("keras", ds, _cfg())
    traces = []
    step = engine.model.train_step

    def counted(data):
        traces.append(data)
        return step(data)

    engine.model.train_step = counted
    engine.train(ds)
    assert len(traces) == 1


# -- a full small run, its result and its events ------------------------------------------------
@pytest.mark.parametrize("fw", FRAMEWORKS)
def test_train_evaluate_save_load_round_trip(fw, tmp_path):
    ds = _data(train=64)
    buf = io.StringIO()
    cfg = _cfg(epochs=2, dropout=True, compile=compiles_on_a_cpu(fw), lr_schedule="cosine")
    engine, t = _train(fw, ds, cfg, JsonLinesEmitter(buf, framework=fw))
    assert [e["epoch"] for e in t["epochs"]] == [1, 2]
    for e in t["epochs"]:
        assert set(e) >= {"epoch", "loss", "accuracy", "val_loss", "val_accuracy", "time_s"}
        assert np.isfinite(e["loss"]) and 0 <= e["accuracy"] <= 1 and e["time_s"] >= 0
    assert t["compile_time_s"] > 0 and t["images_per_s"] > 0 and t["energy_j"] is None
    ev = engine.evaluate(ds, 256)
    assert 0 <= ev["accuracy"] <= 1 and ev["auc"] is not None
    assert np.array(ev["confusion_matrix"]).sum() == len(ds.test)
    assert ev["test_inference_time_s"] > 0
    weights_file = engine.save(str(tmp_path / "w"))

    events = parse_events(buf.getvalue())
    kinds = [e["event"] for e in events]
    assert kinds.count("epoch") == 2 and "step" in kinds
    assert all(e["framework"] == fw for e in events)
    steps = [e for e in events if e["event"] == "step"]
    assert all({"epoch", "step", "loss"} <= set(e) for e in steps)

    # a fresh engine with different initial weights (the framework's own draw from
    # another seed), loaded from the file: same predictions
    eng = _engine(fw, ds, cfg.replace(seed=99), weights=None)
    before = eng.predict_proba(ds.test.x, 16)
    eng.load(weights_file)
    after = eng.predict_proba(ds.test.x, 16)
    assert not np.allclose(before, after)
    np.testing.assert_allclose(after.sum(1), 1, rtol=1e-5)
    np.testing.assert_allclose(after, engine.predict_proba(ds.test.x, 16), rtol=1e-5, atol=1e-6)
    # evaluated as a run that reuses the file evaluates it
    loaded = _engine(fw, ds, cfg)
    loaded.load(weights_file)
    again = loaded.evaluate(ds, 256)
    assert again["accuracy"] == ev["accuracy"]
    assert again["confusion_matrix"] == ev["confusion_matrix"]


@pytest.mark.parametrize("fw", FRAMEWORKS)
def test_loaded_weights_are_evaluated_with_the_runs_settings(fw, tmp_path):
    """The configuration is the engine's from construction, so a loaded model predicts
    under the run's precision and compile settings: in bf16, the trained engine and one
    that loads its file agree exactly, and both differ from an fp32 engine with the file."""
    ds = _data(train=32)
    cfg = _cfg(precision="bf16", compile=compiles_on_a_cpu(fw))
    trained, _ = _train(fw, ds, cfg)
    path = trained.save(str(tmp_path / "w"))
    want = trained.predict_logits(ds.test.x, 16)
    loaded = _engine(fw, ds, cfg)
    loaded.load(path)
    assert loaded.config == cfg
    np.testing.assert_array_equal(loaded.predict_logits(ds.test.x, 16), want)
    fp32 = _engine(fw, ds, cfg.replace(precision="fp32"))
    fp32.load(path)
    assert not np.array_equal(fp32.predict_logits(ds.test.x, 16), want)


def test_inference_fn_runs_on_the_inference_inputs():
    """The timing harness's three pieces: device batches rotated through, one compiled
    forward pass, a sync; the outputs are the model's logits."""
    ds = _data(train=32)
    for fw in FRAMEWORKS:
        engine = _engine(fw, ds, _cfg(compile=compiles_on_a_cpu(fw)))
        inputs = engine.inference_inputs(8, ds.test.x)
        assert 2 <= len(inputs) <= 4
        forward = engine.inference_fn()
        out = forward(inputs[0])
        engine.sync(out)
        logits = np.asarray(out.detach().cpu() if hasattr(out, "detach") else out, dtype=np.float32)
        np.testing.assert_allclose(logits, engine.predict_logits(ds.test.x[:8], 8), rtol=1e-4, atol=1e-5,
                                   err_msg=fw)


# -- bad input gives a clear error of the kind that becomes a status ----------------------------------
@pytest.mark.parametrize("fw", FRAMEWORKS)
def test_bad_inputs_give_clear_errors(fw, tmp_path):
    ds = _data(train=32)
    with pytest.raises(EngineError, match="batch size 33") as e:
        _train(fw, ds, _cfg(batch_size=33))
    assert "32" in str(e.value) and e.value.status == "error"

    small = make_synthetic(8, channels=3, classes=3, train=16, val=8, test=8)
    with pytest.raises(EngineError, match="at least 18 px"):
        _engine(fw, small, _cfg("cifar_cnn", batch_size=8), weights=None)

    with pytest.raises(EngineError, match="no_such_net"):
        _engine(fw, ds, _cfg("no_such_net"), weights=None)

    with pytest.raises(EngineError, match="asked to build 'fan_arch2'"):
        get_engine(fw, _cfg()).build("fan_arch2", 28, 1, ds.num_classes)

    with pytest.raises(TrainingDiverged, match="loss became") as e:
        _train(fw, ds, _cfg(optimizer="sgd", learning_rate=1e30, batch_size=8, epochs=3, compile=cheapest_compile(fw)))
    assert "epoch 1" in str(e.value) and e.value.status == "error"

    garbage = tmp_path / ("bad" + get_engine(fw, _cfg()).weights_suffix)
    garbage.write_bytes(b"this is not a weight file")
    if fw == "tensorflow":
        (tmp_path / "bad.ckpt.index").write_bytes(b"nor is this")
    with pytest.raises(WeightsError, match="do.*load"):
        _engine(fw, ds, _cfg()).load(str(garbage))

    with pytest.raises(WeightsError, match="no "):
        _engine(fw, ds, _cfg()).load(str(tmp_path / "missing"))


def test_weights_of_another_architecture_do_not_load(tmp_path):
    ds = _data(train=32)
    for fw in FRAMEWORKS:
        path = _train(fw, ds, _cfg(compile=cheapest_compile(fw)))[0].save(str(tmp_path / fw))
        with pytest.raises(WeightsError, match="load"):
            _engine(fw, ds, _cfg("fan_arch2")).load(path)


def test_missing_framework_is_a_clear_error_and_a_status(monkeypatch):
    import dataclasses

    from engines import frameworks

    monkeypatch.setitem(frameworks.FRAMEWORKS, "pytorch",
                        dataclasses.replace(frameworks.FRAMEWORKS["pytorch"], packages=("torch_is_not_here_xyz",)))
    with pytest.raises(FrameworkMissing, match="not installed"):
        get_engine("pytorch", _cfg())
    r = run_framework("pytorch", _data(), _cfg())
    assert r.status == "error" and "not installed" in r.message


def test_bad_config_is_a_status():
    r = run_framework(FRAMEWORKS[0], _data(), {"architecture": "fan_arch1", "epochs": 0})
    assert r.status == "error" and "epochs" in r.message


def test_an_engine_takes_a_train_config_only():
    with pytest.raises(ConfigError, match="TrainConfig"):
        get_engine(FRAMEWORKS[0], {"architecture": "fan_arch1", "epochs": 0})


# -- toggles -----------------------------------------------------------------------------------------
@pytest.mark.parametrize("fw", FRAMEWORKS)
def test_bf16_trains_or_says_why(fw):
    ds = _data(train=32)
    try:
        engine, t = _train(fw, ds, _cfg(precision="bf16", compile=compiles_on_a_cpu(fw)))
    except EngineError as e:
        assert "bf16" in str(e)
        return
    assert any("bf16" in n for n in t["notes"])
    assert 0 <= engine.evaluate(ds)["accuracy"] <= 1


@pytest.mark.slow
def test_torch_compile_matches_eager():
    if "pytorch" not in FRAMEWORKS:
        pytest.skip("pytorch not installed")
    ds = _data(train=64)
    a = _train("pytorch", ds, _cfg(compile=False))[1]
    b = _train("pytorch", ds, _cfg(compile=True))[1]
    np.testing.assert_allclose(a["first_step_losses"], b["first_step_losses"], rtol=1e-4)
    assert any("torch.compile" in n for n in b["notes"])
