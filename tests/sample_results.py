"""Realistic schema-1 results for the app's tests: `make_result` builds one as the worker
writes it (figures from a generator seeded by its fields, so every run of the tests sees
the same numbers), `fill_store` puts a comparison of them into a ResultStore."""
import math
import zlib

import numpy as np

FRAMEWORK_SPEED = {"keras": 1.0, "tensorflow": 1.1, "pytorch": 1.4, "jax": 1.7}


def make_result(framework="pytorch", seed=0, *, dataset="digits", resolution=8, architecture="fan_arch1",
                epochs=2, batch_sizes=(1, 32, 128, 1024), oom_from=None, gpu=True, status="ok",
                message=None, precision="default", classes=10, extras=True, inference_only=False) -> dict:
    """One RunResult as the worker writes it. ``gpu=False`` leaves energy and memory
    null (not measured), as on a CPU. Batch sizes >= ``oom_from`` are OOM data points.
    ``inference_only``: no training and no evaluation, only timings."""
    # crc32, not hash(): str hashes are salted per process, and the figures must not be.
    rng = np.random.default_rng(zlib.crc32(f"{framework}|{seed}|{dataset}|{precision}".encode()))
    speed = FRAMEWORK_SPEED[framework]
    spec = {"dataset": dataset, "resolution": resolution, "architecture": architecture, "frameworks": [framework],
            "batch_sizes": list(batch_sizes), "epochs": epochs, "train_batch_size": None, "repeats": 1,
            "seed": seed, "optimizer": "adam", "learning_rate": None, "lr_schedule": "constant",
            "weight_decay": 0.0, "precision": precision, "compile": True, "xla_autotune": None,
            "cudnn_benchmark": False, "channels_last": False, "pipeline": "idiomatic", "class_weights": False,
            "same_init": True, "inference_only": inference_only, "warmup_iters": 20, "measure_iters": 100,
            "dataset_options": {}}
    if inference_only:
        spec["epochs"] = 0
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
    if inference_only:
        train = evaluation = None
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
