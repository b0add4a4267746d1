"""Dropout and BatchNorm mean the same thing in every builder, in training mode (issue 20).

The inference-mode parity tests (test_models.py) cannot see either: dropout is off and
BatchNorm reads its running statistics there. Here the builders run in training mode on
the same batches, eagerly and compiled the way the engines compile them:

* Dropout drops the IR's share of units, scales the survivors by 1/(1-p), draws a new
  mask each call and an independent one per layer; over many passes a whole model's
  logits are as noisy in every framework. (The masks themselves cannot be the same:
  each framework has its own random-number generator.)
* BatchNorm normalizes a batch with its biased variance and updates the running
  statistics with one rule, the IR's (PyTorch's): momentum in PyTorch's convention and
  the unbiased variance n/(n-1) x var. Keras and Flax use the biased one natively.
* torch.compile computes the same gradients as eager PyTorch: with Inductor's defaults,
  torch 2.13 zeroed every gradient below pathmnist_cnn's last max-pool, so the PyTorch
  engine trained only its dense layers (the issue's "PyTorch learns nothing").
"""
import os

os.environ.setdefault("KERAS_BACKEND", "tensorflow")

import numpy as np
import pytest

import models
from models import api, graph, ir

INSTALLED = [f for f in api.BUILDERS if models.is_installed(f)]
needs_two = pytest.mark.skipif(len(INSTALLED) < 2, reason="fewer than two frameworks installed")
pytestmark = [pytest.mark.skipif(not INSTALLED, reason="no framework installed"),
              pytest.mark.heavy(seconds=60)]  # its wall time in the parallel suite: see conftest.py

P = 0.3


def _model(framework, nodes, shape):
    """A model of a few IR nodes, with canonical weights where it has any."""
    nodes, _ = graph.resolve(tuple(nodes), shape)
    return api.build_ir(framework, nodes, shape)


def _training_calls(framework, model, compiled=False):
    """f(x_nhwc float32) -> NHWC numpy output, the model in training mode, called the way
    the engine's training step calls it (compiled: XLA / nnx.jit / Inductor)."""
    if framework == "keras":
        import tensorflow as tf

        step = tf.function(lambda x: model(x, training=True), jit_compile=compiled) \
            if compiled is not None else (lambda x: model(x, training=True))
        return lambda x: np.asarray(step(x))
    if framework == "pytorch":
        import torch

        from models import build_torch

        model.train()
        step = build_torch.compile_for_training(model) if compiled else model

        def call(x):
            y = step(torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2))))
            y = y.detach().numpy()
            return y.transpose(0, 2, 3, 1) if y.ndim == 4 else y
        return call
    from flax import nnx

    model.train()
    step = nnx.jit(lambda m, x: m(x)) if compiled else (lambda m, x: m(x))
    return lambda x: np.asarray(step(model, x))


def _variants(frameworks):
    """(framework, compiled) pairs cheap enough for the default run: Keras eagerly, in a
    tf.function and with XLA; Flax eagerly and jitted; PyTorch eagerly (Inductor takes a
    minute on a small CPU: see the slow tests)."""
    out = []
    for fw in frameworks:
        out += {"keras": [(fw, None), (fw, False), (fw, True)], "jax": [(fw, False), (fw, True)],
                "pytorch": [(fw, False)]}[fw]
    return out


def _ids(v):
    fw, compiled = v
    return f"{fw}-{ {None: 'eager', False: 'graph' if fw == 'keras' else 'eager', True: 'compiled'}[compiled]}"


# -- dropout ---------------------------------------------------------------------------

@pytest.mark.parametrize("variant", _variants(INSTALLED), ids=_ids)
def test_dropout_drops_the_share_and_scales_the_rest(variant):
    fw, compiled = variant
    shape = (8, 8, 16)
    model = _model(fw, (ir.Dropout(P),), shape)
    call = _training_calls(fw, model, compiled)
    x = np.ones((64,) + shape, np.float32)  # 65,536 units: the share's sd is 0.0018
    first, second = call(x), call(x)
    for out in (first, second):
        assert abs((out == 0).mean() - P) < 0.01
        np.testing.assert_allclose(out[out != 0], 1.0 / (1.0 - P), rtol=1e-6)
    # A new mask every call: a unit changes with probability 2p(1-p).
    assert abs(((first == 0) != (second == 0)).mean() - 2 * P * (1 - P)) < 0.015
    inferred = api.infer(fw, model, x)  # inference: the identity (PyTorch's layout is NCHW)
    assert inferred.size == x.size and (inferred == 1).all()


@pytest.mark.parametrize("variant", _variants(INSTALLED), ids=_ids)
def test_stacked_dropouts_draw_independent_masks(variant):
    fw, compiled = variant
    shape = (8, 8, 16)
    call = _training_calls(fw, _model(fw, (ir.Dropout(P), ir.Dropout(P)), shape), compiled)
    out = call(np.ones((64,) + shape, np.float32))
    assert abs((out == 0).mean() - (1 - (1 - P) ** 2)) < 0.01  # one shared mask: 0.3
    np.testing.assert_allclose(out[out != 0], 1.0 / (1.0 - P) ** 2, rtol=1e-6)


@needs_two
def test_whole_model_dropout_noise_is_the_same_in_every_framework():
    """pathmnist_cnn (dropout 0.3 after each block and dense layer), the same weights:
    Monte-Carlo passes in training mode give logits with the same spread and the same
    mean in every framework, so no builder places, scales or shapes dropout differently
    (one mask per channel instead of per unit would multiply the spread)."""
    res, ch, k, passes = 28, 1, 5, 64
    weights = models.init_weights("pathmnist_cnn", resolution=res, channels=ch, num_classes=k, seed=0)
    x = np.random.default_rng(0).random((8, res, res, ch), dtype=np.float32)
    stats = {}
    for fw in INSTALLED:
        model = models.build_model("pathmnist_cnn", fw, resolution=res, channels=ch, num_classes=k,
                                   weights=weights)
        call = _training_calls(fw, model, compiled=fw == "jax")
        logits = np.stack([call(x) for _ in range(passes)])
        stats[fw] = (logits.mean(0), logits.std(0))
    spread = {fw: s.mean() for fw, (_, s) in stats.items()}
    ref = INSTALLED[0]
    for fw in INSTALLED[1:]:
        assert abs(spread[fw] / spread[ref] - 1) < 0.1, spread
        # The means differ by sampling noise only: about 0.14 sd for 64 passes.
        assert np.abs(stats[fw][0] - stats[ref][0]).mean() < 0.5 * spread[ref], (fw, spread)


# -- BatchNorm -------------------------------------------------------------------------

def _running_stats_by_formula(batches, momentum):
    """The IR's rule: r <- (1 - m) r + m * batch statistic, the variance unbiased."""
    mean, var = np.zeros(batches[0].shape[-1]), np.ones(batches[0].shape[-1])
    for x in batches:
        flat = x.astype(np.float64).reshape(-1, x.shape[-1])
        mean = (1 - momentum) * mean + momentum * flat.mean(0)
        var = (1 - momentum) * var + momentum * flat.var(0, ddof=1)
    return mean, var


def _check_batchnorm_rule(fw, compiled, momentum, eps):
    shape = (2, 2, 3)  # 4 images x 2x2 = 16 values per channel: n/(n-1) is 6.7% off 1
    rng = np.random.default_rng(1)
    batches = [(rng.normal(size=(4,) + shape) * rng.uniform(0.5, 3, shape[2])
                + rng.uniform(-2, 2, shape[2])).astype(np.float32) for _ in range(30)]
    model = _model(fw, (ir.BatchNorm("bn", momentum=momentum, eps=eps),), shape)
    call = _training_calls(fw, model, compiled)
    for x in batches:
        out = call(x)
    stats = models.extract_weights(fw, model)
    mean, var = _running_stats_by_formula(batches, momentum)
    np.testing.assert_allclose(stats["bn/mean"], mean, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(stats["bn/var"], var, rtol=1e-5)
    # The batch itself is normalized with its biased variance and the IR's epsilon.
    last = batches[-1].reshape(-1, shape[2]).astype(np.float64)
    expected = (last - last.mean(0)) / np.sqrt(last.var(0) + eps)  # scale 1, bias 0
    np.testing.assert_allclose(out.reshape(-1, shape[2]), expected, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("momentum,eps", [(0.01, 1e-3), (0.1, 1e-5)])  # papers' Keras, PyTorch's
@pytest.mark.parametrize("variant", _variants(INSTALLED), ids=_ids)
def test_batchnorm_running_statistics_follow_the_ir_rule(variant, momentum, eps):
    _check_batchnorm_rule(*variant, momentum, eps)


@needs_two
def test_blood_resnet_running_statistics_agree_across_frameworks():
    """Every BatchNorm of a whole network (15 of them, shortcuts included), the same
    weights and batches: the running statistics after a few training-mode passes agree.
    At batch 4 the last blocks see 4 x 7x7 = 196 values per channel, where the biased and
    unbiased rules are 0.5% apart."""
    res, ch, k = 28, 3, 8
    weights = models.init_weights("blood_resnet", resolution=res, channels=ch, num_classes=k, seed=0)
    rng = np.random.default_rng(2)
    batches = [rng.random((4, res, res, ch), dtype=np.float32) for _ in range(3)]
    stats = {}
    for fw in INSTALLED:
        model = models.build_model("blood_resnet", fw, resolution=res, channels=ch, num_classes=k,
                                   weights=weights)
        call = _training_calls(fw, model, compiled=fw == "jax")
        for x in batches:
            call(x)
        stats[fw] = {key: v for key, v in models.extract_weights(fw, model).items()
                     if key.endswith(("/mean", "/var"))}
    ref = INSTALLED[0]
    assert len(stats[ref]) == 2 * 15
    for fw in INSTALLED[1:]:
        for key, value in stats[ref].items():
            np.testing.assert_allclose(stats[fw][key], value, rtol=2e-5, atol=1e-6,
                                       err_msg=f"{fw} vs {ref}: {key}")


# -- torch.compile (Inductor): slow on a CPU ---------------------------------------------

def _torch_grads(model, step, x, y):
    import torch
    import torch.nn.functional as F

    model.zero_grad(set_to_none=True)
    torch.manual_seed(0)
    F.cross_entropy(step(x), y).backward()
    return {name: p.grad.clone() for name, p in model.named_parameters()}


@pytest.mark.slow
@pytest.mark.skipif("pytorch" not in INSTALLED, reason="pytorch not installed")
def test_torch_compile_trains_every_layer_of_pathmnist_cnn():
    """The lab's training compile gives eager's gradients, dropout included (Inductor
    told to draw its masks with eager's generator, so the masks are the same)."""
    import torch
    import torch._inductor.config as inductor_config

    from models import build_torch

    res, ch, k = 28, 3, 5
    weights = models.init_weights("pathmnist_cnn", resolution=res, channels=ch, num_classes=k, seed=0)
    x = torch.rand(4, ch, res, res, generator=torch.Generator().manual_seed(1))
    y = torch.arange(4) % k
    eager = models.build_model("pathmnist_cnn", "pytorch", resolution=res, channels=ch,
                               num_classes=k, weights=weights)
    compiled = models.build_model("pathmnist_cnn", "pytorch", resolution=res, channels=ch,
                                  num_classes=k, weights=weights)
    eager.train()
    compiled.train()
    torch._dynamo.reset()
    with inductor_config.patch(fallback_random=True):
        got = _torch_grads(compiled, build_torch.compile_for_training(compiled), x, y)
    want = _torch_grads(eager, eager, x, y)
    for name, g in want.items():
        assert got[name].norm() > 0, f"{name}: the compiled gradient is zero"
        torch.testing.assert_close(got[name], g, rtol=1e-4, atol=1e-6, msg=name)


@pytest.mark.slow
@pytest.mark.skipif("pytorch" not in INSTALLED, reason="pytorch not installed")
def test_torch_compile_keeps_the_batchnorm_rule():
    _check_batchnorm_rule("pytorch", True, 0.01, 1e-3)


# -- weights taken during training ---------------------------------------------------------

@pytest.mark.parametrize("fw", INSTALLED)
def test_extracted_weights_are_a_snapshot(fw):
    """Comparing the frameworks' weights epoch by epoch (how far they drift apart) needs
    weights that stay as they were taken: PyTorch's CPU tensors share memory with
    numpy() views, so a view would follow the training that continues."""
    model = _model(fw, (ir.BatchNorm("bn"), ir.Flatten(), ir.Dense("dense", 2)), (2, 2, 3))
    taken = models.extract_weights(fw, model)
    before = {k: v.copy() for k, v in taken.items()}
    models.load_weights(fw, model, {k: v + 1.0 for k, v in taken.items()})
    for key, value in before.items():
        np.testing.assert_array_equal(taken[key], value, err_msg=f"{fw}: {key} followed the model")
