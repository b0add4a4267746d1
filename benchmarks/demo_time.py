"""Where the default comparison's time goes: the home page's default request (the one
`python -m engines demo` runs), each framework in its own fresh worker as the queue runs
it, one after the other, from an empty cache (a temporary LAB_CACHE_DIR), with the
worker's events timed as they arrive.

    python benchmarks/demo_time.py [--compile default|on|off] [--frameworks keras,pytorch,jax]
                                   [--workers ahead|fresh]

First, as the queue does (engines.runs.spares), the job's workers started together and
waited for until each has imported its framework ("ahead"; `--workers fresh`: each task
starts its own worker when it starts, as before). Per framework: start-up (until the
worker's first event: interpreter and the lab's modules, for a fresh worker), data, the
framework's import (nothing left for a worker started ahead), build, train (of which the
compile and first step, as the result records it), evaluate, timing of inference, and the
whole task; then the total, and the load average beside each row. `--compile on|off`
measures the same request with compile forced, to see whether compiling pays for a run
this short (what each framework's compile_default in engines/frameworks rests on). A
benchmark: nothing asserts a time.
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

STAGES = ("worker_started", "loading data", "importing the framework", "building", "training", "evaluating",
          "timing", "finished")


def load() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def measure(framework: str, spec) -> dict:
    """One task through the launcher (as the queue runs it): seconds per stage."""
    from engines.runs.launcher import run_job

    seen: dict[str, float] = {}

    def on_event(e: dict) -> None:
        name = e.get("stage") if e.get("event") == "stage" else e.get("event")
        if name in STAGES and name not in seen:
            seen[name] = time.monotonic()

    t0 = time.monotonic()
    result = run_job(spec.job(framework), on_event=on_event)
    end = time.monotonic()
    seen.setdefault("finished", end)

    def between(a: str, b: str):
        return seen[b] - seen[a] if a in seen and b in seen else None

    train = result.train
    return {"framework": framework, "status": result.status, "message": result.message,
            "compile": (result.spec or {}).get("compile"),
            "start-up": between_start(t0, seen), "data": between("loading data", "importing the framework"),
            "import": between("importing the framework", "building"),
            "build": between("building", "training"), "train": between("training", "evaluating"),
            "compile+1st step": train.compile_time_s if train else None,
            "evaluate": between("evaluating", "timing"), "timing": between("timing", "finished"),
            "task": end - t0, "accuracy": result.evaluation.accuracy if result.evaluation else None,
            "load": load()}


def between_start(t0: float, seen: dict):
    return seen["worker_started"] - t0 if "worker_started" in seen else None


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--compile", choices=("default", "on", "off"), default="default",
                    help="the default request's compile setting (each framework's own), or on/off in every one")
    ap.add_argument("--frameworks", help="comma-separated (default: the default comparison's)")
    ap.add_argument("--workers", choices=("ahead", "fresh"), default="ahead",
                    help="start the workers together before the first task, as the queue does (default), "
                         "or each when its task starts")
    args = ap.parse_args(argv)
    os.environ["LAB_WARM_WORKERS"] = "1" if args.workers == "ahead" else "0"
    os.environ["LAB_CACHE_DIR"] = tempfile.mkdtemp(prefix="demo-time-")  # an empty cache
    from engines.runs.spec import compile_text, default_request

    spec = default_request()
    if args.frameworks:
        spec = spec.replace(frameworks=tuple(args.frameworks.split(",")))
    if args.compile != "default":
        spec = spec.replace(compile=args.compile == "on")
    print(f"default comparison: {spec.dataset}, {spec.architecture}, {spec.epochs} epochs, "
          f"frameworks {', '.join(spec.frameworks)}, {compile_text(spec.compile, spec.compile_by_framework())}; "
          f"load {load()}")
    cols = ("start-up", "data", "import", "build", "train", "compile+1st step", "evaluate", "timing", "task")
    print(f"{'framework':<10}{'compile':>8}" + "".join(f"{c:>17}" for c in cols) + f"{'accuracy':>10}  load")
    t = time.monotonic()
    if args.workers == "ahead":
        from engines.runs.spares import SPARES

        SPARES.prepare([spec.job(fw) for fw in spec.frameworks])
        print(f"{'workers started ahead, together':<42}{time.monotonic() - t:>17.1f}  load {load()}", flush=True)
    for fw in spec.frameworks:
        row = measure(fw, spec)
        cells = "".join(f"{row[c]:>17.1f}" if row[c] is not None else f"{'-':>17}" for c in cols)
        acc = f"{row['accuracy']:.3f}" if row["accuracy"] is not None else "-"
        print(f"{fw:<10}{str(row['compile']):>8}{cells}{acc:>10}  {row['load']}"
              + (f"  {row['status']}: {row['message']}" if row["status"] != "ok" else ""), flush=True)
    print(f"total (workers {args.workers}, then the tasks one after the other, as the queue runs them): "
          f"{time.monotonic() - t:.1f} s; load {load()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
