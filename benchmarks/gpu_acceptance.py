"""One GPU acceptance run: inference through the lab's engines and harness, beside a bare
loop per framework and the published figures, in one table and one JSON (issue 15).

    python benchmarks/gpu_acceptance.py --json reference/h200-DATE.json   # on an H100/H200: ~8 minutes
    python benchmarks/gpu_acceptance.py --smoke --json /tmp/smoke.json    # tiny sizes on the CPU (tests)

What runs: ResNet-50, MobileNetV3-Small, EfficientNet-B0 and ViT-B/16 at 224 px, batch 1, 32
and 128; PyTorch at precision default and bf16 (eager) and bf16 + channels-last + compile;
JAX at default and bf16 (jit), and with XLA autotuning off (level 0) on ResNet-50 and
ViT-B/16 (a large slowdown the lab must show, not hide); Keras and TensorFlow at default and
bf16 where their GPU build computes on the GPU (else a row says why they were skipped).
Each (framework, model, variant) runs in its own process with the worker's environment,
through the scenario's timing (engines.runs.scenario.measure_batch_sizes: the trackers
for memory, NVML energy and CPU load), then the framework's bare loop
(benchmarks/bare_loops.py) on the same model and batches: the ratio harness/bare (goal
>= 0.97). At batch 128 each figure stands beside the best published one for the same
framework, model and variant (engines.analysis.reference; goal >= 90%, and JAX's ResNet-50
at default precision >= 11.5k img/s). `--smoke` runs the same code at tiny sizes on the CPU (the
lab's smallest CNN at 16 px, batch 1 and 2, a few calls): its figures are compared with
nothing, and its JSON is never a reference.
A run that would pass its time budget leaves the remaining jobs out, saying so.
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from engines.analysis import reference as ref  # no framework imported
from engines.frameworks import FRAMEWORKS, info, missing

ONE_FLAG = "--one"


@dataclass(frozen=True)
class Plan:
    models: tuple[str, ...]
    resolution: int
    classes: int
    batch_sizes: tuple[int, ...]
    warmup: int
    iters: int
    slow_iters: int  # for the variants expected to be very slow (XLA autotune 0)
    budget_s: float
    job_timeout_s: float
    on_gpu: bool  # where the frameworks must compute for their figures to count


FULL = Plan(models=("resnet50", "mobilenet_v3_small", "efficientnet_b0", "vit_b_16"), resolution=224, classes=1000,
            batch_sizes=(1, 32, 128), warmup=10, iters=50, slow_iters=3, budget_s=480, job_timeout_s=240,
            on_gpu=True)
# The same jobs at tiny sizes: the lab's smallest CNN at 16 px (torch.compile of an
# ImageNet model takes minutes on a small CPU), two batch sizes, a few calls.
SMOKE = Plan(models=("fan_arch1",), resolution=16, classes=10, batch_sizes=(1, 2), warmup=1, iters=3,
             slow_iters=2, budget_s=900, job_timeout_s=600, on_gpu=False)


@dataclass(frozen=True)
class Variant:
    name: str
    fields: dict = field(default_factory=dict)  # RunSpec fields
    models: tuple[str, ...] | None = None  # None: every model
    slow: bool = False


# PyTorch eager at default and bf16 (as torchvision's figures), then its fastest idiom;
# the XLA frameworks compiled (their idiom; a variant that does not say compiles, whatever
# RunSpec's default for short runs is). The autotune-0 variant on the models the
# published slowdown was seen on.
VARIANTS: dict[str, tuple[Variant, ...]] = {
    "pytorch": (Variant(ref.DEFAULT, {"compile": False}), Variant(ref.BF16, {"precision": "bf16", "compile": False}),
                Variant(ref.BF16_CL_COMPILE, {"precision": "bf16", "channels_last": True, "compile": True})),
    "jax": (Variant(ref.DEFAULT), Variant(ref.BF16, {"precision": "bf16"}),
            Variant(ref.AUTOTUNE_0, {"xla_autotune": 0}, models=("resnet50", "vit_b_16"), slow=True)),
    "keras": (Variant(ref.DEFAULT), Variant(ref.BF16, {"precision": "bf16"})),
    "tensorflow": (Variant(ref.DEFAULT), Variant(ref.BF16, {"precision": "bf16"})),
}


def jobs(plan: Plan, frameworks: list[str], smoke: bool) -> list[tuple[str, str, Variant, dict]]:
    """(framework, model, variant, the job's RunSpec dict) in the order they run: model by
    model, the slow variants last. In a smoke run a variant's models are the plan's."""
    from engines.runs.spec import RunSpec

    out, slow = [], []
    for model in plan.models:
        for fw in frameworks:
            for v in VARIANTS.get(fw, ()):
                if v.models is not None and model not in v.models and not (smoke and model == plan.models[0]):
                    continue
                spec = RunSpec(dataset="synthetic", resolution=plan.resolution, architecture=model, frameworks=(fw,),
                               batch_sizes=plan.batch_sizes, epochs=0, inference_only=True,
                               warmup_iters=plan.warmup, measure_iters=plan.slow_iters if v.slow else plan.iters,
                               dataset_options={"train": 8, "val": 8, "test": 32, "classes": plan.classes,
                                                "channels": 3}, **{"compile": True, **v.fields})
                (slow if v.slow else out).append((fw, model, v, spec.job(fw).to_dict()))
    return out + slow


# -- one job, in its own process -------------------------------------------------------------
def run_one(job: dict, on_gpu: bool) -> dict:
    """In a fresh process: the worker's environment and CPU pinning, the engine built from
    the model's single definition, every batch size through the scenario's timing with its
    trackers, then the bare loop on the same model and batches."""
    from engines import devices, threads
    from engines.runs import workerenv

    workerenv.apply(job)
    threads.pin(threads.cpu_threads())
    from benchmarks.bare_loops import bare_loop
    from engines.datasets import load_dataset
    from engines.frameworks import get_engine, runtimes
    from engines.runs import scenario
    from engines.runs.spec import RunSpec

    spec = RunSpec.from_dict(job).as_job()
    fw = spec.framework
    config = spec.train_config()
    engine = get_engine(fw, config)
    applied = scenario.apply_cpu_threads(fw, threads.cpu_threads())
    device = engine.device()
    built = runtimes.build(info(fw).runtime)
    head = {"device": device, "build": built["build"], "threads": applied}
    if devices.on_cpu(device) == on_gpu:
        return {**head, "status": "skipped",
                "message": f"{info(fw).label} computes on {device} here ({built['build']})"}
    dataset = load_dataset("synthetic", spec.resolution, seed=0, **dict(spec.dataset_options))
    scenario.build(engine, config, dataset, canonical=False)  # the framework's own weights: timing does not care
    points = scenario.measure_batch_sizes(engine, fw, spec.batch_sizes, warmup=spec.warmup_iters,
                                          iters=spec.measure_iters, images=dataset.test.x)
    rows = []
    for p in points:
        row = p.to_dict()
        if p.status == "ok":
            timed = bare_loop(engine, engine.inference_inputs(p.batch_size, dataset.test.x))
            seconds = timed(p.measured_iters)
            row["bare_images_per_s"] = p.batch_size * p.measured_iters / seconds if seconds > 0 else None
        rows.append(row)
    return {**head, "status": "ok", "points": rows}


def _one_main(job_path: str, on_gpu: str) -> None:
    out = os.fdopen(os.dup(1), "w", encoding="utf-8")
    os.dup2(2, 1)  # the frameworks' prints go to stderr; stdout is the one JSON line
    with open(job_path, encoding="utf-8") as f:
        job = json.load(f)
    try:
        answer = run_one(job, on_gpu == "gpu")
    except Exception as e:  # noqa: BLE001 - reported as the job's row
        answer = {"status": "error", "message": f"{type(e).__name__}: {(str(e).strip().splitlines() or [''])[0]}"}
    out.write(json.dumps(answer, default=str) + "\n")
    out.flush()
    os._exit(0)


def spawn(job: dict, plan: Plan) -> dict:
    """run_one in a fresh interpreter with the job's worker environment."""
    from engines.runs.workerenv import worker_env

    env = worker_env(job)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [ROOT, env.get("PYTHONPATH")]))
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as f:
        json.dump(job, f)
    try:
        done = subprocess.run([sys.executable, os.path.abspath(__file__), ONE_FLAG, f.name,
                               "gpu" if plan.on_gpu else "cpu"], cwd=ROOT, env=env, capture_output=True, text=True,
                              timeout=plan.job_timeout_s, stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        return {"status": "timed_out", "message": f"no answer within {plan.job_timeout_s:g} s"}
    finally:
        os.unlink(f.name)
    line = next((x for x in reversed(done.stdout.splitlines()) if x.startswith("{")), None)
    if line is None:
        tail = [x for x in done.stderr.splitlines() if x.strip()][-1:] or ["no output"]
        return {"status": "crashed", "message": f"exit code {done.returncode}: {tail[0]}"}
    return json.loads(line)


# -- the whole run ---------------------------------------------------------------------------
def flatten(fw: str, model: str, variant: Variant, answer: dict, smoke: bool) -> list[dict]:
    """One row per batch size (or one row for a job that gave no points)."""
    base = {"framework": fw, "architecture": model, "variant": variant.name, "device": answer.get("device"),
            "build": answer.get("build")}
    if answer.get("status") != "ok":
        return [{**base, "batch_size": None, "status": answer.get("status"), "message": answer.get("message")}]
    rows = []
    for p in answer["points"]:
        harness, bare = p.get("throughput_images_per_s"), p.get("bare_images_per_s")
        row = {**base, "batch_size": p["batch_size"], "status": p["status"], "message": p.get("message"),
               "images_per_s": harness, "bare_images_per_s": bare,
               "ratio": harness / bare if harness and bare else None,
               "energy_j_per_1000_images": p.get("energy_j_per_1000_images"),
               "allocator_peak_bytes": p.get("allocator_peak_bytes"),
               "nvml_process_memory_bytes": p.get("nvml_process_memory_bytes"),
               "peak_memory_bytes": p.get("peak_memory_bytes"), "first_call_s": p.get("first_call_s"),
               "measured_iters": p.get("measured_iters"), "noisy": p.get("noisy")}
        if p["batch_size"] == ref.REFERENCE_BATCH and not smoke:
            row["goal"] = ref.goal(fw, model, variant.name, harness)
        rows.append(row)
    return rows


def machine() -> dict:
    from engines import machine as m

    env = m.fingerprint()
    return {k: env.get(k) for k in ("gpu", "driver", "cuda", "cpu", "cpu_threads", "python", "versions")}


def run(plan: Plan, frameworks: list[str], smoke: bool, log=print) -> dict:
    t0 = time.monotonic()
    rows, skipped = [], []
    for fw in frameworks:
        absent = missing(fw)
        if absent is not None:
            skipped.append({"framework": fw, "why": f"not installed ({absent} is missing)"})
    runnable = [fw for fw in frameworks if missing(fw) is None]
    todo = jobs(plan, runnable, smoke)
    for n, (fw, model, variant, job) in enumerate(todo, 1):
        elapsed = time.monotonic() - t0
        if elapsed > plan.budget_s:
            skipped.append({"framework": fw, "architecture": model, "variant": variant.name,
                            "why": f"not run: the run had used its {plan.budget_s:g} s budget"})
            continue
        log(f"[{elapsed:5.0f} s] {n}/{len(todo)} {fw} {model} {variant.name}", file=sys.stderr)
        answer = spawn(job, plan)
        if answer.get("status") == "skipped":
            skipped.append({"framework": fw, "architecture": model, "variant": variant.name, "why": answer["message"]})
            continue
        rows += flatten(fw, model, variant, answer, smoke)
    return {"kind": ref.KIND, "version": ref.VERSION, "smoke": smoke,
            "created_at": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
            "machine": machine(), "plan": asdict(plan), "rows": rows, "skipped": skipped,
            "elapsed_s": round(time.monotonic() - t0, 1),
            "published": [asdict(p) for p in ref.PUBLISHED]}


def _fmt(v, spec: str, scale: float | None = None) -> str:
    return "-" if v is None else format(v if scale is None else v * scale, spec)


def table(doc: dict) -> str:
    """The one table: our figure, the bare loop's, their ratio, energy and memory, and at
    batch 128 the best published figure and the goal's verdict."""
    head = ("framework", "model", "variant", "batch", "status", "img/s", "bare img/s", "ratio", "J/1000",
            "alloc MiB", "NVML MiB", "published", "share", "goal")
    lines = []
    for r in doc["rows"]:
        g = r.get("goal") or {}
        verdict = "smoke" if doc["smoke"] else (g.get("verdict") or "")
        lines.append((info(r["framework"]).label, r["architecture"], r["variant"], _fmt(r["batch_size"], "d"),
                      r["status"] + ("*" if r.get("noisy") else ""), _fmt(r.get("images_per_s"), ",.1f"),
                      _fmt(r.get("bare_images_per_s"), ",.1f"), _fmt(r.get("ratio"), ".3f"),
                      _fmt(r.get("energy_j_per_1000_images"), ".1f"),
                      _fmt(r.get("allocator_peak_bytes"), ",.0f", 2**-20),
                      _fmt(r.get("nvml_process_memory_bytes"), ",.0f", 2**-20),
                      _fmt(g.get("best"), ",.0f"), _fmt(g.get("share"), ".0%"), verdict))
    widths = [max(len(str(x)) for x in col) for col in zip(head, *lines)]
    out = ["  ".join(str(x).ljust(w) if i < 3 else str(x).rjust(w) for i, (x, w) in enumerate(zip(row, widths)))
           for row in (head, *lines)]
    out.insert(1, "  ".join("-" * w for w in widths))
    m = doc["machine"]
    out.insert(0, f"GPU acceptance{' (SMOKE: tiny sizes on the CPU, compared with nothing)' if doc['smoke'] else ''}"
                  f" on {m.get('gpu') or m.get('cpu')}, driver {m.get('driver') or '-'}, {doc['elapsed_s']:g} s")
    for s in doc["skipped"]:
        what = " ".join(filter(None, [s["framework"], s.get("architecture"), s.get("variant")]))
        out.append(f"skipped: {what}: {s['why']}")
    ratios = [r["ratio"] for r in doc["rows"] if r.get("ratio")]
    if ratios:
        out.append(f"harness/bare: lowest {min(ratios):.3f} (goal >= {ref.RATIO_GOAL})"
                   + ("" if not doc["smoke"] else "; at tiny sizes on a CPU the ratio is noise"))
    out.append(f"published: the best figure for the same framework, model and variant at batch {ref.REFERENCE_BATCH} "
               f"(engines/analysis/reference.py); goal >= {ref.GOAL_SHARE:.0%} of it"
               f"{', JAX ResNet-50 default >= 11,500 img/s' if not doc['smoke'] else ''}; * a noisy timing")
    return "\n".join(out)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--smoke", action="store_true", help="tiny sizes on the CPU (the test suite runs this)")
    ap.add_argument("--json", metavar="FILE", help="write the whole run (kind lab-gpu-acceptance) to FILE")
    ap.add_argument("--frameworks", metavar="A,B", help=f"default: {', '.join(FRAMEWORKS)}")
    ap.add_argument("--models", metavar="A,B", help="default: the plan's four (smoke: fan_arch1)")
    ap.add_argument("--budget-s", type=float, help="leave out the jobs that would start after this many seconds")
    args = ap.parse_args(argv)
    plan = SMOKE if args.smoke else FULL
    if args.models:
        plan = Plan(**{**asdict(plan), "models": tuple(x.strip() for x in args.models.split(",") if x.strip())})
    if args.budget_s:
        plan = Plan(**{**asdict(plan), "budget_s": args.budget_s})
    frameworks = [x.strip() for x in (args.frameworks or ",".join(FRAMEWORKS)).split(",") if x.strip()]
    unknown = [f for f in frameworks if f not in FRAMEWORKS]
    if unknown:
        print(f"error: unknown framework {', '.join(unknown)}", file=sys.stderr)
        return 2
    if plan.on_gpu and not machine().get("gpu"):
        print("error: no NVIDIA GPU here (NVML found none): the acceptance run is for a GPU; --smoke runs the same "
              "code at tiny sizes on the CPU", file=sys.stderr)
        return 2
    doc = run(plan, frameworks, args.smoke)
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump(doc, f, indent=1, default=str)
    print(table(doc))
    failed = [r for r in doc["rows"] if r["status"] != "ok"]
    return 1 if failed or not doc["rows"] else 0


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == ONE_FLAG:
        _one_main(sys.argv[2], sys.argv[3])
    sys.exit(main())
