"""What a framework computed on, in one spelling, and whether a comparison mixes devices.

Every worker records the device its framework computed on in the result's
`environment.device`: "cuda:0 NVIDIA H200" (kind, index within the worker, name) or
"cpu". A GPU workstation without JAX's or TensorFlow's GPU build runs them on the CPU
beside PyTorch on the GPU; such a comparison compares hardware, not frameworks, so it
is never shown unmarked (`mixed`). Nothing here imports a framework: the pages and the
command line read it; engines.frameworks.runtimes makes the labels.
"""
from __future__ import annotations

from dataclasses import dataclass

from engines.frameworks import label as framework_label

CPU = "cpu"


def label(kind: str, index: int | None = None, name: str | None = None) -> str:
    """"cuda:0 NVIDIA H200", "cpu": the spelling every result uses."""
    if kind == CPU:
        return CPU
    head = f"{kind}:{index}" if index is not None else kind
    return f"{head} {name}".strip() if name else head


def kind(device: str | None) -> str | None:
    """The kind of a device label ("cpu", "cuda", "rocm", "tpu", ...); None when not
    measured. A bare GPU name (results written before labels had a kind) is a "gpu"."""
    if not device:
        return None
    head = device.split()[0]
    if head.lower() == CPU:
        return CPU
    return head.split(":")[0].lower() if ":" in head else "gpu"


def on_cpu(device: str | None) -> bool:
    return kind(device) == CPU


@dataclass(frozen=True)
class Mixed:
    """A comparison whose frameworks computed on different kinds of device."""

    by_kind: dict[str, list[str]]  # kind -> the labels of the frameworks that ran on it
    devices: dict[str, list[str]]  # kind -> the devices of that kind

    @property
    def reason(self) -> str:
        """One sentence for the pages and the command line."""
        parts = [f"{', '.join(fws)} on {self._where(k)}" for k, fws in self.by_kind.items()]
        return ("mixed devices: " + "; ".join(parts) + ". Their timings, memory and energy compare different "
                "hardware, not the frameworks" + self._fix() + ".")

    def _where(self, k: str) -> str:
        return "the CPU" if k == CPU else " / ".join(self.devices[k])

    def _fix(self) -> str:
        if CPU not in self.by_kind:
            return ""
        return (f"; {', '.join(self.by_kind[CPU])} fell back to the CPU: `./lab doctor` says why, "
                "and `./lab install --dry-run` what `./lab install` adds for this GPU")


def _as_dict(r) -> dict:
    return r.to_dict() if hasattr(r, "to_dict") else r


def mixed(results) -> Mixed | None:
    """The comparison's frameworks by kind of device when there is more than one kind,
    else None. `results`: RunResults or their schema-1 dicts; a result that failed before
    its engine started has no device and does not count."""
    by_kind: dict[str, list[str]] = {}
    devices: dict[str, list[str]] = {}
    for r in map(_as_dict, results):
        device = (r.get("environment") or {}).get("device")
        if not device:
            continue
        k = kind(device)
        fw = framework_label(r.get("framework"))
        if fw not in by_kind.setdefault(k, []):
            by_kind[k].append(fw)
        if device not in devices.setdefault(k, []):
            devices[k].append(device)
    return Mixed(by_kind, devices) if len(by_kind) > 1 else None


def gpu_fix(framework: str, requirements: str | None = None) -> str:
    """What to run so that `framework` computes on this machine's GPU: always ./lab (which
    picks the GPU requirement file for the driver: `requirements` when known), never a
    hand-written pip line."""
    from engines.frameworks import FRAMEWORKS

    f = FRAMEWORKS.get(framework)
    hint = f.gpu_install_hint if f else None
    source = requirements or "requirements-gpu-cuda13.txt or -cuda12.txt, whichever the driver runs"
    adds = f" (it installs {hint} from {source})" if hint else ""
    return f"run `./lab install`{adds}; `./lab install --dry-run` shows what it installs for this driver and why"
