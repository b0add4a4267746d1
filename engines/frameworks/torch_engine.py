"""PyTorch: a plain training loop, as PyTorch's own tutorials write it.

Toggles: torch.compile, bf16 autocast, TF32, channels-last, cuDNN benchmark. The order of
examples, per-example weights and the learning rate per step come from the shared plan.
"""
from __future__ import annotations

import contextlib
import os
import time

import numpy as np
import torch
import torch.nn.functional as F

from engines.training.config import ADAM_BETAS, TrainConfig
from engines.training.engine import FIRST_LOSSES, Engine, EngineError, TrainClock, WeightsError, make_plan
from engines.training.events import null_callback


class _BatchedArrays(torch.utils.data.Dataset):
    """Indexed by a whole batch of indices (DataLoader with batch_size=None): one fancy
    index per batch instead of per-example __getitem__ plus collate."""

    def __init__(self, x_nchw_uint8, y, w):
        self.x, self.y, self.w = x_nchw_uint8, y, w

    def __len__(self):
        return len(self.y)

    def __getitem__(self, idx):
        return (torch.from_numpy(self.x[idx]), torch.from_numpy(self.y[idx]),
                torch.from_numpy(self.w[idx]))


class TorchEngine(Engine):
    name = "pytorch"
    model_framework = "pytorch"
    weights_suffix = ".pt"

    def __init__(self):
        super().__init__()
        self._device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        self._config: TrainConfig | None = None

    def versions(self) -> dict:
        return {"torch": torch.__version__, "cuda": torch.version.cuda,
                "cudnn": torch.backends.cudnn.version() if torch.cuda.is_available() else None}

    def device(self) -> str:
        return torch.cuda.get_device_name(0) if self._device.type == "cuda" else "cpu"

    def _build(self, *args):
        model = super()._build(*args)
        return model.to(self._device)

    # -- toggles ----------------------------------------------------------------------
    def _apply_precision(self, config: TrainConfig) -> str:
        p = config.precision
        if p == "default":
            # PyTorch as it comes: TF32 for cuDNN convolutions, not for matmuls.
            return "default (PyTorch: TF32 convolutions on, TF32 matmul off)"
        strict = p in ("fp32", "bf16")
        torch.backends.cuda.matmul.allow_tf32 = not strict
        torch.backends.cudnn.allow_tf32 = not strict
        torch.set_float32_matmul_precision("highest" if strict else "high")
        if p == "bf16":
            return "bf16 autocast (fp32 weights and optimizer; TF32 off elsewhere)"
        return "fp32 (TF32 off)" if p == "fp32" else "tf32 (TF32 on for matmul and convolutions)"

    def _autocast(self):
        if self._config is not None and self._config.precision == "bf16":
            return torch.autocast(device_type=self._device.type, dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def _to_input(self, x_uint8_nchw: torch.Tensor) -> torch.Tensor:
        x = x_uint8_nchw.to(self._device, non_blocking=True).float().div_(255.0)
        if self._config is not None and self._config.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return x

    def _sync(self):
        if self._device.type == "cuda":
            torch.cuda.synchronize()

    # -- training ---------------------------------------------------------------------
    def train(self, dataset, config: TrainConfig, on_event=null_callback) -> dict:
        self._check_dataset(dataset)
        plan = make_plan(dataset, config)
        self._config = config
        notes = [self._apply_precision(config)]
        torch.manual_seed(config.seed)  # dropout masks
        torch.backends.cudnn.benchmark = config.cudnn_benchmark
        model = self.model
        if not config.dropout:
            for m in model.modules():
                if isinstance(m, torch.nn.modules.dropout._DropoutNd):
                    m.p = 0.0
        if config.channels_last:
            model = model.to(memory_format=torch.channels_last)
        step_model = model
        if config.compile:
            # Compiled lazily: the first step pays for it, and the clock reports it apart.
            step_model = torch.compile(model)
        self._step_model = step_model

        params = model.parameters()
        if config.optimizer == "adam":
            opt = torch.optim.Adam(params, lr=config.learning_rate, betas=ADAM_BETAS,
                                   eps=config.adam_epsilon)
        elif config.optimizer == "adamw":
            opt = torch.optim.AdamW(params, lr=config.learning_rate, betas=ADAM_BETAS,
                                    eps=config.adam_epsilon, weight_decay=config.weight_decay)
        else:
            opt = torch.optim.SGD(params, lr=config.learning_rate, momentum=config.momentum,
                                  weight_decay=config.weight_decay)
        base_lr = float(config.learning_rate)
        table = plan.lr.astype(np.float64)
        sched = torch.optim.lr_scheduler.LambdaLR(
            opt, lambda s: table[min(s, len(table) - 1)] / base_lr)

        # NCHW once, up front: the split is converted a single time, not per batch.
        x_train = np.ascontiguousarray(dataset.train.x.transpose(0, 3, 1, 2))
        y_train = dataset.train.y.astype(np.int64)
        w_train = plan.sample_weight
        if config.pipeline == "device":
            xd = torch.from_numpy(x_train).to(self._device)
            yd = torch.from_numpy(y_train).to(self._device)
            wd = torch.from_numpy(w_train).to(self._device)
            pipeline = f"device: whole split as uint8 on {self._device.type}, batches gathered there"

            def batches(epoch):
                idx = torch.from_numpy(plan.batches(epoch)).to(self._device)
                for b in idx:
                    yield self._to_input(xd[b]), yd[b], wd[b]
        else:
            data = _BatchedArrays(x_train, y_train, w_train)
            pin = self._device.type == "cuda"
            pipeline = "idiomatic: torch.utils.data.DataLoader (batched sampler, num_workers=0" + \
                       (", pinned memory)" if pin else ")")

            def batches(epoch):
                loader = torch.utils.data.DataLoader(data, sampler=list(plan.batches(epoch)),
                                                     batch_size=None, pin_memory=pin)
                for xb, yb, wb in loader:
                    yield (self._to_input(xb), yb.to(self._device, non_blocking=True),
                           wb.to(self._device, non_blocking=True))

        def train_step(x, y, w):
            opt.zero_grad(set_to_none=True)
            with self._autocast():
                logits = step_model(x)
                # Mean of weighted per-example losses (Keras's convention), not
                # F.cross_entropy(weight=...), which divides by the sum of the weights.
                loss = (F.cross_entropy(logits.float(), y, reduction="none") * w).mean()
            loss.backward()
            opt.step()
            sched.step()
            return loss.detach(), (logits.detach().argmax(1) == y).sum()

        clock = TrainClock(plan, on_event, self.name)
        log_every = config.log_every_steps
        for epoch in range(config.epochs):
            clock.epoch_start(epoch)
            model.train()
            loss_sum = torch.zeros((), device=self._device)
            correct = torch.zeros((), dtype=torch.int64, device=self._device)
            for step, (x, y, w) in enumerate(batches(epoch)):
                first = epoch == 0 and step == 0
                t0 = time.perf_counter()
                loss, c = train_step(x, y, w)
                loss_sum += loss
                correct += c
                if first:
                    try:
                        loss.item()
                    except Exception as e:  # noqa: BLE001 - torch.compile failures land here
                        raise EngineError(f"torch.compile failed here: {str(e).splitlines()[0]}") from None
                    clock.first_step_done(time.perf_counter() - t0)
                if first or (epoch == 0 and step < FIRST_LOSSES) or (step + 1) % log_every == 0:
                    clock.step(epoch, step, loss.item())
            n = plan.steps_per_epoch
            train_loss = loss_sum.item() / n
            train_acc = correct.item() / (n * config.batch_size)
            self._validate_and_end_epoch(clock, dataset, config, epoch, train_loss, train_acc)
        notes.append("compile: torch.compile" if config.compile else "compile: off (eager)")
        notes.append(f"channels_last: {config.channels_last}; cudnn.benchmark: {config.cudnn_benchmark}")
        return clock.result(pipeline, notes)

    # -- inference ----------------------------------------------------------------------
    def predict_logits(self, x_uint8: np.ndarray, batch_size: int = 256) -> np.ndarray:
        self._require_model()
        model = getattr(self, "_step_model", None) or self.model
        self.model.eval()
        out = []
        x_nchw = np.ascontiguousarray(np.asarray(x_uint8).transpose(0, 3, 1, 2))
        with torch.inference_mode(), self._autocast():
            for i in range(0, len(x_nchw), batch_size):
                xb = self._to_input(torch.from_numpy(x_nchw[i:i + batch_size]))
                out.append(model(xb).float())
        return torch.cat(out).cpu().numpy() if out else np.zeros((0, self.num_classes), np.float32)

    # -- inference timing -------------------------------------------------------------------
    def _apply_inference_config(self) -> None:
        if self._config is not None:
            self._apply_precision(self._config)
            torch.backends.cudnn.benchmark = self._config.cudnn_benchmark
            if self._config.channels_last:
                self.model = self.model.to(memory_format=torch.channels_last)

    def _inference_fn(self):
        self.model.eval()
        compile_ = self._config.compile if self._config else True
        # Static shapes, one specialization per batch size, as jax.jit and XLA do: with
        # torch.compile's default, the second batch size recompiles the model with a
        # dynamic batch dimension, slower kernels for every later size. The compile is
        # paid on each size's first call (first_call_s).
        model = torch.compile(self.model, dynamic=False) if compile_ else self.model

        def forward(x):
            with torch.inference_mode(), self._autocast():
                return model(x)
        return forward

    def _device_batch(self, x_float_nhwc: np.ndarray) -> torch.Tensor:
        x = torch.from_numpy(np.ascontiguousarray(x_float_nhwc.transpose(0, 3, 1, 2))).to(self._device)
        if self._config is not None and self._config.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return x

    def sync(self, outputs) -> None:
        # CUDA kernels run asynchronously: wait for them. On the CPU the call has already
        # computed its outputs when it returns.
        self._sync()

    # -- weights --------------------------------------------------------------------------
    def save(self, path: str) -> str:
        self._require_model()
        path = self.weights_path(path)
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        torch.save(self.model.state_dict(), path)  # the module, not the compiled wrapper
        return path

    def load(self, path: str) -> None:
        path = self._check_weights_file(path)
        try:
            state = torch.load(path, map_location=self._device, weights_only=True)
            self.model.load_state_dict(state, strict=True)
        except Exception as e:  # noqa: BLE001 - any unreadable or mismatched file
            raise WeightsError(f"cached PyTorch weights at {path} do not load into "
                               f"{self.architecture}: {str(e).splitlines()[0]}") from None
        self._step_model = None
