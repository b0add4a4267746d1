"""PyTorch: a plain training step, as PyTorch's own tutorials write it.

Toggles: torch.compile, bf16 autocast, TF32, channels-last, cuDNN benchmark. The order of
examples, per-example weights and the learning rate per step come from the shared plan;
the epochs, the clock and validation from the shared loop (engines.training.loop).
"""
from __future__ import annotations

import contextlib
import os

import numpy as np
import torch
import torch.nn.functional as F

from engines.trackers.memory import is_oom
from engines.training.config import ADAM_BETAS, TrainConfig
from engines.training.engine import Engine, EngineError, WeightsError
from engines.training.events import null_callback
from engines.training.loop import StepFunctions, TrainPlan, make_plan, train_loop
from models import build_torch


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


def make_optimizer(config: TrainConfig, params) -> torch.optim.Optimizer:
    if config.optimizer == "adam":
        return torch.optim.Adam(params, lr=config.learning_rate, betas=ADAM_BETAS,
                                eps=config.adam_epsilon)
    if config.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=config.learning_rate, betas=ADAM_BETAS,
                                 eps=config.adam_epsilon, weight_decay=config.weight_decay)
    return torch.optim.SGD(params, lr=config.learning_rate, momentum=config.momentum,
                           weight_decay=config.weight_decay)


def set_process_switches(config: TrainConfig) -> None:
    """PyTorch's process-wide switches for a run: cuDNN benchmark, and TF32 off for the
    strict precisions (fp32, and bf16's fp32 parts) or on for tf32; "default" leaves
    PyTorch as it comes. Shared with Keras on PyTorch, which runs on the same switches."""
    torch.backends.cudnn.benchmark = config.cudnn_benchmark
    if config.precision == "default":
        return
    strict = config.precision in ("fp32", "bf16")
    torch.backends.cuda.matmul.allow_tf32 = not strict
    torch.backends.cudnn.allow_tf32 = not strict
    torch.set_float32_matmul_precision("highest" if strict else "high")


class TorchEngine(Engine):
    name = "pytorch"
    weights_suffix = ".pt"

    def __init__(self, config: TrainConfig):
        super().__init__(config)
        self._device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        # The model as training and validation call it: torch.compile'd (lazily: the first
        # step pays, and the clock reports it apart) when the run compiles. Made by build.
        self._forward = None

    @classmethod
    def import_ahead(cls, compile: bool) -> None:
        """TorchDynamo and Inductor: torch.compile imports them on its first call, 2.8 s
        of a 2-core CPU, which was the "building" stage of every compiled PyTorch task
        (JAX's and TensorFlow's compilers come with their import)."""
        if compile:
            import torch._dynamo
            import torch._inductor.compile_fx  # noqa: F401

    def versions(self) -> dict:
        return {"torch": torch.__version__, "cuda": torch.version.cuda,
                "cudnn": torch.backends.cudnn.version() if torch.cuda.is_available() else None}

    # -- the run's settings -------------------------------------------------------------
    def _build_model(self, weights):
        model = super()._build_model(weights).to(self._device)
        if not self.config.dropout:
            # Stochastic depth too: Keras and Flax build it as a Dropout layer, so their
            # engines switch it off with the dropout; one meaning of "dropout off".
            for m in model.modules():
                if isinstance(m, (torch.nn.modules.dropout._DropoutNd, build_torch.StochasticDepth)):
                    m.p = 0.0
        if self.config.channels_last:
            model = model.to(memory_format=torch.channels_last)
        self._forward = build_torch.compile_for_training(model) if self.config.compile else model
        self._backend_flags()
        return model

    def _backend_flags(self) -> str:
        """Sets PyTorch's process-wide switches for the run (TF32, cuDNN benchmark);
        returns the precision note."""
        set_process_switches(self.config)
        p = self.config.precision
        if p == "default":
            # PyTorch as it comes: TF32 for cuDNN convolutions, not for matmuls.
            return "default (PyTorch: TF32 convolutions on, TF32 matmul off)"
        if p == "bf16":
            return "bf16 autocast (fp32 weights and optimizer; TF32 off elsewhere)"
        return "fp32 (TF32 off)" if p == "fp32" else "tf32 (TF32 on for matmul and convolutions)"

    def _autocast(self):
        if self.config.precision == "bf16":
            return torch.autocast(device_type=self._device.type, dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def _memory_format(self) -> torch.memory_format:
        return torch.channels_last if self.config.channels_last else torch.contiguous_format

    def _laid_out(self, x: torch.Tensor) -> torch.Tensor:
        """x as float32 in a fresh tensor with the run's layout: standard NCHW strides, or
        channels-last when config.channels_last. Explicit because `.contiguous()` keeps a
        tensor whose only odd strides are on a size-1 dimension: a 1-channel batch came out
        NCHW or channels-last-strided depending on how the dataset's numpy array had been
        built, and Inductor chooses its kernels (and, in torch 2.13, whether the max-pool
        gradient bug struck, issue 20) from the input's strides. The toggle decides, not
        the array's history."""
        out = torch.empty(x.shape, dtype=torch.float32, device=self._device,
                          memory_format=self._memory_format())
        return out.copy_(x)

    def _to_input(self, x_uint8_nchw: torch.Tensor) -> torch.Tensor:
        x = x_uint8_nchw.to(self._device, non_blocking=True)
        return self._laid_out(x).div_(255.0)

    # -- training ---------------------------------------------------------------------
    def train(self, dataset, on_event=null_callback) -> dict:
        self._check_dataset(dataset)
        plan = make_plan(dataset, self.config)
        notes = [self._backend_flags()]
        torch.manual_seed(self.config.seed)  # dropout masks
        self.model.train()
        batches, pipeline = self._batches(dataset, plan)
        steps = StepFunctions(batches, self._train_step(plan), self.predict_logits)
        try:
            clock = train_loop(plan, dataset, steps, on_event)
        except torch._dynamo.exc.TorchDynamoException as e:
            if is_oom(e):
                raise
            raise EngineError(f"torch.compile failed here: {str(e).splitlines()[0]}") from None
        notes.append("compile: torch.compile (Inductor's reorder_for_peak_memory off: with it, "
                     "torch 2.13 zeroed the gradients below max-pools)" if self.config.compile
                     else "compile: off (eager)")
        notes.append(f"channels_last: {self.config.channels_last}; "
                     f"cudnn.benchmark: {self.config.cudnn_benchmark}")
        return clock.result(pipeline, notes)

    def _train_step(self, plan: TrainPlan):
        opt = make_optimizer(self.config, self.model.parameters())
        base_lr = float(self.config.learning_rate)
        table = plan.lr.astype(np.float64)
        sched = torch.optim.lr_scheduler.LambdaLR(
            opt, lambda s: table[min(s, len(table) - 1)] / base_lr)
        forward = self._forward

        def step(x, y, w):
            opt.zero_grad(set_to_none=True)
            with self._autocast():
                logits = forward(x)
                # Mean of weighted per-example losses (Keras's convention), not
                # F.cross_entropy(weight=...), which divides by the sum of the weights.
                loss = (F.cross_entropy(logits.float(), y, reduction="none") * w).mean()
            loss.backward()
            opt.step()
            sched.step()
            return loss.detach(), (logits.detach().argmax(1) == y).sum()
        return step

    def _batches(self, dataset, plan: TrainPlan):
        """(epoch -> the epoch's (x, y, w) batches on the device, the pipeline's note)."""
        # NCHW once, up front: the split is converted a single time, not per batch.
        x = np.ascontiguousarray(dataset.train.x.transpose(0, 3, 1, 2))
        y = dataset.train.y.astype(np.int64)
        if self.config.pipeline == "device":
            xd, yd, wd = (torch.from_numpy(a).to(self._device) for a in (x, y, plan.sample_weight))

            def batches(epoch):
                for b in torch.from_numpy(plan.batches(epoch)).to(self._device):
                    yield self._to_input(xd[b]), yd[b], wd[b]
            return batches, f"device: whole split as uint8 on {self._device.type}, batches gathered there"
        data = _BatchedArrays(x, y, plan.sample_weight)
        pin = self._device.type == "cuda"

        def batches(epoch):
            loader = torch.utils.data.DataLoader(data, sampler=list(plan.batches(epoch)),
                                                 batch_size=None, pin_memory=pin)
            for xb, yb, wb in loader:
                yield (self._to_input(xb), yb.to(self._device, non_blocking=True),
                       wb.to(self._device, non_blocking=True))
        return batches, ("idiomatic: torch.utils.data.DataLoader (batched sampler, num_workers=0"
                         + (", pinned memory)" if pin else ")"))

    # -- inference ----------------------------------------------------------------------
    def predict_logits(self, x_uint8: np.ndarray, batch_size: int = 256) -> np.ndarray:
        self._require_model()
        was_training = self.model.training
        self.model.eval()
        out = []
        x_nchw = np.ascontiguousarray(np.asarray(x_uint8).transpose(0, 3, 1, 2))
        try:
            with torch.inference_mode(), self._autocast():
                for i in range(0, len(x_nchw), batch_size):
                    xb = self._to_input(torch.from_numpy(x_nchw[i:i + batch_size]))
                    out.append(self._forward(xb).float())
        finally:
            self.model.train(was_training)  # validation inside training leaves it training
        return torch.cat(out).cpu().numpy() if out else np.zeros((0, self.num_classes), np.float32)

    def batchnorm_moments(self, x_uint8: np.ndarray) -> dict:
        """Forward pre-hooks read each BatchNorm's input; the model in eval mode (dropout,
        stochastic depth off) but its BatchNorm layers in training mode. Eager, not the
        compiled forward: hooks are what the pass needs, not speed."""
        self._require_model()
        norms = {m.canonical_name: m for m in self.model.modules()
                 if isinstance(m, torch.nn.modules.batchnorm._BatchNorm) and hasattr(m, "canonical_name")}
        seen = {}

        def recorder(name):
            def record(module, args):
                x = args[0].float()
                dims = [d for d in range(x.ndim) if d != 1]
                seen[name] = (x.mean(dims), x.var(dims, unbiased=False), x.numel() // x.shape[1])
            return record

        handles = [m.register_forward_pre_hook(recorder(name)) for name, m in norms.items()]
        was_training = self.model.training
        self.model.eval()
        for m in norms.values():
            m.train()
        try:
            x = np.ascontiguousarray(np.asarray(x_uint8).transpose(0, 3, 1, 2))
            with torch.no_grad(), self._autocast():
                self.model(self._to_input(torch.from_numpy(x)))
        finally:
            for h in handles:
                h.remove()
            self.model.train(was_training)
        return {name: (mean.double().cpu().numpy(), var.double().cpu().numpy(), count)
                for name, (mean, var, count) in seen.items()}

    def inference_fn(self):
        self._require_model()
        self.model.eval()
        # Static shapes, one specialization per batch size, as jax.jit and XLA do: with
        # torch.compile's default, the second batch size recompiles the model with a
        # dynamic batch dimension, slower kernels for every later size. The compile is
        # paid on each size's first call (first_call_s).
        model = torch.compile(self.model, dynamic=False) if self.config.compile else self.model

        def forward(x):
            with torch.inference_mode(), self._autocast():
                return model(x)
        return forward

    def _device_batch(self, x_float_nhwc: np.ndarray) -> torch.Tensor:
        return self._laid_out(torch.from_numpy(np.asarray(x_float_nhwc).transpose(0, 3, 1, 2)))

    def sync(self, outputs) -> None:
        # CUDA kernels run asynchronously: wait for them. On the CPU the call has already
        # computed its outputs when it returns.
        if self._device.type == "cuda":
            torch.cuda.synchronize()

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
            self.model.load_state_dict(state, strict=True)  # the compiled wrapper shares it
        except Exception as e:  # noqa: BLE001 - any unreadable or mismatched file
            raise WeightsError(f"cached PyTorch weights at {path} do not load into "
                               f"{self.architecture}: {str(e).splitlines()[0]}") from None
