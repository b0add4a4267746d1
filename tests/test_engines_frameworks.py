"""The four engines on small synthetic data: same updates, same order, weights round
trips, clear statuses for bad input, parseable progress events.

One process holds all four frameworks here (fine for numerics; timings are measured in
separate processes by benchmarks/train_throughput.py).
"""
import io
import os

os.environ.setdefault("KERAS_BACKEND", "tensorflow")

import numpy as np
import pytest

from engines.datasets.synthetic import make_synthetic
from engines.frameworks import available, get_engine
from engines.training.config import TrainConfig
from engines.training.engine import RunHooks, run_engine
from engines.training.events import JsonLinesEmitter, parse_events

FRAMEWORKS = [f for f, missing in available().items() if missing is None]
pytestmark = pytest.mark.skipif(not FRAMEWORKS, reason="no framework installed")


def _data(channels=1, classes=4, train=96, seed=0):
    return make_synthetic(28, channels=channels, classes=classes, seed=seed, train=train,
                          val=32, test=40)


def _cfg(arch="fan_arch1", **kw):
    base = dict(epochs=1, batch_size=16, learning_rate=1e-3, dropout=False, seed=3,
                pipeline="device", precision="fp32", compile=False, log_every_steps=2)
    base.update(kw)
    return TrainConfig(arch, **base)


def _compile_for(fw):
    # torch.compile (inductor) costs about a minute on a small CPU: left to the slow test.
    return fw != "pytorch"



@pytest.mark.parametrize("fw", FRAMEWORKS)
def test_loaded_weights_are_evaluated_with_the_runs_settings(fw, tmp_path):
    ds, cfg = _data(), _cfg(compile=_compile_for(fw))
    r = run_engine(fw, ds, cfg, save_path=str(tmp_path / "w"), evaluate=False)
    assert r["status"] == "ok", r["message"]
    seen = {}

    class Hooks(RunHooks):
        def after_run(self, engine, out):  # after evaluate: nothing set the config since
            seen["config"] = engine._config

    r2 = run_engine(fw, ds, cfg, weights_path=r["weights_file"], hooks=Hooks())
    assert r2["status"] == "ok", r2["message"]
    assert seen["config"] == cfg

# -- the engines implement the same update --------------------------------------------------
@pytest.mark.parametrize("arch", ["fan_arch1", "blood_resnet"])
def test_first_five_steps_agree_across_frameworks(arch):
    ds = _data(channels=3 if arch == "blood_resnet" else 1, train=80)
    losses = {}
    for fw in FRAMEWORKS:
        # lr 1e-4: blood_resnet's head (global max pool, no normalization after it) starts
        # with logits near 6, and at 1e-3 its loss falls 25x in four steps; a step that
        # large amplifies float rounding past 1e-3 even between Keras and low-level TF,
        # which share every op.  The check is of the update rule, not of chaos.
        cfg = _cfg(arch, compile=_compile_for(fw), class_weights=True, learning_rate=1e-4)
        r = run_engine(fw, ds, cfg, evaluate=False)
        assert r["status"] == "ok", r["message"]
        losses[fw] = np.array(r["train"]["first_step_losses"])
        assert len(losses[fw]) == 5
    ref = losses[FRAMEWORKS[0]]
    for fw, l in losses.items():
        np.testing.assert_allclose(l, ref, rtol=1e-3, err_msg=f"{fw} vs {FRAMEWORKS[0]}: {losses}")
    # the steps did something: the loss moved
    assert abs(ref[-1] - ref[0]) > 1e-4


def test_both_pipelines_see_the_same_batches():
    """Same losses from the idiomatic pipeline as from the device one: one order for both."""
    ds = _data(train=64)
    for fw in FRAMEWORKS:
        a = run_engine(fw, ds, _cfg(pipeline="device", class_weights=True), evaluate=False)
        b = run_engine(fw, ds, _cfg(pipeline="idiomatic", class_weights=True), evaluate=False)
        assert a["status"] == b["status"] == "ok", (a["message"], b["message"])
        np.testing.assert_allclose(a["train"]["first_step_losses"], b["train"]["first_step_losses"],
                                   rtol=1e-5, err_msg=fw)
        assert a["train"]["input_pipeline"].startswith("device")
        assert b["train"]["input_pipeline"].startswith("idiomatic")


def test_keras_tf_data_feeds_the_planned_order():
    if "keras" not in FRAMEWORKS:
        pytest.skip("keras not installed")
    from engines.frameworks.keras_engine import ordered_train_dataset
    from engines.training.engine import make_plan

    ds = _data(train=50)
    plan = make_plan(ds, _cfg(epochs=2, batch_size=8))
    got = [(x.numpy(), y.numpy()) for x, y in ordered_train_dataset(ds, plan, prenormalized=False)]
    want = [b for e in range(2) for b in plan.batches(e)]
    assert len(got) == len(want) == 12
    for (x, y), idx in zip(got, want):
        np.testing.assert_array_equal(y, ds.train.y[idx])
        np.testing.assert_allclose(x, ds.train.x[idx] / 255.0, rtol=1e-6)


# -- a full small run, its result and its events ------------------------------------------------
@pytest.mark.parametrize("fw", FRAMEWORKS)
def test_train_evaluate_save_load_round_trip(fw, tmp_path):
    ds = _data(train=64)
    buf = io.StringIO()
    cfg = _cfg(epochs=2, dropout=True, compile=_compile_for(fw), lr_schedule="cosine")
    r = run_engine(fw, ds, cfg, on_event=JsonLinesEmitter(buf, framework=fw),
                   save_path=str(tmp_path / "w"))
    assert r["status"] == "ok", r["message"]
    t = r["train"]
    assert [e["epoch"] for e in t["epochs"]] == [1, 2]
    for e in t["epochs"]:
        assert set(e) >= {"epoch", "loss", "accuracy", "val_loss", "val_accuracy", "time_s"}
        assert np.isfinite(e["loss"]) and 0 <= e["accuracy"] <= 1 and e["time_s"] >= 0
    assert t["compile_time_s"] > 0 and t["images_per_s"] > 0 and t["energy_j"] is None
    ev = r["evaluation"]
    assert 0 <= ev["accuracy"] <= 1 and ev["auc"] is not None
    assert np.array(ev["confusion_matrix"]).sum() == len(ds.test)
    assert ev["test_inference_time_s"] > 0

    events = parse_events(buf.getvalue())
    kinds = [e["event"] for e in events]
    assert kinds.count("epoch") == 2 and "step" in kinds
    assert all(e["framework"] == fw for e in events)
    steps = [e for e in events if e["event"] == "step"]
    assert all({"epoch", "step", "loss"} <= set(e) for e in steps)

    # a fresh engine with different initial weights, loaded from the file: same predictions
    eng = get_engine(fw)
    eng.build("fan_arch1", 28, 1, ds.num_classes, seed=99)
    before = eng.predict_proba(ds.test.x, 16)
    eng.load(r["weights_file"])
    after = eng.predict_proba(ds.test.x, 16)
    r2 = run_engine(fw, ds, cfg, weights_path=r["weights_file"])
    assert r2["status"] == "ok", r2["message"]
    assert r2["evaluation"]["accuracy"] == ev["accuracy"]
    assert r2["train"] is None
    assert not np.allclose(before, after)
    # predictions of the trained engine, recomputed from the saved file
    np.testing.assert_allclose(after.sum(1), 1, rtol=1e-5)
    assert r2["evaluation"]["confusion_matrix"] == ev["confusion_matrix"]


# -- bad input gives a status and a message, never a traceback ------------------------------------
@pytest.mark.parametrize("fw", FRAMEWORKS)
def test_bad_inputs_give_clear_statuses(fw, tmp_path):
    ds = _data(train=32)
    r = run_engine(fw, ds, _cfg(batch_size=33), evaluate=False)
    assert r["status"] == "error" and "batch size 33" in r["message"] and "32" in r["message"]

    small = make_synthetic(8, channels=3, classes=3, train=16, val=8, test=8)
    r = run_engine(fw, small, _cfg("cifar_cnn", batch_size=8), evaluate=False)
    assert r["status"] == "error" and "at least 18 px" in r["message"], r["message"]

    r = run_engine(fw, ds, _cfg("no_such_net"), evaluate=False)
    assert r["status"] == "error" and "no_such_net" in r["message"]

    r = run_engine(fw, ds, _cfg(optimizer="sgd", learning_rate=1e30, batch_size=8, epochs=3),
                   evaluate=False)
    assert r["status"] == "error" and "epoch 1" in r["message"] and "loss became" in r["message"]

    garbage = tmp_path / ("bad" + get_engine(fw).weights_suffix)
    garbage.write_bytes(b"this is not a weight file")
    if fw == "tensorflow":
        (tmp_path / "bad.ckpt.index").write_bytes(b"nor is this")
    r = run_engine(fw, ds, _cfg(), weights_path=str(garbage))
    assert r["status"] == "error" and "do" in r["message"] and "load" in r["message"], r["message"]

    r = run_engine(fw, ds, _cfg(), weights_path=str(tmp_path / "missing"))
    assert r["status"] == "error" and "no " in r["message"]


def test_weights_of_another_architecture_do_not_load(tmp_path):
    ds = _data(train=32)
    for fw in FRAMEWORKS:
        r = run_engine(fw, ds, _cfg(), evaluate=False, save_path=str(tmp_path / fw))
        assert r["status"] == "ok", r["message"]
        other = run_engine(fw, ds, _cfg("fan_arch2"), weights_path=r["weights_file"])
        assert other["status"] == "error" and "load" in other["message"], (fw, other["message"])


def test_missing_framework_is_a_status(monkeypatch):
    from engines import frameworks

    monkeypatch.setitem(frameworks._REGISTRY, "pytorch",
                        ("torch_engine", "TorchEngine", ("torch_is_not_here_xyz",)))
    r = run_engine("pytorch", _data(), _cfg())
    assert r["status"] == "error" and "not installed" in r["message"]


def test_bad_config_is_a_status():
    r = run_engine(FRAMEWORKS[0], _data(), {"architecture": "fan_arch1", "epochs": 0})
    assert r["status"] == "error" and "epochs" in r["message"]


# -- toggles -----------------------------------------------------------------------------------------
@pytest.mark.parametrize("fw", FRAMEWORKS)
def test_bf16_trains_or_says_why(fw):
    r = run_engine(fw, _data(train=32), _cfg(precision="bf16", compile=_compile_for(fw)),
                   evaluate=True)
    assert r["status"] in ("ok", "error"), r["message"]
    if r["status"] == "ok":
        assert any("bf16" in n for n in r["train"]["notes"])
    else:
        assert "bf16" in r["message"]


@pytest.mark.slow
def test_torch_compile_matches_eager():
    if "pytorch" not in FRAMEWORKS:
        pytest.skip("pytorch not installed")
    ds = _data(train=64)
    a = run_engine("pytorch", ds, _cfg(compile=False), evaluate=False)
    b = run_engine("pytorch", ds, _cfg(compile=True), evaluate=False)
    assert a["status"] == b["status"] == "ok", b["message"]
    np.testing.assert_allclose(a["train"]["first_step_losses"], b["train"]["first_step_losses"],
                               rtol=1e-4)
    assert any("torch.compile" in n for n in b["train"]["notes"])
