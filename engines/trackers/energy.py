"""Energy over exactly the measured window, from NVML.

Preferred: the GPU's cumulative energy counter (nvmlDeviceGetTotalEnergyConsumption,
millijoules since the driver loaded; Volta and newer), read at the window's start and
end, as Zeus does. Where the counter is missing: power (nvmlDeviceGetPowerUsage,
milliwatts) sampled every ≤ 100 ms in a thread and integrated (trapezoids), labelled as
such. Without an NVIDIA GPU: "not measured" and None, never 0.

Both read the whole GPU, not this process: another job on the same card would be counted
(the lab's queue runs one GPU job at a time). The counter updates about every 100 ms, so
the caller extends short windows to ≥ 1 s (timing.measure's min_window_s).
"""
from __future__ import annotations

import threading
import time

from engines.trackers.nvml import nvml_device_handle
from engines.trackers.timing import Window

COUNTER = "nvml_energy_counter"
SAMPLING = "nvml_power_sampling"
MIN_WINDOW_S = 1.0
MAX_SAMPLE_INTERVAL_S = 0.1


class EnergyMeter(Window):
    """start()/stop() around a window; `result()` is the figure and how it was taken."""

    def __init__(self, *, nvml=None, enabled: bool = True, reason: str = "",
                 sample_interval_s: float = MAX_SAMPLE_INTERVAL_S, clock=time.perf_counter):
        self.clock = clock
        self.interval = min(sample_interval_s, MAX_SAMPLE_INTERVAL_S)
        self.method: str | None = None
        self.reason = reason or "not measured: no NVIDIA GPU (NVML) for this run"
        self.energy_j: float | None = None
        self.duration_s: float | None = None
        self._nv = self._handle = None
        found = nvml_device_handle(nvml) if enabled else None
        if found is None:
            return
        self._nv, self._handle = found
        try:
            self._nv.nvmlDeviceGetTotalEnergyConsumption(self._handle)
            self.method = COUNTER
            return
        except Exception:  # noqa: BLE001 - NVMLError_NotSupported on older GPUs
            pass
        try:
            self._nv.nvmlDeviceGetPowerUsage(self._handle)
            self.method = SAMPLING
        except Exception:  # noqa: BLE001 - NVMLError_NotSupported: no power reading either
            self.reason = "not measured: this GPU reports neither an energy counter nor power"

    @property
    def available(self) -> bool:
        return self.method is not None

    # -- the window -------------------------------------------------------------------
    def start(self) -> None:
        self.energy_j = self.duration_s = None
        if self.method is None:
            return
        self._t0 = self.clock()
        if self.method == COUNTER:
            self._e0 = self._nv.nvmlDeviceGetTotalEnergyConsumption(self._handle)
        else:
            self._samples = [(self._t0, self._power_w())]
            self._stop = threading.Event()
            self._thread = threading.Thread(target=self._sample, name="energy-sampler", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        if self.method is None:
            return
        if self.method == COUNTER:
            e1 = self._nv.nvmlDeviceGetTotalEnergyConsumption(self._handle)
            self.duration_s = self.clock() - self._t0
            self.energy_j = (e1 - self._e0) / 1000.0  # millijoules
        else:
            self._stop.set()
            self._thread.join()
            self._samples.append((self.clock(), self._power_w()))
            self.duration_s = self._samples[-1][0] - self._t0
            self.energy_j = _trapezoid(self._samples)

    def _power_w(self) -> float:
        return self._nv.nvmlDeviceGetPowerUsage(self._handle) / 1000.0  # milliwatts

    def _sample(self) -> None:
        while not self._stop.wait(self.interval):
            self._samples.append((self.clock(), self._power_w()))

    # -- the figure -------------------------------------------------------------------
    def result(self, *, images: int | None = None, epochs: int | None = None) -> dict:
        """{"energy_j", "mean_w", "j_per_1000_images", "j_per_epoch", "method", "note"};
        every figure None when not measured."""
        out = {"energy_j": None, "mean_w": None, "j_per_1000_images": None, "j_per_epoch": None,
               "window_s": self.duration_s, "method": self.method, "note": None}
        if self.method is None or self.energy_j is None:
            out["note"] = self.reason
            return out
        e = self.energy_j
        out["energy_j"] = e
        out["mean_w"] = e / self.duration_s if self.duration_s else None
        if images:
            out["j_per_1000_images"] = e / images * 1000.0
        if epochs:
            out["j_per_epoch"] = e / epochs
        if self.method == SAMPLING:
            out["note"] = f"power sampled every {self.interval * 1000:.0f} ms and integrated (no energy counter)"
        if self.duration_s is not None and self.duration_s < MIN_WINDOW_S:
            out["note"] = ((out["note"] + "; ") if out["note"] else "") + \
                f"window {self.duration_s:.2f} s is shorter than {MIN_WINDOW_S:g} s: coarse"
        return out


def _trapezoid(samples: list[tuple[float, float]]) -> float:
    return sum((t1 - t0) * (p0 + p1) / 2 for (t0, p0), (t1, p1) in zip(samples, samples[1:]))
