"""The trackers: how the lab times, meters and watches a run, one concern each.

Framework-free pieces, composable as optimum-benchmark's trackers are:
  timing  - the measured loop (warm-up apart, every call synchronized) and latency stats
  memory  - allocator peak per framework, NVML process memory, CPU peak RSS
  energy  - NVML energy counter over the measured window (power-sampling fallback)
  cpu     - the cores a process kept busy over a window
  nvml    - the worker's GPU handle
The memory, energy and CPU trackers are context managers (a training run), and energy and
CPU use are also windows of timing.measure (exactly the measured calls). Nothing here
imports a framework at module level.
"""
