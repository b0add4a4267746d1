"""The PyTorch engine trains what the others train (issue 20), pinned at the engine level.

* With compile on, the engine trains pathmnist_cnn's convolutions at 28 px: torch 2.13's
  Inductor, with its peak-memory reordering on (plain torch.compile), returned zero
  gradients below the max-pools, so the engine trained only the dense layers and "PyTorch
  learned nothing" (models.build_torch.compile_for_training turns that pass off). The
  builder-level gradient test is in test_dropout_batchnorm_parity.py; this one goes
  through the engine's own training step, so replacing compile_for_training in the engine
  by plain torch.compile fails here.
* "Dropout off" means the same in every engine: every Dropout and every stochastic-depth
  layer off (Keras and Flax build stochastic depth as a Dropout layer, PyTorch as its own).
* The engine lays its input out as the run says (NCHW, or channels-last when
  config.channels_last), whatever strides the dataset's numpy array happened to have:
  Inductor picks its kernels from the input strides, and the torch 2.13 bug struck with
  one layout and not the other.
"""
import os

os.environ.setdefault("KERAS_BACKEND", "tensorflow")

import dataclasses

import numpy as np
import pytest
from helpers import frameworks_under_test

import models
from engines.datasets.base import Split
from engines.datasets.synthetic import make_synthetic
from engines.frameworks import FRAMEWORKS as TABLE
from engines.frameworks import get_engine
from engines.training.config import TrainConfig
from engines.training.loop import make_plan

# Keras on JAX or on PyTorch run in processes of their own (tests/keras_backends.py).
FRAMEWORKS = frameworks_under_test()
needs_torch = pytest.mark.skipif("pytorch" not in FRAMEWORKS,
                                 reason="PyTorch is not tested in this process (not installed, "
                                        "or LAB_TEST_FRAMEWORKS names another framework)")


def _engine(fw, ds, cfg):
    engine = get_engine(fw, cfg)
    weights = models.init_weights(cfg.architecture, resolution=ds.resolution, channels=ds.channels,
                                  num_classes=ds.num_classes, seed=cfg.seed)
    engine.build(cfg.architecture, ds.resolution, ds.channels, ds.num_classes, weights)
    return engine, weights


# -- compile on trains the convolutions ------------------------------------------------------
def _trained_weights(ds, compile_: bool):
    import torch._dynamo
    import torch._inductor.config as inductor_config

    cfg = TrainConfig("pathmnist_cnn", epochs=1, batch_size=4, optimizer="adam",
                      learning_rate=1e-3, seed=0, dropout=True, compile=compile_,
                      precision="fp32", pipeline="device", log_every_steps=10**6)
    engine, initial = _engine("pytorch", ds, cfg)
    torch._dynamo.reset()
    # Inductor draws its dropout masks with eager's generator: the same masks both ways.
    with inductor_config.patch(fallback_random=True):
        engine.train(ds)
    return initial, models.extract_weights("pytorch", engine.model)


@pytest.mark.slow
@needs_torch
def test_compiled_engine_trains_every_convolution_of_pathmnist_cnn():
    """One short epoch (4 steps of 4 images, 3 channels, 28 px, dropout on, the layout and
    batch size with which torch 2.13's Inductor zeroed the gradients): every kernel moves,
    and as far as eager PyTorch's with the same masks."""
    ds = make_synthetic(28, channels=3, classes=5, seed=0, train=16, val=4, test=4)
    initial, compiled = _trained_weights(ds, compile_=True)
    _, eager = _trained_weights(ds, compile_=False)
    kernels = [k for k in initial if k.endswith("/kernel")]
    assert sum(k.split("/")[0].split(".")[-1].startswith("conv") for k in kernels) == 6
    for key in kernels:
        moved = np.linalg.norm(compiled[key] - initial[key]) / np.linalg.norm(initial[key])
        eager_moved = np.linalg.norm(eager[key] - initial[key])
        assert moved > 1e-4, f"{key}: the compiled engine did not train it (relative change {moved:.1e})"
        apart = np.linalg.norm(compiled[key] - eager[key])
        assert apart < 0.05 * eager_moved, (
            f"{key}: compiled and eager training differ by {apart:.2e}, "
            f"{apart / eager_moved:.1%} of eager's change")


# -- what dropout off means ----------------------------------------------------------------
def _stochastic_rates(fw, model) -> list[float]:
    """Every Dropout and stochastic-depth rate of a built model, sorted."""
    builder = TABLE[fw].builder
    if builder == "pytorch":
        import torch

        from models import build_torch
        return sorted(float(m.p) for m in model.modules()
                      if isinstance(m, (torch.nn.modules.dropout._DropoutNd, build_torch.StochasticDepth)))
    if builder == "keras":
        import keras
        return sorted(float(layer.rate) for layer in model._flatten_layers(include_self=False, recursive=True)
                      if isinstance(layer, (keras.layers.Dropout, keras.layers.SpatialDropout2D)))
    from flax import nnx
    return sorted(float(m.rate) for _, m in nnx.iter_graph(model) if isinstance(m, nnx.Dropout))


@pytest.mark.parametrize("arch", ["efficientnet_b0", "pathmnist_cnn"])
def test_dropout_off_means_the_same_in_every_engine(arch):
    """efficientnet_b0 has stochastic depth (rising to 0.2) and a dropout of 0.2; with
    dropout on every engine has the same rates, with dropout off every one of them is 0."""
    ds = make_synthetic(32, channels=3, classes=2, seed=0, train=4, val=2, test=2)
    rates = {}
    for fw in FRAMEWORKS:
        for dropout in (True, False):
            cfg = TrainConfig(arch, epochs=1, batch_size=2, dropout=dropout, compile=False,
                              precision="fp32", seed=0)
            engine, _ = _engine(fw, ds, cfg)
            rates[fw, dropout] = _stochastic_rates(fw, engine.model)
    for fw in FRAMEWORKS:
        on, off = rates[fw, True], rates[fw, False]
        assert on and max(on) > 0, f"{fw}: no dropout found in {arch} with dropout on"
        assert off == [0.0] * len(on), f"{fw}: dropout off left rates {[r for r in off if r]}"
        np.testing.assert_allclose(on, rates[FRAMEWORKS[0], True], atol=1e-7,
                                   err_msg=f"{fw} vs {FRAMEWORKS[0]}: {arch}'s dropout rates")


@needs_torch
def test_torch_training_forward_is_deterministic_with_dropout_off():
    """Stochastic depth is off too: two training-mode passes agree."""
    import torch

    ds = make_synthetic(32, channels=3, classes=2, seed=0, train=4, val=2, test=2)
    cfg = TrainConfig("efficientnet_b0", epochs=1, batch_size=2, dropout=False, compile=False,
                      precision="fp32", seed=0)
    engine, _ = _engine("pytorch", ds, cfg)
    engine.model.train()
    x = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        torch.testing.assert_close(engine.model(x), engine.model(x), rtol=0, atol=0)


# -- the input layout --------------------------------------------------------------------------
def _one_channel_sets():
    """The same 1-channel images as two numpy arrays with different strides: a trailing
    axis added by x[..., None] (stride 0, which np.ascontiguousarray keeps after the
    engine's NHWC -> NCHW transpose) and an indexed copy."""
    base = make_synthetic(28, channels=1, classes=2, seed=0, train=8, val=2, test=2)
    squeezed = np.ascontiguousarray(base.train.x[..., 0])
    views = dataclasses.replace(base, train=Split(squeezed[..., None], base.train.y))
    copies = dataclasses.replace(base, train=Split(base.train.x[np.arange(8)], base.train.y))
    return views, copies


def _expected_strides(shape, channels_last):
    n, c, h, w = shape
    return (c * h * w, 1, w * c, c) if channels_last else (c * h * w, h * w, w, 1)


@needs_torch
@pytest.mark.parametrize("channels_last", [False, True])
@pytest.mark.parametrize("pipeline", ["device", "idiomatic"])
def test_torch_input_layout_follows_the_config_not_the_array(channels_last, pipeline):
    views, copies = _one_channel_sets()
    assert views.train.x.strides != copies.train.x.strides  # the premise: two layouts in
    cfg = TrainConfig("fan_arch1", epochs=1, batch_size=4, compile=False, precision="fp32",
                      pipeline=pipeline, channels_last=channels_last, seed=0)
    engine = get_engine("pytorch", cfg)
    for ds in (views, copies):
        batches, _ = engine._batches(ds, make_plan(ds, cfg))
        for x, _, _ in batches(0):
            assert x.dtype.is_floating_point
            assert x.stride() == _expected_strides(tuple(x.shape), channels_last), (
                f"channels_last={channels_last}: batch strides {x.stride()}")
    # inference and the timing inputs go through the same rule
    x = engine._device_batch(views.test.x.astype(np.float32) / 255)
    assert x.stride() == _expected_strides(tuple(x.shape), channels_last)
