"""Reference figures: the GPU acceptance run's JSON, and the published figures it is held to.

`benchmarks/gpu_acceptance.py` writes one JSON document per run (FORMAT below); a run on
a real GPU is committed under `reference/` with the machine it ran on, and the Speed and
Energy & memory pages show its figures beside the user's own, labelled with the GPU and
the date (labui reads them through `load`), so a class without a GPU still sees what
one does. A smoke run (tiny sizes on the CPU) is never a reference.

PUBLISHED holds the figures issue 15 gives (img/s at batch 128, 224 px): torchvision's
models on an H100 80GB with PyTorch 2.11, a JAX/Flax ResNet-50, and the H100 paper's
PyTorch and JAX figures. Each entry names the acceptance variants it compares to; the goal
is each of our engines at >= GOAL_SHARE of the best published figure for the same
framework, model and variant, and JAX's ResNet-50 at default precision >= JAX_RESNET50_GOAL.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from engines.paths import REPO_ROOT

KIND = "lab-gpu-acceptance"
VERSION = 1
REFERENCE_DIR = REPO_ROOT / "reference"
GOAL_SHARE = 0.90
RATIO_GOAL = 0.97  # harness / bare loop
JAX_RESNET50_GOAL = 11_500.0
REFERENCE_BATCH = 128

# The variants the acceptance run measures, by framework (see benchmarks/gpu_acceptance.py).
DEFAULT = "default"
BF16 = "bf16"
BF16_CL_COMPILE = "bf16+channels-last+compile"
AUTOTUNE_0 = "default, XLA autotune 0"


@dataclass(frozen=True)
class Published:
    framework: str
    architecture: str
    what: str  # the source's own words for its precision and settings
    images_per_s: float
    source: str
    compares_to: tuple[str, ...] = ()  # our variants that run the same precision and settings


_TV = "H100 80GB, PyTorch 2.11, torchvision's models"
_FLAX = "H100 80GB, JAX/Flax ResNet-50 (25,557,032 parameters)"
_PAPER = "the H100 paper (../shared/papers/), precision as published"
PUBLISHED: tuple[Published, ...] = (
    Published("pytorch", "resnet50", "fp32", 3_333, _TV),
    # PyTorch's default runs convolutions in TF32 and matmuls in fp32: for the CNNs (one
    # small matmul, the classifier) that is the TF32 figure; for ViT it is not.
    Published("pytorch", "resnet50", "TF32", 6_013, _TV, (DEFAULT,)),
    Published("pytorch", "resnet50", "bf16 + channels-last", 12_050, _TV),
    Published("pytorch", "resnet50", "bf16 + channels-last + compile", 19_482, _TV, (BF16_CL_COMPILE,)),
    Published("pytorch", "mobilenet_v3_small", "TF32", 31_771, _TV, (DEFAULT,)),
    Published("pytorch", "efficientnet_b0", "bf16 + channels-last + compile", 21_055, _TV, (BF16_CL_COMPILE,)),
    Published("pytorch", "vit_b_16", "TF32", 4_179, _TV),
    Published("pytorch", "vit_b_16", "bf16 + compile (channels-last touches only its stem)", 8_992, _TV,
              (BF16_CL_COMPILE,)),
    Published("jax", "resnet50", "default precision", 11_531, _FLAX, (DEFAULT,)),
    Published("jax", "resnet50", "bf16", 18_777, _FLAX, (BF16,)),
    Published("jax", "resnet50", "--xla_gpu_autotune_level=0", 62, _FLAX, (AUTOTUNE_0,)),
    Published("pytorch", "resnet50", "paper", 5_915, _PAPER, (DEFAULT,)),
    Published("jax", "resnet50", "paper", 11_739, _PAPER, (DEFAULT,)),
    Published("pytorch", "mobilenet_v3_small", "paper", 37_325, _PAPER, (DEFAULT,)),
    Published("jax", "mobilenet_v3_small", "paper", 56_123, _PAPER, (DEFAULT,)),
    Published("pytorch", "efficientnet_b0", "paper", 9_027, _PAPER, (DEFAULT,)),
    Published("jax", "efficientnet_b0", "paper", 16_510, _PAPER, (DEFAULT,)),
    Published("pytorch", "vit_b_16", "paper", 946, _PAPER, (DEFAULT,)),
    Published("jax", "vit_b_16", "paper", 530, _PAPER, (DEFAULT,)),
)


def published_for(framework: str, architecture: str, variant: str | None = None) -> list[Published]:
    """The published figures for a framework and model (and, given, one of our variants)."""
    return [p for p in PUBLISHED if p.framework == framework and p.architecture == architecture
            and (variant is None or variant in p.compares_to)]


def goal(framework: str, architecture: str, variant: str, images_per_s: float | None) -> dict:
    """Our figure at batch 128 against the best published one for the same framework,
    model and variant: {"best", "source", "share", "target", "verdict"} ("pass", "fail",
    or "no reference" / "not measured")."""
    matches = published_for(framework, architecture, variant)
    best = max(matches, key=lambda p: p.images_per_s, default=None)
    target = GOAL_SHARE * best.images_per_s if best else None
    if framework == "jax" and architecture == "resnet50" and variant == DEFAULT:
        target = max(target or 0.0, JAX_RESNET50_GOAL)
    out = {"best": best.images_per_s if best else None, "source": f"{best.what}, {best.source}" if best else None,
           "target": target, "share": None, "verdict": "no reference"}
    if best is None or variant == AUTOTUNE_0:  # the slowdown is shown, not held to a goal
        return out
    if images_per_s is None:
        return {**out, "verdict": "not measured"}
    return {**out, "share": images_per_s / best.images_per_s,
            "verdict": "pass" if images_per_s >= target else "fail"}


# -- reading reference files --------------------------------------------------------------
class ReferenceError(ValueError):
    """A file under reference/ is not an acceptance run's JSON; the message says why."""


def check(doc, where: str = "reference") -> dict:
    """`doc` if it is an acceptance run fit to be a reference (not a smoke run), else
    ReferenceError naming the field."""
    if not isinstance(doc, dict) or doc.get("kind") != KIND:
        raise ReferenceError(f"{where}: not a {KIND} document")
    if doc.get("version") != VERSION:
        raise ReferenceError(f"{where}: version {doc.get('version')!r}, this lab reads {VERSION}")
    if doc.get("smoke"):
        raise ReferenceError(f"{where}: a smoke run (tiny sizes on the CPU) is not a reference")
    machine = doc.get("machine")
    if not isinstance(machine, dict) or not machine.get("gpu"):
        raise ReferenceError(f"{where}: machine.gpu is missing (a reference is a GPU's run)")
    if not isinstance(doc.get("created_at"), str) or not isinstance(doc.get("rows"), list):
        raise ReferenceError(f"{where}: created_at (text) and rows (a list) are required")
    return doc


def load(folder: Path | str = REFERENCE_DIR) -> tuple[list[dict], list[str]]:
    """(the reference documents under `folder`, newest first; a warning per file that is
    not one). No folder: no references."""
    docs, problems = [], []
    for path in sorted(Path(folder).glob("*.json")) if Path(folder).is_dir() else []:
        try:
            docs.append(check(json.loads(path.read_text(encoding="utf-8")), path.name))
            docs[-1] = {**docs[-1], "file": path.name}
        except (OSError, ValueError) as e:  # JSONDecodeError and ReferenceError are ValueErrors
            problems.append(str(e) if isinstance(e, ReferenceError) else f"{path.name}: {e}")
    docs.sort(key=lambda d: d["created_at"], reverse=True)
    return docs, problems


def label(doc: dict) -> str:
    """"NVIDIA H200, 2026-05-02": the GPU and the date a reference was taken."""
    return f"{doc['machine']['gpu']}, {doc['created_at'][:10]}"
