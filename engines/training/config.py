"""What one training run means, the same for every framework.

`TrainConfig` is the engines' own, framework-free description of a training run; the
run-spec layer maps its RunSpec onto it. Every field has one meaning in all four engines;
where the frameworks' defaults disagree the choice made here is written next to the field.
"""
from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass

# The allowed values of the run settings, defined once: the RunSpec, the command line, the
# worker's environment and the Run page read them from here.
OPTIMIZERS = ("adam", "adamw", "sgd")
SCHEDULES = ("constant", "cosine", "step")
PRECISIONS = ("default", "fp32", "tf32", "bf16")
PIPELINES = ("idiomatic", "device")
XLA_AUTOTUNE_LEVELS = (0, 1, 2, 3, 4)  # --xla_gpu_autotune_level; unset: XLA's own default

# Keras's Adam defaults to 1e-7, PyTorch's and Optax's to 1e-8: one value for all.
# (Keras adds epsilon to sqrt(v) before bias correction, PyTorch/Optax after it; with the
# same value the effective epsilon differs by sqrt(1 - beta2**t), which only matters for
# parameters whose gradients are about that small. Written into the result as a note.)
DEFAULT_ADAM_EPSILON = 1e-7
ADAM_BETAS = (0.9, 0.999)


class ConfigError(ValueError):
    """A training configuration value is invalid; the message says which and why."""


@dataclass(frozen=True)
class TrainConfig:
    architecture: str
    epochs: int = 5
    batch_size: int = 128
    optimizer: str = "adam"
    learning_rate: float = 1e-3
    adam_epsilon: float = DEFAULT_ADAM_EPSILON
    # Decoupled (AdamW-style: p -= lr * wd * p) for "adamw"; for "sgd" it is added to the
    # gradient (L2), which equals decoupled decay for plain SGD. "adam" takes none: the
    # frameworks disagree on what Adam's weight decay means (Keras decoupled, PyTorch L2).
    weight_decay: float = 0.0
    momentum: float = 0.0  # sgd only
    lr_schedule: str = "constant"  # "step": x0.1 at 50% and 75% of the epochs, as MedMNIST
    class_weights: bool = False  # n_samples / (n_classes * count), loss = mean(w_i * l_i)
    dropout: bool = True  # False sets every dropout rate to 0 (the agreement test)
    # After training, the BatchNorm running statistics are recomputed over the training
    # split (engines.training.batchnorm: one rule in every framework).
    recompute_batchnorm: bool = False
    seed: int = 0
    precision: str = "default"
    compile: bool = True  # torch.compile / TF jit_compile (XLA) / jax.jit
    pipeline: str = "idiomatic"
    cudnn_benchmark: bool = False  # PyTorch only; recorded for the others
    channels_last: bool = False  # PyTorch only; recorded for the others
    same_init: bool = True  # initial weights from models.init_weights(seed), shared by all
    # Start from pretrained weights instead: "torchvision" (its published file for the
    # architecture) or a weights file inside the data folders (engines.pretrained).
    pretrained: str | None = None
    log_every_steps: int = 10  # progress events: one "step" event every N steps

    def __post_init__(self):
        def bad(field, why):
            raise ConfigError(f"{field}: {why}")

        if not isinstance(self.architecture, str) or not self.architecture:
            bad("architecture", "must be a non-empty name")
        for name in ("epochs", "batch_size", "seed", "log_every_steps"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int):
                bad(name, f"must be an integer, got {v!r}")
        if self.epochs < 1:
            bad("epochs", f"must be at least 1, got {self.epochs}")
        if self.batch_size < 1:
            bad("batch_size", f"must be at least 1, got {self.batch_size}")
        if self.seed < 0:
            bad("seed", f"must be >= 0, got {self.seed}")
        if self.log_every_steps < 1:
            bad("log_every_steps", f"must be at least 1, got {self.log_every_steps}")
        for name, allowed in (("optimizer", OPTIMIZERS), ("lr_schedule", SCHEDULES),
                              ("precision", PRECISIONS), ("pipeline", PIPELINES)):
            if getattr(self, name) not in allowed:
                bad(name, f"must be one of {', '.join(allowed)}; got {getattr(self, name)!r}")
        for name in ("learning_rate", "adam_epsilon", "weight_decay", "momentum"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
                bad(name, f"must be a finite number, got {v!r}")
        if self.learning_rate <= 0:
            bad("learning_rate", f"must be > 0, got {self.learning_rate}")
        if self.adam_epsilon <= 0:
            bad("adam_epsilon", f"must be > 0, got {self.adam_epsilon}")
        if self.weight_decay < 0:
            bad("weight_decay", f"must be >= 0, got {self.weight_decay}")
        if self.optimizer == "adam" and self.weight_decay > 0:
            bad("weight_decay", "Adam's weight decay means different things in Keras (decoupled) "
                "and PyTorch (L2); use optimizer 'adamw' for decoupled weight decay")
        if not 0 <= self.momentum < 1:
            bad("momentum", f"must be in [0, 1), got {self.momentum}")
        if self.momentum and self.optimizer != "sgd":
            bad("momentum", "applies to optimizer 'sgd' only")
        if self.pretrained is not None and (not isinstance(self.pretrained, str) or not self.pretrained.strip()):
            bad("pretrained", f"must be 'torchvision' or a weights file's path, got {self.pretrained!r}")
        for name in ("class_weights", "dropout", "compile", "cudnn_benchmark",
                     "channels_last", "same_init", "recompute_batchnorm"):
            if not isinstance(getattr(self, name), bool):
                bad(name, f"must be true or false, got {getattr(self, name)!r}")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_dict(cls, d: dict) -> TrainConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ConfigError(f"unknown field(s): {', '.join(unknown)}")
        return cls(**d)

    def replace(self, **changes) -> TrainConfig:
        return dataclasses.replace(self, **changes)
