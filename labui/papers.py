"""Paper presets for the app: ours beside the paper's, dataset states, and the Run page's
form filled from a preset's spec. Pure data shaping (pandas, engines.analysis.presets,
engines.analysis.stats); no Streamlit, no framework.
"""
from __future__ import annotations

import math

import pandas as pd

from engines.analysis import presets as P
from engines.analysis import stats
from engines.datasets.synthetic import DEFAULT_OPTIONS as SYNTHETIC_DEFAULTS
from engines.frameworks import FRAMEWORKS

from .colors import label_of, ordered
from .text import NOT_MEASURED

NO_RUN = "no run yet"
NEEDS_REPEATS = "needs ≥ 2 repeats"
NOT_BY_LAB = "not measured by the lab"
# A dataset state in words, on the Run page (dataset box, preset table) and the Papers page.
STATE_TEXT = {"ready": "ready", "offline": "ready (offline)", "downloadable": "needs download",
              "needs_folder": "needs a local folder", "unsupported": "unsupported"}
RUN_KINDS = {"full": "full size (the paper's settings)", "reduced": "reduced for a CPU", "other": "other settings"}

_METRIC_NAMES = {
    "train.total_time_s": "training time", "evaluation.test_inference_time_s": "test-set inference time",
    "evaluation.accuracy": "test accuracy", "evaluation.auc": "AUC",
    "train.final_accuracy": "training accuracy (last epoch)",
    "train.final_val_accuracy": "validation accuracy (last epoch)",
    "train.final_val_loss": "validation loss (last epoch)", "train.final_loss": "training loss (last epoch)",
    "train.energy_j_per_epoch": "training energy per epoch", "train.final_epoch_time_s": "time of the last epoch",
    "train.peak_memory_bytes": "training peak memory", "host.cpu_percent": "CPU utilisation",
    "host.memory_percent": "memory utilisation",
}


def metric_name(metric: str) -> str:
    """A readable name for a published metric path."""
    if metric in _METRIC_NAMES:
        return _METRIC_NAMES[metric]
    parts = metric.split(".")
    if parts[0] == "evaluation" and len(parts) == 3 and parts[1] in ("macro", "weighted"):
        return f"{parts[1]} {parts[2] if parts[2] != 'f1' else 'F1'}"
    if parts[0] == "inference" and len(parts) >= 3 and parts[1].isdigit():
        rest = ".".join(parts[2:])
        what = {"throughput_images_per_s": "throughput", "latency_ms.p50": "p50 latency",
                "latency_ms.p95": "p95 latency", "latency_ms.p99": "p99 latency",
                "peak_memory_bytes": "peak memory"}.get(rest, rest)
        return f"inference {what}, batch {parts[1]}"
    return metric


def fmt_value(v) -> str:
    """A figure with about four significant digits, thousands separated."""
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return NOT_MEASURED
    a = abs(v)
    if a == 0:
        return "0"
    if a >= 1000:
        return f"{v:,.0f}"
    if a >= 100:
        return f"{v:.1f}"
    if a >= 10:
        return f"{v:.2f}"
    if a >= 1:
        return f"{v:.3f}"
    if a >= 0.01:
        return f"{v:.4f}"
    return f"{v:.3g}"


def fmt_paper(v) -> str:
    """A published figure as printed (as the preset quotes it), thousands separated."""
    if v is None:
        return "—"
    return f"{v:,}" if isinstance(v, int) else f"{v:,.10g}"


# -- which of our results belong to a preset ---------------------------------------------------


def _options(spec: dict) -> dict:
    """Dataset options without those equal to the synthetic generator's defaults."""
    opts = dict(spec.get("dataset_options") or {})
    if spec.get("dataset") == "synthetic":
        opts = {k: v for k, v in opts.items() if SYNTHETIC_DEFAULTS.get(k) != v}
    return opts


def _same(spec: dict, want: dict) -> bool:
    keys = ("dataset", "resolution", "architecture", "epochs")
    return all(spec.get(k) == want.get(k) for k in keys) and _options(spec) == _options(want)


def run_kind(preset: P.Preset, label: str, spec: dict) -> str:
    """"full", "reduced" or "other": whether a result's spec is the preset's spec at the
    paper's settings, its CPU-reduced form, or something else that matches it."""
    full = dict(preset.spec_dicts(False))
    reduced = dict(preset.spec_dicts(True))
    if label in full and _same(spec, full[label]):
        return "full"
    if label in reduced and _same(spec, reduced[label]):
        return "reduced"
    return "other"


def matched(preset: P.Preset, results: list[dict]) -> dict[str, list[dict]]:
    """spec label -> our results (any status) for it: engines.analysis.presets.match_results."""
    return P.match_results(preset, results)


def kinds_present(preset: P.Preset, results: list[dict]) -> list[str]:
    """Which kinds of run ("full", "reduced", "other") the store holds for the preset."""
    found = {run_kind(preset, label, r.get("spec") or {}) for label, rs in matched(preset, results).items()
             for r in rs}
    return [k for k in RUN_KINDS if k in found]


def results_of_kind(preset: P.Preset, results: list[dict], kind: str | None) -> list[dict]:
    """The preset's results of one kind (None: all that match the preset)."""
    out = []
    for label, rs in matched(preset, results).items():
        out += [r for r in rs if kind is None or run_kind(preset, label, r.get("spec") or {}) == kind]
    return out


# -- the side-by-side table ----------------------------------------------------------------------
RUN_FAILED = "run failed"


def _ours_text(row: dict, has_results: bool, failed: bool = False) -> str:
    if row["ours"] is not None:
        return fmt_value(row["ours"])
    note = row.get("note") or ""
    if row["metric"].startswith("host.") or note.startswith("not measured"):
        return NOT_BY_LAB
    if note.startswith("cannot convert"):
        return NOT_MEASURED
    if not has_results:
        return RUN_FAILED if failed else NO_RUN
    if row["stat"] in ("variance", "std") and row["n"] == 1:
        return NEEDS_REPEATS
    return NOT_MEASURED


def side_by_side_frame(preset: P.Preset, results: list[dict]) -> pd.DataFrame:
    """engines.analysis.presets.side_by_side as a long frame: spec, framework, metric (readable),
    stat, unit, ours (text: a figure, "not measured", "no run yet", "needs ≥ 2
    repeats"), paper, ours ÷ paper, n (our repeats), source, note, and the raw
    ``ours_value`` and ``metric_path``."""
    rows = P.side_by_side(preset, results)
    by_label = matched(preset, results)
    out = []
    for r in rows:
        mine = [x for x in by_label.get(r["spec_label"], []) if x.get("framework") == r["framework"]]
        has = any(x.get("status") == "ok" for x in mine)
        ratio = (r["ours"] / r["paper"]) if r["ours"] is not None and r["paper"] else None
        out.append({"spec": r["spec_label"], "framework": r["framework"], "metric": metric_name(r["metric"]),
                    "stat": r["stat"], "unit": r["unit"] or "—", "ours": _ours_text(r, has, bool(mine)),
                    "paper": fmt_paper(r["paper"]), "ours ÷ paper": ratio, "n": r["n"], "source": r["source"],
                    "note": r["note"] or "", "ours_value": r["ours"], "paper_value": r["paper"],
                    "metric_path": r["metric"]})
    return pd.DataFrame(out, columns=["spec", "framework", "metric", "stat", "unit", "ours", "paper", "ours ÷ paper",
                                      "n", "source", "note", "ours_value", "paper_value", "metric_path"])


def wide_frame(long: pd.DataFrame) -> pd.DataFrame:
    """Frameworks side by side: one row per (spec, metric, stat), for each framework
    "<Framework> ours" next to "<Framework> paper", then the unit and the source."""
    if long.empty:
        return pd.DataFrame(columns=["spec", "metric", "unit", "source"])
    fws = ordered(long["framework"].unique())
    rows = []
    keys = list(dict.fromkeys(zip(long["spec"], long["metric"], long["stat"])))
    for spec, metric, stat in keys:
        g = long[(long["spec"] == spec) & (long["metric"] == metric) & (long["stat"] == stat)]
        row = {"spec": spec, "metric": metric if stat == "mean" else f"{metric} ({stat})",
               "unit": g["unit"].iloc[0]}
        for fw in fws:
            f = g[g["framework"] == fw]
            name = label_of(fw)
            row[f"{name} ours"] = f["ours"].iloc[0] if not f.empty else ""
            row[f"{name} paper"] = f["paper"].iloc[0] if not f.empty else ""
        row["source"] = g["source"].iloc[0]
        rows.append(row)
    return pd.DataFrame(rows)


def failures(preset: P.Preset, results: list[dict]) -> list[dict]:
    """spec, framework, seed, status, message of the preset's runs that did not end ok."""
    out = []
    for label, rs in matched(preset, results).items():
        for r in rs:
            if r.get("status") != "ok":
                out.append({"spec": label, "framework": r.get("framework"),
                            "seed": (r.get("spec") or {}).get("seed"), "status": r.get("status"),
                            "message": r.get("message") or ""})
    return out


def our_hardware(results: list[dict]) -> str | None:
    """The device(s) our ok results ran on: the GPU name, else the CPU."""
    seen = []
    for r in results:
        if r.get("status") != "ok":
            continue
        env = r.get("environment") or {}
        hw = f"GPU {env['gpu']}" if env.get("gpu") else (f"CPU {env['cpu']}" if env.get("cpu") else env.get("device"))
        if hw and hw not in seen:
            seen.append(hw)
    return "; ".join(seen) or None


# -- the paper's own t statistics beside ours ----------------------------------------------------
def tests_frame(preset: P.Preset, results: list[dict]) -> pd.DataFrame:
    """The paper's published t statistics (published_tests) beside our Welch's test on the
    same spec, metric and pair of frameworks."""
    by_label = matched(preset, results)
    rows = []
    for t in preset.published_tests:
        rs = by_label.get(t["spec"], [])
        values = stats.metric_values(rs, t["metric"])
        c = stats.compare(values.get(t["a"], []), values.get(t["b"], []), name_a=stats.display_name(t["a"]),
                          name_b=stats.display_name(t["b"]), metric=t["metric"])
        rows.append({"spec": t["spec"], "metric": metric_name(t["metric"]),
                     "frameworks": f"{stats.display_name(t['a'])} vs {stats.display_name(t['b'])}",
                     "paper t": t["t"], "our t": c["t"], "our p": c["p"], "our n": f"{c['n_a']} + {c['n_b']}",
                     "ours": c["sentence"] if (c["n_a"] or c["n_b"]) else NO_RUN,
                     "source": t.get("source", ""), "note": t.get("note", "")})
    return pd.DataFrame(rows, columns=["spec", "metric", "frameworks", "paper t", "our t", "our p", "our n", "ours",
                                       "source", "note"])


# -- datasets and runs per spec -----------------------------------------------------------------
def spec_frame(preset: P.Preset, results: list[dict], reduced: bool = False) -> pd.DataFrame:
    """One row per spec (full size, or reduced for a CPU): its settings, the state of its
    dataset on this machine (never an error: "needs download", "needs a local folder")
    and how many of our results match it."""
    from engines.datasets import DatasetError, dataset_state, get_info

    by_label = matched(preset, results)
    rows = []
    for label, d in preset.spec_dicts(reduced):
        try:
            info = get_info(d["dataset"])
            s = dataset_state(info, d.get("resolution"), (d.get("dataset_options") or {}).get("path"))
            state, reason = STATE_TEXT.get(s.state, s.state), s.reason
        except (DatasetError, KeyError, ValueError) as e:
            state, reason = "unknown", str(e)
        ok = [r for r in by_label.get(label, []) if r.get("status") == "ok"]
        fws = list(d.get("frameworks") or [])
        runs = ", ".join(f"{fw} {sum(1 for r in ok if r.get('framework') == fw)}" for fw in ordered(fws))
        rows.append({"spec": label, "dataset": d["dataset"], "px": d.get("resolution"),
                     "architecture": d.get("architecture"), "frameworks": ", ".join(ordered(fws)),
                     "epochs": d.get("epochs"), "repeats": d.get("repeats", 1),
                     "train batch": d.get("train_batch_size"), "data here": state, "why": reason,
                     "our ok runs": runs})
    return pd.DataFrame(rows)


def missing_data(frame: pd.DataFrame) -> list[tuple[str, str, str]]:
    """(dataset, state, reason) for each dataset of the spec frame that is not ready."""
    out = []
    for _, r in frame.iterrows():
        if not str(r["data here"]).startswith("ready") and (r["dataset"], r["data here"], r["why"]) not in out:
            out.append((r["dataset"], r["data here"], r["why"]))
    return out


# -- the Run page's form from a spec -----------------------------------------------------------
SYNTHETIC_KEYS = {"classes": "syn_classes", "channels": "syn_channels", "train": "syn_train", "val": "syn_val",
                  "test": "syn_test"}


# The Run page's Compile control: its choices and the RunSpec value of each.
COMPILE_CHOICES = {"per framework": None, "on": True, "off": False}


def compile_choice(value: bool | None) -> str:
    """The Compile control's choice for a spec's compile (None, True or False)."""
    return {v: k for k, v in COMPILE_CHOICES.items()}[value]


def batch_sizes_text(sizes) -> str:
    """The Run page's batch-size field holds the sizes as typed: "1, 32, 128"."""
    return ", ".join(str(b) for b in sizes)


def parse_batch_sizes(text: str) -> tuple[list[int], str | None]:
    """(sizes, None) for "1, 32, 128" (commas or spaces), or ([], what is wrong) naming the
    entry that is not a whole number; the range is RunSpec's to check."""
    parts = [p for p in str(text).replace(",", " ").split() if p]
    if not parts:
        return [], "give at least one inference batch size, e.g. 1, 32, 128"
    sizes = []
    for p in parts:
        try:
            sizes.append(int(p))
        except ValueError:
            return [], f"{p!r} is not a whole number; write sizes like 1, 32, 128"
    return sizes, None


def form_state(spec: dict, installed: set[str] | None = None) -> tuple[dict, dict, list[str]]:
    """(widget key -> value for the Run page, dataset options no widget holds, warnings)
    for a RunSpec dict (RunSpec.to_dict())."""
    installed = set(installed) if installed is not None else set(FRAMEWORKS)
    warnings = []
    state = {"dataset": spec["dataset"], "architecture": spec["architecture"],
             "batch_sizes": batch_sizes_text(spec["batch_sizes"]), "epochs": int(spec["epochs"]),
             "repeats": int(spec["repeats"]), "seed": int(spec["seed"]), "optimizer": spec["optimizer"],
             "lr": float(spec["learning_rate"] or 0.0), "schedule": spec["lr_schedule"],
             "train_batch": int(spec["train_batch_size"] or 0), "precision": spec["precision"],
             "compile": compile_choice(spec.get("compile")),
             "xla_autotune": "XLA's default" if spec["xla_autotune"] is None else int(spec["xla_autotune"]),
             "pipeline": spec["pipeline"], "cudnn_benchmark": bool(spec["cudnn_benchmark"]),
             "channels_last": bool(spec["channels_last"]), "class_weights": bool(spec["class_weights"]),
             "same_init": bool(spec["same_init"]), "pretrained": spec.get("pretrained"),
             "inference_only": bool(spec["inference_only"]),
             "recompute_batchnorm": bool(spec.get("recompute_batchnorm")),
             "warmup": int(spec["warmup_iters"]), "measure": int(spec["measure_iters"])}
    if spec.get("resolution") is not None:
        state["resolution"] = int(spec["resolution"])
    for fw in FRAMEWORKS:
        state[f"fw_{fw}"] = fw in spec["frameworks"] and fw in installed
    for fw in spec["frameworks"]:
        if fw not in installed:
            warnings.append(f"{fw} is not installed here, so it is left out")
    extra = {}
    for k, v in (spec.get("dataset_options") or {}).items():
        if spec["dataset"] == "synthetic" and k in SYNTHETIC_KEYS:
            state[SYNTHETIC_KEYS[k]] = int(v)
        elif k == "path":
            state["folder_path"] = str(v)
        else:
            extra[k] = v
    if spec.get("weight_decay"):
        warnings.append(f"weight decay {spec['weight_decay']} has no field on this form; queue the preset's spec "
                        "directly to keep it")
    return state, extra, warnings
