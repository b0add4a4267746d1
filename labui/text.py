"""Figures, times and comparisons in words, as every page writes them, and the small
tables of the home page as Markdown: plain Python, no pandas.

Why a module of its own: the home page and the job panel need only these, and the first
page a visitor opens should not wait for pandas and pyarrow (a third of the server's work
for it on a 2-core machine, issue 16); labui.results, which shapes the result pages'
frames, imports pandas and uses these.
"""
from __future__ import annotations

import functools
import json
import math
import re
from collections.abc import Iterable

from .colors import ordered

NOT_MEASURED = "not measured"


def is_number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def num(v):
    """A finite number as float, anything else (None, NaN, text) as None."""
    return float(v) if is_number(v) else None


def fmt_bytes(n) -> str:
    if not is_number(n):
        return NOT_MEASURED
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"


def fmt(v, spec: str = ",.3g", unit: str = "") -> str:
    if not is_number(v):
        return NOT_MEASURED
    text = format(v, spec)
    return f"{text} {unit}".rstrip()


def fmt_count(v) -> str:
    return f"{int(v):,}" if is_number(v) else NOT_MEASURED


def frameworks_of(results: Iterable[dict]) -> list[str]:
    return ordered(r.get("framework", "?") for r in results)


# -- comparisons -------------------------------------------------------------------------
def fmt_time(ts) -> str:
    """A created_at (seconds since the epoch, or ISO text) as local 'YYYY-MM-DD HH:MM'."""
    if is_number(ts):
        import datetime as _dt

        return _dt.datetime.fromtimestamp(ts).strftime("%Y-%m-%d %H:%M:%S")
    return str(ts or "")[:19].replace("T", " ")


# How a setting that differs from the default comparison is named in a label.
_SETTING_WORDS = {
    "epochs": lambda v: f"{v} epoch{'s' if v != 1 else ''}",
    "optimizer": str, "learning_rate": lambda v: f"lr {v:g}", "lr_schedule": lambda v: f"{v} schedule",
    "train_batch_size": lambda v: f"train batch {v}", "weight_decay": lambda v: f"weight decay {v:g}",
    "precision": str, "compile": lambda v: _compile_words(v),
    "xla_autotune": lambda v: "XLA autotune default" if v is None else f"XLA autotune {v}",
    "cudnn_benchmark": lambda v: "cuDNN benchmark" if v else "no cuDNN benchmark",
    "channels_last": lambda v: "channels last" if v else "channels first",
    "pipeline": lambda v: f"{v} pipeline", "class_weights": lambda v: "class-weighted" if v else "unweighted",
    "same_init": lambda v: "same init" if v else "own init",
    "recompute_batchnorm": lambda v: "BatchNorm recomputed" if v else "BatchNorm not recomputed",
    "inference_only": lambda v: "inference only" if v else "trained",
    "batch_sizes": lambda v: "batches " + ",".join(map(str, v)), "seed": lambda v: f"seed {v}",
    "warmup_iters": lambda v: f"{v} warm-up", "measure_iters": lambda v: f"{v} timed calls",
}


def _compile_words(value) -> str:
    from engines.runs.spec import compile_text

    return compile_text(value, {})


def setting_words(differences: dict) -> list[str]:
    """Settings that differ from the default comparison (spec.differences_from_default),
    in a few words each, in RunSpec's field order. An inference-only comparison names
    that, not the epochs and BatchNorm settings it then has."""
    if differences.get("inference_only"):
        differences = {k: v for k, v in differences.items() if k not in ("epochs", "recompute_batchnorm")}
    words = []
    for k, v in differences.items():
        fmt = _SETTING_WORDS.get(k)
        try:
            words.append(fmt(v) if fmt else f"{k.replace('_', ' ')} {v}")
        except (TypeError, ValueError):
            words.append(f"{k.replace('_', ' ')} {v}")
    return words


def comparison_label(c: dict) -> str:
    """One line naming a comparison from ResultStore.comparisons(): its data, architecture
    and frameworks, then every setting that differs from the default comparison (or
    "defaults"), then when."""
    res = f"{c.get('resolution')} px" if c.get("resolution") else "native size"
    fws = ", ".join(ordered(c.get("frameworks") or []))
    seeds = c.get("seeds") or []
    rep = f" · {len(seeds)} seeds" if len(seeds) > 1 else ""
    when = fmt_time(c.get("created_at"))[:16]
    statuses = c.get("statuses") or {}
    bad = {k: v for k, v in statuses.items() if k != "ok"} if isinstance(statuses, dict) else {}
    bad_txt = (" · " + ", ".join(f"{v} {k}" for k, v in bad.items())) if bad else ""
    spec = c.get("spec") or {}
    settings_txt = ""
    if spec:
        settings_txt = " · " + _settings_text(json.dumps(spec, sort_keys=True))
    return f"{c.get('dataset')} · {res} · {c.get('architecture')} · {fws}{rep}{settings_txt}{bad_txt} · {when}"


@functools.lru_cache(maxsize=4096)
def _settings_text(spec_json: str) -> str:
    """A stored request's settings that differ from the default, in words (or "defaults").
    Kept per request: every result page labels every comparison in its picker on every
    rerun, and each label builds a default RunSpec (a fifth of a second for a hundred
    comparisons, issue 16). A request's text never changes: its spec is its identity."""
    from engines.runs.spec import differences_from_default

    return ", ".join(setting_words(differences_from_default(json.loads(spec_json)))) or "defaults"


# -- Markdown tables -------------------------------------------------------------------------
_PUNCTUATION = re.compile(r"([!-/:-@\[-`{-~])")  # every ASCII punctuation mark: CommonMark lets each be escaped


def markdown_cell(value) -> str:
    """A cell's text shown as it is: every punctuation mark escaped (so `|` cannot split
    the row, and `*`, `_`, `$`, `:icon:` or `[link]` cannot format it), on one line."""
    text = " ".join(str("" if value is None else value).split())
    return _PUNCTUATION.sub(r"\\\1", text)


def markdown_table(rows: list[dict]) -> str:
    """Rows (dicts with the same keys, in column order) as a Markdown table for
    st.markdown. The home page draws its small tables so, not with st.dataframe: that
    needs pandas and pyarrow in the server and 1.2 MB of scripts in the browser before
    the first page is done (issue 16)."""
    if not rows:
        return ""
    columns = list(rows[0])
    lines = ["| " + " | ".join(markdown_cell(c) for c in columns) + " |", "|" + " --- |" * len(columns)]
    lines += ["| " + " | ".join(markdown_cell(row.get(c)) for c in columns) + " |" for row in rows]
    return "\n".join(lines)
