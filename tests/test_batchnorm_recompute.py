"""BatchNorm statistics recomputed over the training split (engines.training.batchnorm):
the rule in NumPy, the same statistics in every framework from the same weights, dropout
off during the pass, the spec field's default and the result's record. Keras on JAX and on
PyTorch run this file in their own process (tests/keras_backends.py)."""
import os

os.environ.setdefault("KERAS_BACKEND", "tensorflow")

import numpy as np
import pytest
from helpers import cheapest_compile, frameworks_under_test

import models
from engines.datasets.synthetic import make_synthetic
from engines.frameworks import get_engine
from engines.runs.spec import RunSpec, SpecError
from engines.training import batchnorm
from engines.training.config import TrainConfig

FRAMEWORKS = frameworks_under_test()  # runnable here; Keras on JAX/PyTorch in their own process
pytestmark = pytest.mark.heavy(seconds=100)  # its wall time in the parallel suite: see conftest.py


# -- the rule ----------------------------------------------------------------------------------
def test_moments_combine_batches_into_the_splits_mean_and_unbiased_variance():
    rng = np.random.default_rng(0)
    values = rng.normal(3.0, 2.0, size=(5, 40, 3))  # 5 batches of 40 values, 3 channels
    m = batchnorm.Moments()
    for batch in values:
        m.add(batch.mean(0), batch.var(0), len(batch))
    whole = values.reshape(-1, 3)
    np.testing.assert_allclose(m.mean, whole.mean(0), rtol=1e-12)
    np.testing.assert_allclose(m.variance(), whole.var(0, ddof=1), rtol=1e-12)
    assert m.count == 200
    # batches of different sizes too
    m2 = batchnorm.Moments()
    m2.add(whole[:7].mean(0), whole[:7].var(0), 7)
    m2.add(whole[7:].mean(0), whole[7:].var(0), 193)
    np.testing.assert_allclose(m2.variance(), whole.var(0, ddof=1), rtol=1e-12)


def test_layer_names_come_from_the_definition():
    names = batchnorm.layer_names("blood_resnet", 28, 3, 2)
    assert "stem.bn" in names and len(names) > 10
    assert not batchnorm.has_batchnorm("fan_arch1", 28, 1)
    assert batchnorm.has_batchnorm("fan_arch2", 28, 1)


# -- the spec field ----------------------------------------------------------------------------
def test_spec_turns_it_on_where_the_architecture_has_batchnorm():
    assert RunSpec(dataset="synthetic", resolution=28, architecture="blood_resnet").recompute_batchnorm is True
    assert RunSpec(architecture="fan_arch1").recompute_batchnorm is False
    assert RunSpec(dataset="synthetic", resolution=28, architecture="blood_resnet",
                   inference_only=True, epochs=0).recompute_batchnorm is False
    off = RunSpec(dataset="synthetic", resolution=28, architecture="blood_resnet", recompute_batchnorm=False)
    assert off.recompute_batchnorm is False and off.job("jax").train_config().recompute_batchnorm is False
    on = RunSpec(dataset="synthetic", resolution=28, architecture="blood_resnet", frameworks=("jax",))
    off = off.replace(frameworks=("jax",))
    assert on.train_config().recompute_batchnorm is True
    # leaving it out and writing its default is one job, one key
    assert on.job_key("fp") == on.replace(recompute_batchnorm=True).job_key("fp")
    assert on.train_key("fp") != off.train_key("fp")


@pytest.mark.parametrize("fields, why", [
    ({"architecture": "fan_arch1", "recompute_batchnorm": True}, "has no BatchNorm"),
    ({"dataset": "synthetic", "resolution": 28, "architecture": "blood_resnet", "inference_only": True,
      "epochs": 0, "recompute_batchnorm": True}, "inference-only"),
    ({"recompute_batchnorm": "yes"}, "true, false or unset"),
])
def test_spec_names_the_field_when_it_cannot_apply(fields, why):
    with pytest.raises(SpecError) as e:
        RunSpec(**fields)
    assert why in e.value.problems["recompute_batchnorm"]


# -- the same statistics in every framework ------------------------------------------------------
def _engine(fw, ds, cfg):
    engine = get_engine(fw, cfg)
    weights = models.init_weights(cfg.architecture, resolution=ds.resolution, channels=ds.channels,
                                  num_classes=ds.num_classes, seed=cfg.seed)
    engine.build(cfg.architecture, ds.resolution, ds.channels, ds.num_classes, weights)
    return engine


@pytest.mark.skipif(len(FRAMEWORKS) < 2, reason="needs two frameworks")
def test_every_framework_recomputes_the_same_statistics_from_the_same_weights():
    """The pass on the shared initial weights (so that only the pass differs): the
    running statistics every framework writes agree to float32 rounding, and nothing
    but the statistics changes."""
    ds = make_synthetic(32, channels=3, classes=3, seed=1, train=96, val=24, test=24)
    stats = {}
    for fw in FRAMEWORKS:
        cfg = TrainConfig("blood_resnet", epochs=1, batch_size=32, seed=5, compile=cheapest_compile(fw),
                          precision="fp32", recompute_batchnorm=True)
        engine = _engine(fw, ds, cfg)
        # copies: PyTorch's CPU arrays can be views of the live tensors
        before = {k: v.copy() for k, v in models.extract_weights(engine.builder, engine.model).items()}
        result = batchnorm.recompute(engine, ds, cfg)
        after = models.extract_weights(engine.builder, engine.model)
        assert result.layers == len(batchnorm.layer_names("blood_resnet", 32, 3, 3))
        assert result.images == 96 and result.batches == 3
        assert result.val_accuracy_after is not None
        changed = [k for k in after if k.endswith(("/mean", "/var"))]
        assert changed and all(not np.array_equal(before[k], after[k]) for k in changed)
        # only the statistics moved
        for k in after:
            if not k.endswith(("/mean", "/var")):
                np.testing.assert_array_equal(before[k], after[k], err_msg=f"{fw}: {k}")
        stats[fw] = {k: after[k] for k in changed}
    ref_fw = FRAMEWORKS[0]
    for fw, got in stats.items():
        for k, v in got.items():
            np.testing.assert_allclose(v, stats[ref_fw][k], rtol=2e-4, atol=2e-5,
                                       err_msg=f"{fw} vs {ref_fw}: {k}")


@pytest.mark.parametrize("fw", FRAMEWORKS)
def test_dropout_is_off_during_the_pass(fw):
    """efficientnet_b0's stochastic depth (random in training) sits before most of its
    BatchNorm layers: the pass of a model built with dropout on gives the moments of the
    same weights built without it only if the pass turns it off, as inference has it.
    Against the dropout-free model, not against a second pass of the same one: a compiled
    pass may draw the same mask each call (Keras on JAX's is stateless), and two passes
    with dropout on would then agree too."""
    from models.ir import Residual

    nodes = models.get_architecture("efficientnet_b0").ir(32, 3, 3)
    assert any(isinstance(n, Residual) and n.drop_path > 0 for n in nodes)  # something to turn off
    ds = make_synthetic(32, channels=3, classes=3, seed=2, train=16, val=8, test=8)
    # Compiled on JAX (Flax and Keras on JAX): op-by-op dispatch of efficientnet costs more
    # than compiling it (Keras on JAX's first eager pass: 27.6 s, compiled 7.9 s)
    cfg = TrainConfig("efficientnet_b0", epochs=1, batch_size=8, seed=1, compile=cheapest_compile(fw),
                      precision="fp32")
    assert cfg.dropout
    x = ds.train.x[:8]
    got = _engine(fw, ds, cfg).batchnorm_moments(x)
    want = _engine(fw, ds, cfg.replace(dropout=False)).batchnorm_moments(x)
    assert set(got) == set(want) == set(batchnorm.layer_names("efficientnet_b0", 32, 3, 3))
    for name in got:
        np.testing.assert_allclose(got[name][0], want[name][0], rtol=1e-5, atol=1e-6, err_msg=name)
        np.testing.assert_allclose(got[name][1], want[name][1], rtol=1e-5, atol=1e-6, err_msg=name)
        assert got[name][2] == want[name][2]


@pytest.mark.skipif("pytorch" not in FRAMEWORKS, reason="needs PyTorch")
def test_the_scenario_recomputes_before_evaluating_and_records_it(tmp_path):
    """run_framework: train -> recompute -> evaluate -> save; train.batchnorm holds the
    pass, the validation accuracy before (the last epoch's) and after; the saved weights
    carry the recomputed statistics; the result survives a round trip and validates. On
    PyTorch, eager: the order is the scenario's, the same for every framework, and each
    framework's pass is checked above (this test took 24.9 s of CPU on Keras on TensorFlow, 9.8 s here)."""
    from engines.runs.result import RunResult
    from engines.runs.scenario import run_framework

    ds = make_synthetic(16, channels=3, classes=3, seed=4, train=64, val=16, test=16)
    cfg = TrainConfig("blood_resnet", epochs=1, batch_size=16, seed=2, compile=False, precision="fp32",
                      recompute_batchnorm=True)
    result = run_framework("pytorch", ds, cfg, weights_out=str(tmp_path / "w"))
    assert result.status == "ok", result.message
    bn = result.train.batchnorm
    assert bn.recomputed and bn.layers == len(batchnorm.layer_names("blood_resnet", 16, 3, 3))
    assert bn.images == 64 and bn.batches == 4 and bn.rule == batchnorm.RULE
    assert bn.val_accuracy_before == result.train.epochs[-1].val_accuracy and bn.val_accuracy_after is not None
    again = RunResult.from_dict(result.to_dict())
    assert again.train.batchnorm.to_dict() == bn.to_dict() and "batchnorm" in result.to_dict()["train"]
    # the saved weights are the recomputed ones: loaded into a fresh model, the same test figures
    loaded = run_framework("pytorch", ds, cfg.replace(recompute_batchnorm=False), weights_in=result.weights_file)
    assert loaded.evaluation.accuracy == result.evaluation.accuracy
    assert loaded.evaluation.per_class[0].to_dict() == result.evaluation.per_class[0].to_dict()
