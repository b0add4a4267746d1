"""What a fresh worker pays before its first step: each installed framework's engine
imported in a fresh interpreter with the framework's worker environment (KERAS_BACKEND),
through engines.frameworks.engine_class as a worker started for a task (or a spare kept
warm) imports it, and, beside it, the same engine module imported plainly (with every
optional package its framework pulls in: the FrameworkInfo's `import_without`); and, on
their own, the shared modules every XLA framework imports first (ml_dtypes, NumPy).

    python benchmarks/import_time.py [--repeat 3] [--frameworks keras,pytorch,jax]

Per row: the median wall and CPU seconds of `--repeat` fresh interpreters, the interpreter's
own start subtracted (an empty `python -c pass` measured the same way), the versions that
decide it, and the load average. Why it exists: ml_dtypes 0.7.0 took 1.3 s of CPU to import
(0.15 s for 0.6.0), paid by every JAX and TensorFlow process (requirements.txt pins
0.6.0). A benchmark: nothing asserts a time.
"""
from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def load() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def version(dist: str) -> str:
    from engines.machine import package_version

    return package_version(dist) or "-"


def one(code: str, env: dict[str, str]) -> tuple[float, float]:
    """Wall and CPU seconds (user + system, the child's own) of `python -c code`."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def median_of(code: str, env: dict[str, str], repeat: int) -> tuple[float, float]:
    runs = [one(code, env) for _ in range(repeat)]
    return statistics.median(w for w, _ in runs), statistics.median(c for _, c in runs)


def rows(frameworks: list[str]) -> list[tuple[str, str, dict[str, str]]]:
    """(name, code, extra environment) per row: the shared modules, then each engine as a
    worker imports it and plainly."""
    from engines.frameworks import FRAMEWORKS

    out = [("numpy", "import numpy", {}), ("ml_dtypes", "import ml_dtypes", {})]
    for name in frameworks:
        f = FRAMEWORKS[name]
        env = dict(f.environment)
        out.append((name, f"from engines.frameworks import engine_class; engine_class({name!r})", env))
        if f.import_without:
            module = f.engine.split(":")[0]
            out.append(("  plain import", f"import engines.frameworks.{module}", env))
    return out


def main(argv: list[str] | None = None) -> int:
    from engines.frameworks import FRAMEWORKS, installed

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--frameworks", default=",".join(n for n in FRAMEWORKS if installed(n)))
    args = parser.parse_args(argv)
    chosen = [f.strip() for f in args.frameworks.split(",") if f.strip()]
    unknown = [f for f in chosen if f not in FRAMEWORKS or not installed(f)]
    if unknown:
        parser.error(f"not installed or unknown: {', '.join(unknown)}")
    if args.repeat < 1:
        parser.error(f"--repeat must be at least 1 (got {args.repeat})")

    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    base_wall, base_cpu = median_of("pass", env, args.repeat)
    print(f"{os.cpu_count()} CPUs; numpy {version('numpy')}, ml_dtypes {version('ml_dtypes')}, "
          f"jax {version('jax')}, tensorflow {version('tensorflow')}, keras {version('keras')}, "
          f"torch {version('torch')}; interpreter start {base_wall:.2f} s (subtracted); "
          f"median of {args.repeat}")
    print(f"{'import':<16}{'wall s':>8}{'cpu s':>8}   load")
    for name, code, extra in rows(chosen):
        wall, cpu = median_of(code, {**env, **extra}, args.repeat)
        print(f"{name:<16}{wall - base_wall:>8.2f}{cpu - base_cpu:>8.2f}   {load()}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
