"""The measurement harness: how the lab times, meters and isolates a run.

Framework-free pieces, composable as optimum-benchmark's trackers are:
  timing  - the measured loop (warm-up apart, every call synchronized) and latency stats
  memory  - allocator peak per framework, NVML process memory, CPU peak RSS and CPU use
  energy  - NVML energy counter over the measured window (power-sampling fallback)
  env     - the worker's environment, built from a RunSpec from a closed list
  sweep   - inference at each batch size, an out-of-memory size a data point
Nothing here imports a framework at module level: the parent process (the app) uses
env.py without paying for TensorFlow, PyTorch or JAX.
"""
