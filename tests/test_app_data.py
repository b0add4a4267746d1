"""Realistic schema-1 RunResults for the app's tests, and unit tests of labui's data
shaping and chart builders (no Streamlit needed)."""
import json
import math
import subprocess
import sys
import zlib

import numpy as np
import pandas as pd
from conftest import REPO

FRAMEWORK_SPEED = {"keras": 1.0, "tensorflow": 1.1, "pytorch": 1.4, "jax": 1.7}


def make_result(framework="pytorch", seed=0, *, dataset="digits", resolution=8, architecture="fan_arch1",
                epochs=2, batch_sizes=(1, 32, 128, 1024), oom_from=None, gpu=True, status="ok",
                message=None, precision="default", classes=10, extras=True) -> dict:
    """One RunResult as the worker writes it. ``gpu=False`` leaves energy and memory
    null (not measured), as on a CPU. Batch sizes >= ``oom_from`` are OOM data points."""
    # crc32, not hash(): str hashes are salted per process, and the figures must not be.
    rng = np.random.default_rng(zlib.crc32(f"{framework}|{seed}|{dataset}|{precision}".encode()))
    speed = FRAMEWORK_SPEED[framework]
    spec = {"dataset": dataset, "resolution": resolution, "architecture": architecture, "frameworks": [framework],
            "batch_sizes": list(batch_sizes), "epochs": epochs, "train_batch_size": None, "repeats": 1,
            "seed": seed, "optimizer": "adam", "learning_rate": None, "lr_schedule": "constant",
            "weight_decay": 0.0, "precision": precision, "compile": True, "xla_autotune": None,
            "cudnn_benchmark": False, "channels_last": False, "pipeline": "idiomatic", "class_weights": False,
            "same_init": True, "inference_only": False, "warmup_iters": 20, "measure_iters": 100,
            "dataset_options": {}}
    env = {"device": "cuda:0" if gpu else "cpu", "gpu": "NVIDIA H100 80GB HBM3" if gpu else None,
           "driver": "570.86.15" if gpu else None, "cuda": "12.8" if gpu else None,
           "cpu": "AMD EPYC 9454", "python": "3.11.2",
           "versions": {"torch": "2.13.0", "tensorflow": "2.21.0", "keras": "3.15.1", "jax": "0.10.2"}}
    result = {"schema": 1, "framework": framework, "status": status, "message": message, "spec": spec,
              "environment": env,
              "model": {"architecture": architecture, "parameters": 5_626, "flops_per_image": 251_520}}
    if status != "ok":
        result.update(train=None, evaluation=None, inference=[])
        return result
    hist = []
    for e in range(epochs):
        loss = 2.3 * math.exp(-1.2 * (e + 1)) + rng.uniform(0, 0.05)
        hist.append({"epoch": e + 1, "loss": loss, "accuracy": min(0.99, 0.55 + 0.2 * e + rng.uniform(0, 0.05)),
                     "val_loss": loss * 1.1, "val_accuracy": min(0.99, 0.6 + 0.18 * e + rng.uniform(0, 0.05)),
                     "time_s": 2.0 / speed + rng.uniform(0, 0.1)})
    total = sum(h["time_s"] for h in hist) + 1.5
    train = {"epochs": hist, "compile_time_s": {"keras": 3.1, "tensorflow": 2.5, "pytorch": 6.2, "jax": 1.4}[framework],
             "total_time_s": total, "images_per_s": 1259 * speed / 2.0,
             "energy_j": 150.0 * total if gpu else None,
             "peak_memory_bytes": int(300e6 * speed) if gpu else None, "input_pipeline": "tf.data" if framework in (
                 "keras", "tensorflow") else ("DataLoader" if framework == "pytorch" else "numpy batches"),
             "steps_per_epoch": 40, "first_step_losses": [2.30, 2.28], "notes": []}
    if extras:  # as the real harness writes them
        train["memory_source"] = "framework allocator peak" if gpu else "process peak RSS (CPU run)"
        train["allocator_peak_bytes"] = train["peak_memory_bytes"]
        train["nvml_process_memory_bytes"] = int(900e6 * speed) if gpu else None
        train["peak_rss_bytes"] = None if gpu else int(400e6 * speed)
        train["cpu_cores_used"] = 0.9 + 0.1 * seed
        train["energy"] = {"energy_j": train["energy_j"], "note": None if gpu else
                           "not measured: the run used the CPU (NVML reads NVIDIA GPUs only)"}
    names = [str(i) for i in range(classes)]
    support = [27] * (classes - 1) + [269 - 27 * (classes - 1)]
    cm = []
    for i, s in enumerate(support):
        right = int(s * rng.uniform(0.8, 0.98))
        row = [0] * classes
        row[i] = right
        row[(i + 1) % classes] = s - right
        cm.append(row)
    per_class = []
    for i in range(classes):
        tp = cm[i][i]
        predicted = sum(cm[j][i] for j in range(classes))
        p, r = tp / predicted if predicted else 0.0, tp / support[i]
        per_class.append({"class": names[i], "precision": p, "recall": r,
                          "f1": 2 * p * r / (p + r) if p + r else 0.0, "support": support[i]})
    acc = sum(cm[i][i] for i in range(classes)) / 269
    macro = {k: float(np.mean([c[k] for c in per_class])) for k in ("precision", "recall", "f1")}
    weighted = {k: float(np.average([c[k] for c in per_class], weights=support)) for k in ("precision", "recall", "f1")}
    evaluation = {"accuracy": acc, "auc": 0.99, "per_class": per_class, "macro": macro, "weighted": weighted,
                  "confusion_matrix": cm, "test_inference_time_s": 0.05 / speed}
    inference = []
    for bs in batch_sizes:
        if oom_from is not None and bs >= oom_from:
            inference.append({"batch_size": bs, "status": "oom", "latency_ms": None,
                              "throughput_images_per_s": None, "first_call_s": None, "peak_memory_bytes": None,
                              "energy_j_per_1000_images": None,
                              "message": f"out of memory at batch {bs}"})
            continue
        p50 = (0.3 + bs * 0.01) / speed
        inference.append({"batch_size": bs, "status": "ok",
                          "latency_ms": {"p50": p50, "p95": p50 * 1.15, "p99": p50 * 1.3, "mean": p50 * 1.05,
                                         "std": p50 * 0.05},
                          "throughput_images_per_s": bs / p50 * 1000, "first_call_s": 0.8 / speed,
                          "peak_memory_bytes": int(50e6 + bs * 2e5) if gpu else None,
                          "energy_j_per_1000_images": (25.0 / speed / math.sqrt(bs)) if gpu else None})
    result.update(train=train, evaluation=evaluation, inference=inference)
    return result


def fill_store(store, *, frameworks=("keras", "pytorch", "jax"), seeds=(0,), **kw) -> list[str]:
    """Put one comparison (every framework x seed) into ``store``; returns the keys."""
    keys = []
    for seed in seeds:
        for fw in frameworks:
            r = make_result(fw, seed, **kw)
            key = f"{kw.get('dataset', 'digits')}-{kw.get('precision', 'default')}-{fw}-{seed}-{kw.get('gpu', True)}"
            store.put(key, r)
            keys.append(key)
    return keys


# -- unit tests of labui.results ---------------------------------------------------------------
def _results():
    return [make_result(fw, s, oom_from=1024 if fw == "jax" else None) for s in (0, 1)
            for fw in ("keras", "pytorch", "jax")]


def test_inference_summary_means_over_seeds_and_keeps_oom():
    from labui import results as R

    inf = R.inference_summary(_results())
    assert list(inf["framework"].unique()) == ["keras", "pytorch", "jax"]
    assert set(inf["n"]) == {2}
    jax1024 = inf[(inf["framework"] == "jax") & (inf["batch_size"] == 1024)].iloc[0]
    assert jax1024["status"] == "oom" and pd.isna(jax1024["throughput_images_per_s"])
    assert len(R.oom_points(inf)) == 1
    raw = R.inference_frame(_results())
    k32 = raw[(raw["framework"] == "keras") & (raw["batch_size"] == 32)]["throughput_images_per_s"].mean()
    assert inf[(inf["framework"] == "keras") & (inf["batch_size"] == 32)]["throughput_images_per_s"].iloc[0] == k32


def test_ratio_table_fastest_is_one():
    from labui import results as R

    res = _results()
    table = R.ratio_table(R.inference_summary(res), R.train_summary(res)).set_index("framework")
    assert table.loc["jax", "throughput at batch 32"] == 1.0
    assert table.loc["keras", "throughput at batch 32"] < 1.0
    assert pd.isna(table.loc["jax", "throughput at batch 1024"])
    assert table["training speed"].max() == 1.0
    assert R.fastest(R.inference_summary(res))[32] == "jax"


def test_unmeasured_stays_null_and_displays_not_measured():
    from labui import results as R

    cpu = [make_result(fw, gpu=False, extras=False) for fw in ("keras", "pytorch")]
    assert R.energy_long(cpu).empty and R.memory_long(cpu).empty and R.power_frame(cpu).empty
    rss = R.memory_long([make_result("jax", gpu=False)])
    assert set(rss["measure"]) == {"process peak RSS"} and set(rss["phase"]) == {"training"}
    assert R.energy_notes([make_result("jax", gpu=False)]) == [
        "not measured: the run used the CPU (NVML reads NVIDIA GPUs only)"]
    train = R.train_summary(cpu)
    assert train["energy_j"].isna().all()
    shown = R.display(train, {"energy_j": ",.3g", "peak_memory_bytes": R.fmt_bytes})
    assert set(shown["energy_j"]) == {R.NOT_MEASURED} and set(shown["peak_memory_bytes"]) == {R.NOT_MEASURED}


def test_memory_energy_cpu_extras_are_found():
    from labui import results as R

    res = _results()
    mem = R.memory_long(res)
    assert {"allocator peak", "NVML process memory"} <= set(mem["measure"])
    assert "training" in set(mem["phase"]) and "inference, batch 32" in set(mem["phase"])
    energy = R.energy_long(res)
    assert "training, per epoch" in set(energy["what"])
    assert (R.power_frame(res)["watts"] > 0).all()
    assert set(R.cpu_frame(res)["measure"]) == {"CPU cores used (mean)"}


def test_accuracy_frames():
    from labui import results as R

    res = _results()
    m = R.metrics_frame(res)
    assert list(m["framework"]) == ["keras", "pytorch", "jax"] and m["accuracy"].between(0, 1).all()
    pc = R.per_class_frame(res)
    assert len(pc) == 30 and list(pc["class"][:3]) == ["0", "0", "0"]
    cm = R.confusion_long(res, normalize=True)
    sums = cm.groupby(["framework", "true"])["value"].sum()
    assert np.allclose(sums, 1.0)
    counts = R.confusion_long(res)
    assert counts.groupby("framework")["value"].sum().round().eq(269).all()
    curves = R.curves_long(R.epochs_frame(res))
    assert set(curves["split"]) == {"training", "validation"} and set(curves["metric"]) == {"loss", "accuracy"}


def test_exports_and_runs_frame():
    from labui import results as R

    res = _results()
    for i, r in enumerate(res):
        r["key"], r["created_at"] = f"k{i}", 1_700_000_000 + i
    runs = R.runs_frame(R.run_rows(res))
    assert runs["key"].iloc[0] == "k5"  # newest first
    csv = R.export_csv(res)
    assert csv.splitlines()[0].count("inference.batch_size") == 1
    assert len(csv.splitlines()) == 1 + 6 * 4
    assert json.loads(R.export_json(res))[0]["framework"] == "keras"
    env = R.environment_rows(res[0])
    assert "version of torch" in set(env["what"])


def test_charts_build_with_units_colours_and_log_axis():
    from engines.frameworks import FRAMEWORKS
    from labui import charts
    from labui import results as R

    res = _results()
    spec = charts.throughput_chart(R.inference_summary(res)).to_dict()
    text = json.dumps(spec)
    assert '"type": "log"' in text and "throughput (images/s)" in text and "batch size" in text
    assert FRAMEWORKS["jax"].color in text and "OOM" in text
    for c in (charts.latency_chart(R.inference_summary(res)), charts.epoch_time_chart(R.epochs_frame(res)),
              charts.curves_chart(R.curves_long(R.epochs_frame(res)), "accuracy"),
              charts.per_class_chart(R.per_class_frame(res)),
              charts.confusion_chart(R.confusion_long(res), "jax", False)):
        c.to_dict()


def test_labui_and_pages_import_no_framework():
    """Static check: nothing under labui/ or pages/ (or app.py) names a framework module."""
    import ast

    banned = {"torch", "tensorflow", "jax", "keras", "flax", "optax", "jaxlib"}
    files = [REPO / "app.py", *(REPO / "labui").glob("*.py"), *(REPO / "pages").glob("*.py")]
    for path in files:
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names = [node.module]
            for n in names:
                assert n.split(".")[0] not in banned, f"{path.name} imports {n}"


def test_every_page_runs_without_importing_a_framework(tmp_path):
    """Dynamic check: run every page with AppTest in a fresh interpreter, then look at sys.modules."""
    code = f"""
import os, sys
os.environ["LAB_CACHE_DIR"] = {str(tmp_path)!r}
from streamlit.testing.v1 import AppTest
at = AppTest.from_file({str(REPO / "app.py")!r}, default_timeout=120).run()
assert not at.exception, at.exception
for p in ("run", "speed", "energy_memory", "accuracy", "papers", "runs"):
    at.switch_page(f"pages/{{p}}.py").run()
    assert not at.exception, (p, at.exception)
bad = [m for m in ("torch", "tensorflow", "jax", "keras", "flax") if m in sys.modules]
print("imported:", bad)
sys.exit(1 if bad else 0)
"""
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
