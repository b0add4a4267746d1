"""Bare inference loops, one per framework, written as its own documentation writes them.

What the lab's harness (engines.trackers.timing.measure on engine.inference_fn: a sync
and two clock reads per call, inputs rotating) is held against: the same built model and
the same device-resident batches, in the same precision and compile setting, looped the
way a user would (no per-call sync, one clock read around the loop, one sync at the end).
benchmarks/harness_overhead.py and benchmarks/gpu_acceptance.py use them; the ratio
harness/bare should be >= 0.97.
"""
from __future__ import annotations

import time
from collections.abc import Callable


def bare_loop(engine, inputs, warmup: int = 3) -> Callable[[int], float]:
    """A function k -> seconds for k calls of the framework's own inference loop over
    `inputs` (compiled and warmed up here, `warmup` calls, before it is returned)."""
    maker = {"pytorch": _torch, "jax": _jax, "keras": _tf, "tensorflow": _tf}.get(engine.name)
    if maker is None:
        raise ValueError(f"no bare loop for framework {engine.name!r}")
    run = maker(engine, inputs)
    run(max(1, warmup))

    def timed(k: int) -> float:
        t0 = time.perf_counter()
        run(k)
        return time.perf_counter() - t0
    return timed


def _torch(engine, inputs):
    import torch

    model = engine.model.eval()
    compiled = torch.compile(model, dynamic=False) if engine.config.compile else model
    bf16 = engine.config.precision == "bf16"
    device = inputs[0].device
    n = len(inputs)

    def run(k):
        with torch.inference_mode(), torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            for i in range(k):
                y = compiled(inputs[i % n])
        if device.type == "cuda":
            torch.cuda.synchronize()
        return y
    return run


def _jax(engine, inputs):
    import jax
    import jax.numpy as jnp
    from flax import nnx

    engine.model.eval()
    graphdef, state = nnx.split(engine.model)
    dtype = jnp.bfloat16 if engine.config.precision == "bf16" else jnp.float32
    if dtype != jnp.float32:  # a bf16 deployment holds bf16 weights
        state = jax.tree.map(lambda a: a.astype(dtype) if jnp.issubdtype(a.dtype, jnp.floating) else a, state)

    def forward(s, x):
        return nnx.merge(graphdef, s)(x.astype(dtype))

    f = jax.jit(forward) if engine.config.compile else forward
    n = len(inputs)

    def run(k):
        for i in range(k):
            y = f(state, inputs[i % n])
        return jax.block_until_ready(y)
    return run


def _tf(engine, inputs):
    import tensorflow as tf

    model = engine.model  # built under the run's dtype policy (mixed_bfloat16 for bf16)
    f = tf.function(lambda x: model(x, training=False), jit_compile=engine.config.compile)
    n = len(inputs)

    def run(k):
        for i in range(k):
            y = f(inputs[i % n])
        return y.numpy()
    return run
