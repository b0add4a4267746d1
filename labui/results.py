"""RunResults (schema 1, DESIGN.md) -> pandas frames for the result pages.

Pure data shaping: no Streamlit, no framework. A figure that was not measured is null in
a result; here it stays NaN/None in the frames (never 0) and tables show it as
"not measured". Where a comparison has repeats (several seeds per framework), the
summaries are means over the seeds, with ``n`` saying how many went in.
"""
from __future__ import annotations

import json

import pandas as pd

from engines.runs.result import RunResult

from .colors import ordered
from .text import NOT_MEASURED, fmt, fmt_time, is_number, num

INFERENCE_KNOWN = {"batch_size", "energy", "memory_source", "notes", "warmup_iters", "measured_iters", "status",
                   "latency_ms", "throughput_images_per_s", "first_call_s", "peak_memory_bytes",
                   "energy_j_per_1000_images", "message", "noisy"}
TRAIN_KNOWN = {"epochs", "energy", "memory_source", "compile_time_s", "total_time_s", "images_per_s", "energy_j",
               "peak_memory_bytes", "input_pipeline", "steps_per_epoch", "first_step_losses", "notes"}


# -- small helpers ------------------------------------------------------------------------
def seed_of(r: dict) -> int:
    spec = r.get("spec") or {}
    return int(spec.get("seed", 0) or 0)


def _sort_frameworks(df: pd.DataFrame, extra: list[str] | None = None) -> pd.DataFrame:
    if df.empty:
        return df
    order = {f: i for i, f in enumerate(ordered(df["framework"].unique()))}
    df = df.assign(_fw=df["framework"].map(order))
    return df.sort_values(["_fw", *(extra or [])]).drop(columns="_fw").reset_index(drop=True)


# -- comparisons -------------------------------------------------------------------------
def status_frame(results: list[dict]) -> pd.DataFrame:
    rows = [{"framework": r.get("framework"), "seed": seed_of(r), "status": r.get("status"),
             "message": r.get("message") or ""} for r in results]
    return _sort_frameworks(pd.DataFrame(rows, columns=["framework", "seed", "status", "message"]), ["seed"])


def failed(results: list[dict]) -> list[dict]:
    return [r for r in results if r.get("status") != "ok"]


# -- inference -----------------------------------------------------------------------------
def inference_frame(results: list[dict]) -> pd.DataFrame:
    """One row per (framework, seed, batch size), latency in ms, memory in bytes; extra
    numeric fields of an inference entry become columns of their own."""
    rows = []
    for r in results:
        for e in r.get("inference") or []:
            lat = e.get("latency_ms") or {}
            row = {"framework": r.get("framework"), "seed": seed_of(r), "batch_size": e.get("batch_size"),
                   "status": e.get("status", "ok"), "message": e.get("message") or "",
                   "p5_ms": num(lat.get("p5")), "p50_ms": num(lat.get("p50")), "p95_ms": num(lat.get("p95")),
                   "p99_ms": num(lat.get("p99")),
                   "mean_ms": num(lat.get("mean")), "std_ms": num(lat.get("std")),
                   "throughput_images_per_s": num(e.get("throughput_images_per_s")),
                   "first_call_s": num(e.get("first_call_s")),
                   "peak_memory_bytes": num(e.get("peak_memory_bytes")),
                   "energy_j_per_1000_images": num(e.get("energy_j_per_1000_images"))}
            for k, v in e.items():
                if k not in INFERENCE_KNOWN and is_number(v):
                    row[k] = float(v)
            rows.append(row)
    cols = ["framework", "seed", "batch_size", "status", "message", "p5_ms", "p50_ms", "p95_ms", "p99_ms", "mean_ms",
            "std_ms", "throughput_images_per_s", "first_call_s", "peak_memory_bytes", "energy_j_per_1000_images"]
    df = pd.DataFrame(rows)
    if df.empty:
        return pd.DataFrame(columns=cols)
    return _sort_frameworks(df, ["batch_size", "seed"])


def _combine_status(values) -> str:
    values = [v for v in values if v]
    if not values:
        return "ok"
    bad = [v for v in values if v != "ok"]
    return bad[0] if len(bad) == len(values) else ("ok" if not bad else f"ok ({len(bad)} of {len(values)} {bad[0]})")


def mean_over_seeds(df: pd.DataFrame, keys: list[str]) -> pd.DataFrame:
    """Mean of every numeric column per key (NaN where no seed measured it), the status
    combined and ``n`` the number of seeds."""
    if df.empty:
        return df.assign(n=pd.Series(dtype=int))
    df = df.copy()
    for c in df.columns:  # an all-null figure arrives as object dtype: keep it, as NaN
        if c not in keys and df[c].dtype == object and all(v is None or is_number(v) for v in df[c]):
            df[c] = pd.to_numeric(df[c], errors="coerce")
    numeric = [c for c in df.columns if c not in keys and c != "seed" and pd.api.types.is_numeric_dtype(df[c])]
    grouped = df.groupby(keys, sort=False, dropna=False)
    out = grouped[numeric].mean() if numeric else grouped.size().to_frame("_").drop(columns="_")
    out["n"] = grouped.size()
    if "status" in df.columns:
        out["status"] = grouped["status"].agg(_combine_status)
    if "message" in df.columns:
        out["message"] = grouped["message"].agg(lambda s: "; ".join(dict.fromkeys(m for m in s if m)))
    return _sort_frameworks(out.reset_index(), [k for k in keys if k != "framework"])


def inference_summary(results: list[dict]) -> pd.DataFrame:
    """Mean over seeds per (framework, batch size). Rows whose every seed ran out of
    memory keep status "oom" and NaN figures."""
    return mean_over_seeds(inference_frame(results), ["framework", "batch_size"])


def noisy_frame(results: list[dict]) -> pd.DataFrame:
    """The timings flagged noisy (trackers.cpu: other work held more than the set share of
    the cores while they were measured): framework, seed, phase ("training" or "batch N"),
    batch_size (None for training), other_cpu_cores."""
    rows = []
    for r in results:
        train = r.get("train") or {}
        windows = ([("training", None, train)] if train else []) + [
            (f"batch {e.get('batch_size')}", e.get("batch_size"), e) for e in r.get("inference") or []]
        rows += [{"framework": r.get("framework"), "seed": seed_of(r), "phase": phase, "batch_size": bs,
                  "other_cpu_cores": num(w.get("other_cpu_cores"))} for phase, bs, w in windows if w.get("noisy")]
    df = pd.DataFrame(rows, columns=["framework", "seed", "phase", "batch_size", "other_cpu_cores"])
    return _sort_frameworks(df, ["seed"]) if not df.empty else df


def mark_noisy(summary: pd.DataFrame, noisy: pd.DataFrame) -> pd.DataFrame:
    """The inference summary with a "noisy" column: how many of a row's seeds were
    measured while other work held the cores (0: none)."""
    out = summary.copy()
    if out.empty:
        return out.assign(noisy=pd.Series(dtype=int))
    counts = noisy.dropna(subset=["batch_size"]).groupby(["framework", "batch_size"]).size() if not noisy.empty \
        else pd.Series(dtype=int)
    out["noisy"] = [int(counts.get((fw, bs), 0)) for fw, bs in zip(out["framework"], out["batch_size"])]
    return out


def oom_points(summary: pd.DataFrame) -> pd.DataFrame:
    if summary.empty:
        return summary
    return summary[summary["status"].astype(str).str.startswith(("oom", "error"))]


def ratio_table(summary: pd.DataFrame, train: pd.DataFrame | None = None) -> pd.DataFrame:
    """Per framework: its throughput at each batch size divided by the fastest
    framework's there (1.00 = fastest), and the same for training time per epoch
    (fastest / its time, so that 1.00 is again the fastest and 0.50 half as fast)."""
    frameworks = ordered(summary["framework"].unique()) if not summary.empty else []
    if train is not None and not train.empty:
        frameworks = ordered(list(frameworks) + list(train["framework"].unique()))
    table = pd.DataFrame({"framework": frameworks})
    if not summary.empty:
        ok = summary[summary["throughput_images_per_s"].notna()]
        for bs in sorted(summary["batch_size"].unique()):
            at = ok[ok["batch_size"] == bs].set_index("framework")["throughput_images_per_s"]
            col = f"throughput at batch {int(bs)}"
            if at.empty:
                table[col] = None
                continue
            best = at.max()
            table[col] = [at[f] / best if f in at.index else None for f in frameworks]
    if train is not None and not train.empty and "epoch_time_s" in train:
        t = train.set_index("framework")["epoch_time_s"].dropna()
        if not t.empty:
            best = t.min()
            table["training speed"] = [best / t[f] if f in t.index and t[f] > 0 else None for f in frameworks]
    return table


def fastest(summary: pd.DataFrame) -> dict[int, str]:
    """batch size -> the framework with the highest mean throughput there."""
    out = {}
    ok = summary[summary["throughput_images_per_s"].notna()] if not summary.empty else summary
    for bs, g in ok.groupby("batch_size"):
        out[int(bs)] = g.loc[g["throughput_images_per_s"].idxmax(), "framework"]
    return out


# -- training ------------------------------------------------------------------------------
def epochs_frame(results: list[dict]) -> pd.DataFrame:
    rows = []
    for r in results:
        for e in ((r.get("train") or {}).get("epochs") or []):
            rows.append({"framework": r.get("framework"), "seed": seed_of(r), "epoch": e.get("epoch"),
                         "loss": num(e.get("loss")), "accuracy": num(e.get("accuracy")),
                         "val_loss": num(e.get("val_loss")), "val_accuracy": num(e.get("val_accuracy")),
                         "time_s": num(e.get("time_s"))})
    cols = ["framework", "seed", "epoch", "loss", "accuracy", "val_loss", "val_accuracy", "time_s"]
    df = pd.DataFrame(rows, columns=cols)
    return _sort_frameworks(df, ["epoch", "seed"]) if not df.empty else df


def curves_long(epochs: pd.DataFrame) -> pd.DataFrame:
    """Epoch history -> long form (framework, epoch, metric loss|accuracy, split
    training|validation, value), means over seeds."""
    cols = ["framework", "epoch", "metric", "split", "value"]
    if epochs.empty:
        return pd.DataFrame(columns=cols)
    mean = epochs.groupby(["framework", "epoch"], sort=False)[["loss", "accuracy", "val_loss", "val_accuracy"]].mean()
    rows = []
    for (fw, ep), r in mean.iterrows():
        for metric in ("loss", "accuracy"):
            rows.append({"framework": fw, "epoch": ep, "metric": metric, "split": "training", "value": r[metric]})
            rows.append({"framework": fw, "epoch": ep, "metric": metric, "split": "validation",
                         "value": r[f"val_{metric}"]})
    return pd.DataFrame(rows, columns=cols).dropna(subset=["value"])


def train_frame(results: list[dict]) -> pd.DataFrame:
    """One row per (framework, seed) with training figures; extra numeric fields of
    ``train`` become columns."""
    rows = []
    for r in results:
        t = r.get("train")
        if not t:
            continue
        epochs = t.get("epochs") or []
        times = [num(e.get("time_s")) for e in epochs]
        times = [x for x in times if x is not None]
        n_epochs = len(epochs)
        energy = num(t.get("energy_j"))
        total = num(t.get("total_time_s"))
        row = {"framework": r.get("framework"), "seed": seed_of(r), "status": r.get("status"),
               "epochs": n_epochs,
               "epoch_time_s": sum(times) / len(times) if times else None,
               "compile_time_s": num(t.get("compile_time_s")), "total_time_s": total,
               "images_per_s": num(t.get("images_per_s")), "energy_j": energy,
               "energy_j_per_epoch": energy / n_epochs if energy is not None and n_epochs else None,
               "mean_power_w": energy / total if energy is not None and total else None,
               "peak_memory_bytes": num(t.get("peak_memory_bytes")),
               "input_pipeline": t.get("input_pipeline") or ""}
        for k, v in t.items():
            if k not in TRAIN_KNOWN and is_number(v):
                row[k] = float(v)
        rows.append(row)
    df = pd.DataFrame(rows)
    if df.empty:
        return pd.DataFrame(columns=["framework", "seed", "status", "epochs", "epoch_time_s", "compile_time_s",
                                     "total_time_s", "images_per_s", "energy_j", "energy_j_per_epoch",
                                     "mean_power_w", "peak_memory_bytes", "input_pipeline"])
    return _sort_frameworks(df, ["seed"])


def train_summary(results: list[dict]) -> pd.DataFrame:
    df = train_frame(results)
    if df.empty:
        return df
    pipelines = df.groupby("framework")["input_pipeline"].agg(lambda s: ", ".join(dict.fromkeys(s)))
    out = mean_over_seeds(df.drop(columns=["input_pipeline"]), ["framework"])
    out["input_pipeline"] = out["framework"].map(pipelines)
    return out


def notes(results: list[dict]) -> list[tuple[str, str]]:
    """(framework, note) for the notes that engines attach to training."""
    seen = []
    for r in results:
        for n in ((r.get("train") or {}).get("notes") or []):
            if (r.get("framework"), n) not in seen:
                seen.append((r.get("framework"), n))
    return seen


def initial_weights(results: list[dict]) -> list[str]:
    """Where pretrained weights came from and what was fitted to the run (the same file and
    the same fitting in every framework of a comparison, so each sentence once)."""
    return list(dict.fromkeys(w for r in results if (w := (r.get("model") or {}).get("initial_weights"))))


# -- memory, energy, CPU -------------------------------------------------------------------
MEMORY_NAMES = {"allocator_peak_bytes": "allocator peak", "nvml_process_memory_bytes": "NVML process memory",
                "nvml_peak_memory_bytes": "NVML peak memory", "peak_rss_bytes": "process peak RSS"}


def _measure_name(key: str) -> str:
    if key in MEMORY_NAMES:
        return MEMORY_NAMES[key]
    if key == "peak_memory_bytes":
        return "peak memory"
    name = key.removesuffix("_bytes").replace("_", " ")
    return name.replace("nvml", "NVML").replace("rss", "RSS")


def _memory_items(d: dict):
    """(measure, bytes) of one ``train`` or ``inference`` entry. ``peak_memory_bytes`` is
    the engines' headline copy of one of the named figures (see ``memory_source``), so
    it is shown only when no named one is there."""
    named = [k for k in d if k.endswith("_bytes") and k != "peak_memory_bytes"]
    for k in named or (["peak_memory_bytes"] if "peak_memory_bytes" in d else []):
        if is_number(d.get(k)):
            yield _measure_name(k), float(d[k])


def memory_sources(results: list[dict]) -> list[str]:
    """The engines' own words on what their peak memory figure is, e.g. 'process peak RSS'."""
    out = []
    for r in results:
        for d in [r.get("train") or {}, *(r.get("inference") or [])]:
            src = d.get("memory_source")
            if src and f"{r.get('framework')}: {src}" not in out:
                out.append(f"{r.get('framework')}: {src}")
    return out


def memory_long(results: list[dict]) -> pd.DataFrame:
    """framework, phase ("training" or "inference, batch N"), measure (allocator peak,
    NVML process memory, process peak RSS, ...), bytes: every *_bytes figure in ``train``
    and ``inference``, means over seeds; unmeasured ones left out."""
    rows = []
    for r in results:
        fw, seed = r.get("framework"), seed_of(r)
        for measure, v in _memory_items(r.get("train") or {}):
            rows.append({"framework": fw, "seed": seed, "phase": "training", "batch_size": None,
                         "measure": measure, "bytes": v})
        for e in r.get("inference") or []:
            for measure, v in _memory_items(e):
                rows.append({"framework": fw, "seed": seed, "phase": f"inference, batch {e.get('batch_size')}",
                             "batch_size": e.get("batch_size"), "measure": measure, "bytes": v})
    df = pd.DataFrame(rows, columns=["framework", "seed", "phase", "batch_size", "measure", "bytes"])
    if df.empty:
        return df.drop(columns=["seed"])
    df["order"] = df["batch_size"].fillna(-1)
    out = df.groupby(["framework", "phase", "measure"], sort=False).agg(bytes=("bytes", "mean"),
                                                                        order=("order", "first")).reset_index()
    out["MiB"] = out["bytes"] / 2**20
    return _sort_frameworks(out, ["order", "measure"])


def energy_notes(results: list[dict]) -> list[str]:
    """Why energy is missing, in the engines' words (train.energy.note), once each."""
    out = []
    for r in results:
        for d in [r.get("train") or {}, *(r.get("inference") or [])]:
            note = (d.get("energy") or {}).get("note") if isinstance(d.get("energy"), dict) else None
            if note and note not in out:
                out.append(note)
    return out


def energy_long(results: list[dict]) -> pd.DataFrame:
    """framework, what ("J per training epoch" or "J per 1,000 images, batch N"),
    joules; means over seeds; unmeasured ones left out."""
    rows = []
    train = train_summary(results)
    for _, t in train.iterrows():
        if is_number(t.get("energy_j_per_epoch")):
            rows.append({"framework": t["framework"], "what": "training, per epoch", "order": -1,
                         "joules": t["energy_j_per_epoch"]})
    inf = inference_summary(results)
    for _, e in inf.iterrows():
        if is_number(e.get("energy_j_per_1000_images")):
            rows.append({"framework": e["framework"], "what": f"inference, batch {int(e['batch_size'])}",
                         "order": int(e["batch_size"]), "joules": e["energy_j_per_1000_images"]})
    df = pd.DataFrame(rows, columns=["framework", "what", "order", "joules"])
    return _sort_frameworks(df, ["order"]) if not df.empty else df


def power_frame(results: list[dict]) -> pd.DataFrame:
    """Mean power in W: training (energy / total time) and inference at each batch size
    (J per image x images per second)."""
    rows = []
    for _, t in train_summary(results).iterrows():
        if is_number(t.get("mean_power_w")):
            rows.append({"framework": t["framework"], "phase": "training", "order": -1, "watts": t["mean_power_w"]})
    for _, e in inference_summary(results).iterrows():
        j, tp = e.get("energy_j_per_1000_images"), e.get("throughput_images_per_s")
        if is_number(j) and is_number(tp):
            rows.append({"framework": e["framework"], "phase": f"inference, batch {int(e['batch_size'])}",
                         "order": int(e["batch_size"]), "watts": j / 1000 * tp})
    df = pd.DataFrame(rows, columns=["framework", "phase", "order", "watts"])
    return _sort_frameworks(df, ["order"]) if not df.empty else df


CPU_NAMES = {"cpu_cores_used": "CPU cores used (mean)", "cpu_percent": "CPU utilization (%)",
             "other_cpu_cores": "other processes' CPU cores (mean)"}


def cpu_frame(results: list[dict]) -> pd.DataFrame:
    """Every CPU figure a result carries (keys with "cpu" in ``train``, ``inference``
    entries or the top level), e.g. cpu_percent; empty when none was measured."""
    rows = []
    for r in results:
        fw = r.get("framework")
        places = [("training", r.get("train") or {}), ("whole run", r)]
        places += [(f"inference, batch {e.get('batch_size')}", e) for e in r.get("inference") or []]
        for phase, d in places:
            for k, v in d.items():
                if "cpu" in k.lower() and is_number(v):
                    rows.append({"framework": fw, "phase": phase, "measure": CPU_NAMES.get(k, k.replace("_", " ")),
                                 "value": float(v)})
    df = pd.DataFrame(rows, columns=["framework", "phase", "measure", "value"])
    if df.empty:
        return df
    return _sort_frameworks(df.groupby(["framework", "phase", "measure"], sort=False)["value"].mean().reset_index())


# -- accuracy ------------------------------------------------------------------------------
METRIC_COLUMNS = ["accuracy", "auc", "macro precision", "macro recall", "macro F1", "weighted precision",
                  "weighted recall", "weighted F1"]


def metrics_frame(results: list[dict]) -> pd.DataFrame:
    rows = []
    for r in results:
        ev = r.get("evaluation")
        if not ev:
            continue
        macro, weighted = ev.get("macro") or {}, ev.get("weighted") or {}
        rows.append({"framework": r.get("framework"), "seed": seed_of(r),
                     "accuracy": num(ev.get("accuracy")), "auc": num(ev.get("auc")),
                     "macro precision": num(macro.get("precision")), "macro recall": num(macro.get("recall")),
                     "macro F1": num(macro.get("f1")), "weighted precision": num(weighted.get("precision")),
                     "weighted recall": num(weighted.get("recall")), "weighted F1": num(weighted.get("f1")),
                     "test inference time s": num(ev.get("test_inference_time_s"))})
    df = pd.DataFrame(rows, columns=["framework", "seed", *METRIC_COLUMNS, "test inference time s"])
    if df.empty:
        return df
    return mean_over_seeds(_sort_frameworks(df, ["seed"]), ["framework"])


def per_class_frame(results: list[dict]) -> pd.DataFrame:
    rows = []
    for r in results:
        for i, c in enumerate((r.get("evaluation") or {}).get("per_class") or []):
            rows.append({"framework": r.get("framework"), "seed": seed_of(r), "class": str(c.get("class")),
                         "class_index": i, "precision": num(c.get("precision")), "recall": num(c.get("recall")),
                         "f1": num(c.get("f1")), "support": num(c.get("support"))})
    df = pd.DataFrame(rows, columns=["framework", "seed", "class", "class_index", "precision", "recall", "f1",
                                     "support"])
    if df.empty:
        return df
    return mean_over_seeds(df, ["framework", "class", "class_index"]).sort_values(
        ["class_index", "framework"], key=lambda s: s if s.name != "framework" else s.map(
            {f: i for i, f in enumerate(ordered(df["framework"].unique()))})).reset_index(drop=True)


def class_names(results: list[dict]) -> list[str]:
    for r in results:
        pc = (r.get("evaluation") or {}).get("per_class") or []
        if pc:
            return [str(c.get("class")) for c in pc]
    for r in results:
        cm = (r.get("evaluation") or {}).get("confusion_matrix")
        if cm:
            return [str(i) for i in range(len(cm))]
    return []


def confusion_long(results: list[dict], normalize: bool = False) -> pd.DataFrame:
    """framework, true, predicted, value: counts (mean over seeds) or, normalized, the
    share of each true class (rows sum to 1)."""
    names = class_names(results)
    rows = []
    for r in results:
        cm = (r.get("evaluation") or {}).get("confusion_matrix")
        if not cm:
            continue
        for i, line in enumerate(cm):
            total = sum(line)
            for j, v in enumerate(line):
                value = (v / total if total else None) if normalize else v
                rows.append({"framework": r.get("framework"), "seed": seed_of(r),
                             "true": names[i] if i < len(names) else str(i),
                             "predicted": names[j] if j < len(names) else str(j),
                             "true_index": i, "predicted_index": j, "value": value})
    df = pd.DataFrame(rows, columns=["framework", "seed", "true", "predicted", "true_index", "predicted_index",
                                     "value"])
    if df.empty:
        return df.drop(columns=["seed"])
    out = df.groupby(["framework", "true", "predicted", "true_index", "predicted_index"],
                     sort=False)["value"].mean().reset_index()
    return _sort_frameworks(out, ["true_index", "predicted_index"])


def confusion_difference(cm: pd.DataFrame, a: str, b: str) -> pd.DataFrame:
    """true, predicted, a, b, value = a − b per cell of two frameworks' confusion_long
    frames (counts or shares, whichever `cm` holds)."""
    keys = ["true", "predicted", "true_index", "predicted_index"]
    left = cm[cm["framework"] == a][[*keys, "value"]].rename(columns={"value": "a"})
    right = cm[cm["framework"] == b][[*keys, "value"]].rename(columns={"value": "b"})
    both = left.merge(right, on=keys, how="outer")
    both["value"] = both["a"] - both["b"]
    return both.sort_values(["true_index", "predicted_index"]).reset_index(drop=True)


def most_different_pair(cm: pd.DataFrame) -> tuple[str, str] | None:
    """The two frameworks whose confusion matrices differ most (sum of |A − B| over the
    cells), in the lab's order; None with fewer than two frameworks."""
    fws = ordered(cm["framework"].unique())
    if len(fws) < 2:
        return None
    pairs = [(a, b) for i, a in enumerate(fws) for b in fws[i + 1:]]
    return max(pairs, key=lambda p: float(confusion_difference(cm, *p)["value"].abs().sum()))


def coinciding_curves(curves: pd.DataFrame, metric: str, tol: float = 0.01) -> list[tuple[list[str], bool]]:
    """Groups of frameworks whose `metric` curves (curves_long: training and validation,
    every epoch) lie on each other on a chart: every point within `tol` of the chart's
    span of values. With the same initial weights and the same data order the frameworks
    compute (nearly) the same numbers, and one line hides the others. Each group comes with
    whether its curves are the same to 1e-6 (exactly, as far as a chart can tell)."""
    df = curves[curves["metric"] == metric]
    if df.empty:
        return []
    span = float(df["value"].max() - df["value"].min()) or 1.0
    wide = df.pivot_table(index=["split", "epoch"], columns="framework", values="value", aggfunc="first")
    groups: list[list[str]] = []
    for fw in ordered(wide.columns):
        for group in groups:
            both = wide[[group[0], fw]].dropna()
            if len(both) == len(wide) and (both[group[0]] - both[fw]).abs().max() <= tol * span:
                group.append(fw)
                break
        else:
            groups.append([fw])
    out = []
    for g in groups:
        if len(g) > 1:
            ref = wide[g[0]]
            exact = all(((wide[f] - ref).abs() <= 1e-6 * (ref.abs() + 1e-12)).all() for f in g[1:])
            out.append((g, exact))
    return out


def recomputed_points(results: list[dict]) -> pd.DataFrame:
    """framework, epoch (the last), metric (loss|accuracy), value: validation loss and
    accuracy after the BatchNorm statistics were recomputed, means over seeds, for a mark
    at the end of the curves (whose validation points are the running averages')."""
    rows = []
    for r in results:
        train = r.get("train") or {}
        bn = train.get("batchnorm")
        if not isinstance(bn, dict) or not bn.get("recomputed") or not train.get("epochs"):
            continue
        last = train["epochs"][-1].get("epoch")
        for metric in ("loss", "accuracy"):
            v = num(bn.get(f"val_{metric}_after"))
            if v is not None:
                rows.append({"framework": r.get("framework"), "epoch": last, "metric": metric, "value": v})
    df = pd.DataFrame(rows, columns=["framework", "epoch", "metric", "value"])
    if df.empty:
        return df
    return df.groupby(["framework", "epoch", "metric"], sort=False)["value"].mean().reset_index()


def batchnorm_frame(results: list[dict]) -> pd.DataFrame:
    """framework, val accuracy before / after the BatchNorm statistics were recomputed
    (train.batchnorm), the pass's time and images; means over seeds. Empty when no
    result recomputed them."""
    rows = []
    for r in results:
        bn = (r.get("train") or {}).get("batchnorm")
        if not isinstance(bn, dict) or not bn.get("recomputed"):
            continue
        rows.append({"framework": r.get("framework"), "seed": seed_of(r),
                     "val_accuracy_before": num(bn.get("val_accuracy_before")),
                     "val_accuracy_after": num(bn.get("val_accuracy_after")),
                     "layers": num(bn.get("layers")), "images": num(bn.get("images")),
                     "time_s": num(bn.get("time_s"))})
    cols = ["framework", "seed", "val_accuracy_before", "val_accuracy_after", "layers", "images", "time_s"]
    df = pd.DataFrame(rows, columns=cols)
    return df if df.empty else mean_over_seeds(df, ["framework"])


# -- runs, export --------------------------------------------------------------------------
def run_rows(results: list[dict]) -> list[dict]:
    """The runs table's rows (RunResult.summary()) of schema-1 result dicts; the Runs
    page reads the same rows from the store's index (ResultStore.runs())."""
    return [RunResult.from_dict(r).summary() for r in results]


RUN_COLUMNS = ["created_at", "dataset", "resolution", "architecture", "framework", "seed", "status", "epochs",
               "precision", "accuracy", "auc", "train_time_s", "best_throughput_images_per_s", "best_batch_size",
               "parameters", "flops_per_image", "device", "gpu", "host", "gpu_index", "message", "comparison", "key"]


def runs_frame(rows: list[dict]) -> pd.DataFrame:
    """One line per run, newest first: RunResult.summary() rows (with "comparison_keys"
    where the store gave them), figures that were not measured as None."""
    out = []
    for r in rows:
        row = {c: r.get(c) for c in RUN_COLUMNS}
        for c in ("accuracy", "auc", "train_time_s", "best_throughput_images_per_s"):
            row[c] = num(row[c])
        row["message"] = row["message"] or ""
        row["comparison"] = ", ".join(k[:8] for k in r.get("comparison_keys") or [])
        row["_t"] = r.get("created_at") or 0
        row["created_at"] = fmt_time(r.get("created_at"))
        out.append(row)
    df = pd.DataFrame(out, columns=[*RUN_COLUMNS, "_t"])
    return df.sort_values("_t", ascending=False, kind="stable").drop(columns="_t").reset_index(drop=True)


def flatten(d: dict, prefix: str = "") -> dict:
    """Nested dict -> one level with dotted keys; lists are kept as JSON text."""
    out = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(flatten(v, key + "."))
        elif isinstance(v, (list, tuple)):
            out[key] = json.dumps(v)
        else:
            out[key] = v
    return out


def export_csv(results: list[dict]) -> str:
    """One line per (result, inference batch size): every scalar of the result, the
    epochs, per-class figures and confusion matrix as JSON text in their columns."""
    rows = []
    for r in results:
        base = flatten({k: v for k, v in r.items() if k != "inference"})
        entries = r.get("inference") or [{}]
        for e in entries:
            rows.append({**base, **flatten(e, "inference.")})
    return pd.DataFrame(rows).to_csv(index=False)


def export_json(results: list[dict]) -> str:
    return json.dumps(results, indent=1, sort_keys=False, default=str)


def environment_rows(r: dict) -> pd.DataFrame:
    env = r.get("environment") or {}
    rows = []
    for k, v in env.items():
        if k == "versions" and isinstance(v, dict):
            rows += [{"what": f"version of {name}", "value": str(ver) if ver else NOT_MEASURED}
                     for name, ver in sorted(v.items())]
        elif isinstance(v, (dict, list)):
            rows.append({"what": k, "value": json.dumps(v)})
        else:
            rows.append({"what": k, "value": "—" if v is None else str(v)})
    return pd.DataFrame(rows, columns=["what", "value"])


# -- display -------------------------------------------------------------------------------
def display(df: pd.DataFrame, formats: dict[str, str | callable]) -> pd.DataFrame:
    """A copy for st.dataframe with figures as text: NaN/None -> "not measured"."""
    out = df.copy()
    for col, f in formats.items():
        if col not in out:
            continue
        if callable(f):
            out[col] = [f(v) for v in out[col]]
        else:
            out[col] = [fmt(v, f) for v in out[col]]
    return out
