"""JAX with Flax NNX and Optax: a jitted, functional training step with donated buffers.

The model is split once into (graph definition, parameters, other state) and the step is a
pure function of arrays, as Flax's performance guide recommends: jax.jit compiles it, and
donating the parameters, the BatchNorm statistics and the optimizer state lets XLA update
them in place. Toggles: jit on/off, bf16 compute (fp32 master weights), matmul precision.
The epochs, the clock and validation come from the shared loop (engines.training.loop).
"""
from __future__ import annotations

import contextlib
import os

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from engines.training import plan as data_order
from engines.training.config import ADAM_BETAS, TrainConfig
from engines.training.engine import Engine, WeightsError
from engines.training.events import null_callback
from engines.training.loop import StepFunctions, TrainPlan, make_plan, train_loop


def make_optimizer(config: TrainConfig, schedule) -> optax.GradientTransformation:
    if config.optimizer == "adam":
        return optax.adam(schedule, b1=ADAM_BETAS[0], b2=ADAM_BETAS[1], eps=config.adam_epsilon)
    if config.optimizer == "adamw":
        return optax.adamw(schedule, b1=ADAM_BETAS[0], b2=ADAM_BETAS[1], eps=config.adam_epsilon,
                           weight_decay=config.weight_decay)
    # L2 added to the gradient before momentum, as torch.optim.SGD does.
    return optax.chain(optax.add_decayed_weights(config.weight_decay),
                       optax.sgd(schedule, momentum=config.momentum or None))


def _cast_floats(tree, dtype):
    return jax.tree.map(lambda a: a.astype(dtype) if jnp.issubdtype(a.dtype, jnp.floating) else a,
                        tree)


PRECISION_NOTES = {
    "default": "default (JAX: TF32 matmuls where the GPU has them)",
    "fp32": "fp32 (matmul precision float32)",
    "tf32": "tf32 (matmul precision tensorfloat32)",
    "bf16": "bf16 compute (params and activations cast; fp32 master weights, optimizer and "
            "BatchNorm statistics)",
}


def make_update(graphdef, tx: optax.GradientTransformation, compute_dtype):
    """One optimizer update as a pure function of arrays, (params, rest, opt_state, x, y,
    w) -> (params, rest, opt_state, loss, correct): what jax.jit compiles, its first three
    arguments donated."""
    bf16 = compute_dtype != jnp.float32

    def update(params, rest, opt_state, x, y, w):
        model = nnx.merge(graphdef, params, rest)

        def loss_fn(model):
            if bf16:
                # Compute in bf16 on a cast copy; gradients flow back to the fp32
                # parameters through the cast, and the BatchNorm statistics are copied
                # back in fp32.
                g, p, r = nnx.split(model, nnx.Param, ...)
                m = nnx.merge(g, _cast_floats(p, compute_dtype), r)
                logits = m(x.astype(compute_dtype)).astype(jnp.float32)
                new_r = nnx.state(m, nnx.Not(nnx.Param))
                nnx.update(model, jax.tree.map(lambda a, b: a.astype(b.dtype), new_r, r))
            else:
                logits = model(x)
            per_example = optax.softmax_cross_entropy_with_integer_labels(logits, y)
            return jnp.mean(per_example * w), logits

        (loss, logits), grads = nnx.value_and_grad(loss_fn, has_aux=True)(model)
        _, _, rest = nnx.split(model, nnx.Param, ...)
        updates, opt_state = tx.update(grads, opt_state, params)
        params = optax.apply_updates(params, updates)
        correct = jnp.sum(jnp.argmax(logits, -1) == y)
        return params, rest, opt_state, loss, correct
    return update


class _Seen(nnx.Variable):
    """What a BatchNorm probe saw in the last call (not a parameter, not a statistic)."""


class _BatchNormProbe(nnx.Module):
    """Stands in for a BatchNorm in a copy of the model: records the per-channel mean and
    biased variance of the layer's input (and the values per channel), then calls it."""

    def __init__(self, norm: nnx.BatchNorm):
        self.norm = norm
        channels = norm.mean.value.shape[-1]
        self.mean = _Seen(jnp.zeros((channels,), jnp.float32))
        self.var = _Seen(jnp.zeros((channels,), jnp.float32))
        self.count = _Seen(jnp.zeros((), jnp.int32))

    def __call__(self, x, *args, **kwargs):
        xf = x.astype(jnp.float32)
        axes = tuple(range(x.ndim - 1))  # every axis but the channels (last)
        mean = xf.mean(axes)
        self.mean.value = mean
        self.var.value = jnp.square(xf - mean).mean(axes)
        self.count.value = jnp.asarray(xf.size // xf.shape[-1], jnp.int32)
        return self.norm(x, *args, **kwargs)


def _probed_copy(model) -> tuple[nnx.Module, dict[str, _BatchNormProbe]]:
    """A copy of the model with a probe around each (named) BatchNorm, in eval mode except
    for its BatchNorm layers (batch statistics; dropout and stochastic depth off)."""
    copy = nnx.clone(model)
    found = [(path, node) for path, node in nnx.iter_graph(copy)
             if isinstance(node, nnx.BatchNorm) and hasattr(node, "canonical_name")]
    probes = {}
    for path, norm in found:
        parent = copy
        for key in path[:-1]:
            parent = parent[key] if isinstance(parent, (nnx.List, list, dict)) else getattr(parent, key)
        probe = _BatchNormProbe(norm)
        if isinstance(parent, (nnx.List, list, dict)):
            parent[path[-1]] = probe
        else:
            setattr(parent, path[-1], probe)
        probes[norm.canonical_name] = probe
    copy.eval()
    for probe in probes.values():
        probe.norm.use_running_average = False
    return copy, probes


class JaxEngine(Engine):
    name = "jax"
    weights_suffix = ".msgpack"

    def __init__(self, config: TrainConfig):
        super().__init__(config)
        self._compute_dtype = jnp.bfloat16 if config.precision == "bf16" else jnp.float32
        # Inference-mode logits of uint8 batches, as validation and evaluation call it:
        # a function of (graph definition, state, batch), so it serves any built model.
        self._predict = self._predict_fn()
        # The BatchNorm pass (batchnorm_moments): made on its first use, after training.
        self._bn_pass = None

    def versions(self) -> dict:
        from importlib.metadata import version

        import flax

        return {"jax": jax.__version__, "jaxlib": version("jaxlib"), "flax": flax.__version__,
                "optax": optax.__version__}

    def _precision(self):
        """The matmul precision, read when tracing (part of jit's cache key): strict fp32
        for fp32 (and around bf16's fp32 parts), TF32 for tf32, JAX's own for default."""
        p = self.config.precision
        if p == "default":
            return contextlib.nullcontext()
        return jax.default_matmul_precision("tensorfloat32" if p == "tf32" else "float32")

    def _build_model(self, weights):
        model = super()._build_model(weights)
        if not self.config.dropout:
            for _, m in nnx.iter_graph(model):
                if isinstance(m, nnx.Dropout):
                    m.rate = 0.0
        return model

    def _jit(self, f, **kwargs):
        return jax.jit(f, **kwargs) if self.config.compile else f

    # -- training ---------------------------------------------------------------------
    def train(self, dataset, on_event=null_callback) -> dict:
        self._check_dataset(dataset)
        plan = make_plan(dataset, self.config)
        model = self.model
        model.train()
        graphdef, params, rest = nnx.split(model, nnx.Param, ...)
        table = jnp.asarray(plan.lr)
        tx = make_optimizer(self.config, lambda count: table[jnp.minimum(count, len(plan.lr) - 1)])
        train_step, batches, pipeline = self._step_and_batches(
            make_update(graphdef, tx, self._compute_dtype), dataset, plan)
        carry = [params, rest, tx.init(params)]  # donated to each step, replaced by its outputs

        def step(*batch):
            carry[0], carry[1], carry[2], loss, correct = train_step(*carry, *batch)
            return loss, correct

        # The model is pointed at the latest arrays before each validation, so it holds
        # the trained ones at the end.
        steps = StepFunctions(batches, step, self.predict_logits,
                              before_validation=lambda: nnx.update(model, carry[0], carry[1]))
        with self._precision():
            clock = train_loop(plan, dataset, steps, on_event)
        notes = [PRECISION_NOTES[self.config.precision],
                 "compile: jax.jit with donated params/state/optimizer" if self.config.compile
                 else "compile: off (op-by-op dispatch, no jax.jit)"]
        return clock.result(pipeline, notes)

    def _step_and_batches(self, update, dataset, plan: TrainPlan):
        """(the compiled step, epoch -> its batches' step arguments, the pipeline's note)."""
        donate = {"donate_argnums": (0, 1, 2)}
        if self.config.pipeline == "device":
            xd = jax.device_put(dataset.train.x)
            yd = jax.device_put(dataset.train.y.astype(np.int32))
            wd = jax.device_put(plan.sample_weight)

            def gather_and_update(params, rest, opt_state, idx):
                x = xd[idx].astype(jnp.float32) / 255.0
                return update(params, rest, opt_state, x, yd[idx], wd[idx])

            def batches(epoch):
                for b in jax.device_put(plan.batches(epoch).astype(np.int32)):
                    yield (b,)
            return (self._jit(gather_and_update, **donate), batches,
                    f"device: whole split as uint8 on {jax.devices()[0].platform}, batches gathered in the step")
        x_all, y_all = dataset.train.x, dataset.train.y.astype(np.int32)

        def batches(epoch):
            for b in plan.batches(epoch):
                yield (data_order.to_unit_float(x_all[b]), y_all[b], plan.sample_weight[b])
        return (self._jit(update, **donate), batches,
                "idiomatic: NumPy iterator (batches normalized on the host, copied per step)")

    # -- inference ----------------------------------------------------------------------
    def _predict_fn(self):
        cdtype = self._compute_dtype

        def forward(graphdef, state, x):
            m = nnx.merge(graphdef, _cast_floats(state, cdtype) if cdtype != jnp.float32 else state)
            return m((x.astype(jnp.float32) / 255.0).astype(cdtype)).astype(jnp.float32)
        return self._jit(forward, static_argnums=0)

    def predict_logits(self, x_uint8: np.ndarray, batch_size: int = 256) -> np.ndarray:
        self._require_model()
        self.model.eval()
        graphdef, state = nnx.split(self.model)
        out = []
        with self._precision():
            for i in range(0, len(x_uint8), batch_size):
                out.append(self._predict(graphdef, state, jnp.asarray(x_uint8[i:i + batch_size])))
            return np.concatenate([np.asarray(o) for o in out]) if out else \
                np.zeros((0, self.num_classes), np.float32)

    def batchnorm_moments(self, x_uint8: np.ndarray) -> dict:
        self._require_model()
        if self._bn_pass is None:
            self._bn_pass = self._batchnorm_pass()
        return self._bn_pass(x_uint8)

    def _batchnorm_pass(self):
        """x_uint8 -> moments per BatchNorm: a probed copy of the trained model, its
        forward compiled as the run compiles (the pass runs once, after training)."""
        copy, probes = _probed_copy(self.model)
        graphdef, params, rest = nnx.split(copy, nnx.Param, ...)
        cdtype = self._compute_dtype

        def forward(params, rest, x):
            if cdtype != jnp.float32:
                params = _cast_floats(params, cdtype)
            m = nnx.merge(graphdef, params, rest)
            m((x.astype(jnp.float32) / 255.0).astype(cdtype))
            return nnx.state(m, _Seen)
        forward = self._jit(forward)

        def moments(x_uint8):
            with self._precision():
                seen = forward(params, rest, jnp.asarray(x_uint8))
            nnx.update(copy, seen)
            return {name: (np.asarray(p.mean.value, np.float64), np.asarray(p.var.value, np.float64),
                           int(p.count.value)) for name, p in probes.items()}
        return moments

    def inference_fn(self):
        self._require_model()
        self.model.eval()
        graphdef, state = nnx.split(self.model)
        cdtype = self._compute_dtype
        if cdtype != jnp.float32:
            state = _cast_floats(state, cdtype)  # once, as a bf16 deployment would hold it
        f = self._jit(lambda state, x: nnx.merge(graphdef, state)(x.astype(cdtype)))

        def forward(x):
            # The matmul precision is read when tracing: it is part of jit's cache key.
            with self._precision():
                return f(state, x)
        return forward

    def _device_batch(self, x_float_nhwc: np.ndarray):
        return jax.device_put(jnp.asarray(x_float_nhwc, dtype=jnp.float32))

    def sync(self, outputs) -> None:
        # JAX dispatches asynchronously, on the CPU too.
        jax.block_until_ready(outputs)

    # -- weights --------------------------------------------------------------------------
    def save(self, path: str) -> str:
        from flax import serialization

        self._require_model()
        path = self.weights_path(path)
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        # Flax's own serialization (msgpack) of the model's whole state: params and
        # BatchNorm statistics, not the RNG counters.
        state = nnx.state(self.model, nnx.Not(nnx.RngState))
        with open(path, "wb") as f:
            f.write(serialization.to_bytes(nnx.to_pure_dict(state)))
        return path

    def load(self, path: str) -> None:
        from flax import serialization

        path = self._check_weights_file(path)
        target = nnx.state(self.model, nnx.Not(nnx.RngState))
        try:
            with open(path, "rb") as f:
                data = serialization.msgpack_restore(f.read())
            _check_same_tree(nnx.to_pure_dict(target), data)
            nnx.replace_by_pure_dict(target, data)
            nnx.update(self.model, target)
        except Exception as e:  # noqa: BLE001 - unreadable or mismatched file
            why = str(e).splitlines()[0] if str(e) else type(e).__name__
            raise WeightsError(f"cached Flax weights at {path} do not load into "
                               f"{self.architecture}: {why}") from None


def _check_same_tree(expected, got, path=""):
    if isinstance(expected, dict):
        if not isinstance(got, dict) or set(map(str, expected)) != set(map(str, got)):
            raise ValueError(f"state keys differ at {path or 'top level'}")
        by_str = {str(k): v for k, v in got.items()}
        for k, v in expected.items():
            _check_same_tree(v, by_str[str(k)], f"{path}/{k}")
        return
    if np.shape(expected) != np.shape(got):
        raise ValueError(f"shape of {path} is {np.shape(got)}, the model needs {np.shape(expected)}")
