"""JAX with Flax NNX and Optax: a jitted, functional training step with donated buffers.

The model is split once into (graph definition, parameters, other state) and the step is a
pure function of arrays, as Flax's performance guide recommends: jax.jit compiles it, and
donating the parameters, the BatchNorm statistics and the optimizer state lets XLA update
them in place. Toggles: jit on/off, bf16 compute (fp32 master weights), matmul precision.
"""
from __future__ import annotations

import contextlib
import os
import time
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from engines.training import plan as data_order
from engines.training.config import ADAM_BETAS, TrainConfig
from engines.training.engine import FIRST_LOSSES, Engine, TrainClock, WeightsError, make_plan
from engines.training.events import null_callback


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


class JaxEngine(Engine):
    name = "jax"
    model_framework = "jax"
    weights_suffix = ".msgpack"

    def __init__(self):
        super().__init__()
        self._config: TrainConfig | None = None
        self._predict = None

    def versions(self) -> dict:
        from importlib.metadata import version

        import flax

        return {"jax": jax.__version__, "jaxlib": version("jaxlib"), "flax": flax.__version__,
                "optax": optax.__version__}

    def device(self) -> str:
        d = jax.devices()[0]
        return d.device_kind if d.platform != "cpu" else "cpu"

    def _precision(self):
        p = self._config.precision if self._config else "default"
        if p == "default":
            return contextlib.nullcontext()
        # Strict fp32 matmuls/convolutions for fp32 (and around bf16's fp32 parts).
        return jax.default_matmul_precision("tensorfloat32" if p == "tf32" else "float32")

    def _compute_dtype(self):
        return jnp.bfloat16 if self._config and self._config.precision == "bf16" else jnp.float32

    # -- training ---------------------------------------------------------------------
    def train(self, dataset, config: TrainConfig, on_event=null_callback) -> dict:
        self._check_dataset(dataset)
        plan = make_plan(dataset, config)
        self._config = config
        self._predict = None
        notes = [{"default": "default (JAX: TF32 matmuls where the GPU has them)",
                  "fp32": "fp32 (matmul precision float32)",
                  "tf32": "tf32 (matmul precision tensorfloat32)",
                  "bf16": "bf16 compute (params and activations cast; fp32 master weights, "
                          "optimizer and BatchNorm statistics)"}[config.precision]]
        model = self.model
        if not config.dropout:
            for _, m in nnx.iter_graph(model):
                if isinstance(m, nnx.Dropout):
                    m.rate = 0.0
        model.train()
        graphdef, params, rest = nnx.split(model, nnx.Param, ...)
        table = jnp.asarray(plan.lr)
        tx = make_optimizer(config, lambda count: table[jnp.minimum(count, len(plan.lr) - 1)])
        opt_state = tx.init(params)
        cdtype = self._compute_dtype()

        bf16 = cdtype != jnp.float32

        def update(params, rest, opt_state, x, y, w):
            model = nnx.merge(graphdef, params, rest)

            def loss_fn(model):
                if bf16:
                    # Compute in bf16 on a cast copy; gradients flow back to the fp32
                    # parameters through the cast, and the BatchNorm statistics are copied
                    # back in fp32.
                    g, p, r = nnx.split(model, nnx.Param, ...)
                    m = nnx.merge(g, _cast_floats(p, cdtype), r)
                    logits = m(x.astype(cdtype)).astype(jnp.float32)
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

        jit = partial(jax.jit, donate_argnums=(0, 1, 2)) if config.compile else (lambda f: f)
        if config.pipeline == "device":
            xd = jax.device_put(dataset.train.x)
            yd = jax.device_put(dataset.train.y.astype(np.int32))
            wd = jax.device_put(plan.sample_weight)
            pipeline = f"device: whole split as uint8 on {jax.devices()[0].platform}, batches gathered in the step"

            @jit
            def train_step(params, rest, opt_state, idx):
                x = xd[idx].astype(jnp.float32) / 255.0
                return update(params, rest, opt_state, x, yd[idx], wd[idx])

            def batches(epoch):
                for b in jax.device_put(plan.batches(epoch).astype(np.int32)):
                    yield (b,)
        else:
            pipeline = "idiomatic: NumPy iterator (batches normalized on the host, copied per step)"
            train_step = jit(update)
            x_all, y_all = dataset.train.x, dataset.train.y.astype(np.int32)

            def batches(epoch):
                for b in plan.batches(epoch):
                    yield (data_order.to_unit_float(x_all[b]), y_all[b], plan.sample_weight[b])

        clock = TrainClock(plan, on_event, self.name)
        log_every = config.log_every_steps
        with self._precision():
            for epoch in range(config.epochs):
                clock.epoch_start(epoch)
                loss_sum = jnp.zeros((), jnp.float32)
                correct = jnp.zeros((), jnp.int32)
                for step, args in enumerate(batches(epoch)):
                    first = epoch == 0 and step == 0
                    t0 = time.perf_counter()
                    params, rest, opt_state, loss, c = train_step(params, rest, opt_state, *args)
                    loss_sum += loss
                    correct += c
                    if first:
                        loss.block_until_ready()
                        clock.first_step_done(time.perf_counter() - t0)
                    if first or (epoch == 0 and step < FIRST_LOSSES) or (step + 1) % log_every == 0:
                        clock.step(epoch, step, float(loss))
                n = plan.steps_per_epoch
                train_loss = float(loss_sum) / n
                train_acc = int(correct) / (n * config.batch_size)
                nnx.update(model, params, rest)
                self._validate_and_end_epoch(clock, dataset, config, epoch, train_loss, train_acc)
        # The donated buffers now live in params/rest: point the model at them.
        nnx.update(model, params, rest)
        notes.append("compile: jax.jit with donated params/state/optimizer" if config.compile
                     else "compile: off (op-by-op dispatch, no jax.jit)")
        return clock.result(pipeline, notes)

    # -- inference ----------------------------------------------------------------------
    def predict_logits(self, x_uint8: np.ndarray, batch_size: int = 256) -> np.ndarray:
        self._require_model()
        model = self.model
        model.eval()
        graphdef, state = nnx.split(model)
        if self._predict is None:
            cdtype = self._compute_dtype()

            def fwd(graphdef, state, x):
                m = nnx.merge(graphdef, _cast_floats(state, cdtype) if cdtype != jnp.float32 else state)
                return m((x.astype(jnp.float32) / 255.0).astype(cdtype)).astype(jnp.float32)

            compile_ = self._config.compile if self._config else True
            self._predict = jax.jit(fwd, static_argnums=0) if compile_ else fwd
        out = []
        with self._precision():
            for i in range(0, len(x_uint8), batch_size):
                out.append(self._predict(graphdef, state, jnp.asarray(x_uint8[i:i + batch_size])))
            res = np.concatenate([np.asarray(o) for o in out]) if out else \
                np.zeros((0, self.num_classes), np.float32)
        return res

    # -- inference timing -------------------------------------------------------------------
    def _inference_fn(self):
        model = self.model
        model.eval()
        graphdef, state = nnx.split(model)
        cdtype = self._compute_dtype()
        if cdtype != jnp.float32:
            state = _cast_floats(state, cdtype)  # once, as a bf16 deployment would hold it

        def fwd(state, x):
            return nnx.merge(graphdef, state)(x.astype(cdtype))

        compile_ = self._config.compile if self._config else True
        f = jax.jit(fwd) if compile_ else fwd

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
            pure = nnx.to_pure_dict(target)
            _check_same_tree(pure, data)
            nnx.replace_by_pure_dict(target, data)
            nnx.update(self.model, target)
        except Exception as e:  # noqa: BLE001 - unreadable or mismatched file
            raise WeightsError(f"cached Flax weights at {path} do not load into "
                               f"{self.architecture}: {str(e).splitlines()[0] if str(e) else type(e).__name__}") from None
        self._predict = None


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
