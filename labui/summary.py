"""The few sentences at the top of a result page (and on the home page after the default
run): who was most accurate, who trained fastest and who ran inference fastest, by how
much, and whether the difference is significant when there are repeats. Pure data
shaping over schema-1 result dicts (engines.analysis.stats); no Streamlit, no framework.
"""
from __future__ import annotations

from engines.analysis import health, stats
from engines.frameworks import label

from .colors import ordered


def _means(results: list[dict], metric: str) -> dict[str, list[float]]:
    values = stats.metric_values(results, metric)
    return {fw: values[fw] for fw in ordered(values) if values[fw]}


def _line(results: list[dict], metric: str, title: str, shown, higher: bool) -> str | None:
    """"**title:** Best (its figure); <the comparison with the next best, in words>"."""
    values = _means(results, metric)
    if not values:
        return None
    mean = {fw: sum(v) / len(v) for fw, v in values.items()}
    ranked = sorted(mean, key=lambda fw: mean[fw], reverse=higher)
    best = ranked[0]
    head = f"**{title}:** {label(best)} ({shown(mean[best])})"
    if len(ranked) == 1:
        return f"{head}; the only framework measured."
    nxt = ranked[1]
    if mean[best] == mean[nxt]:
        tied = [fw for fw in ranked if mean[fw] == mean[best]]
        return f"**{title}:** {', '.join(label(f) for f in tied)} tie ({shown(mean[best])})."
    r = stats.compare(values[best], values[nxt], name_a=label(best), name_b=label(nxt), metric=metric,
                      higher_is_better=higher)
    sentence = r["sentence"]
    if r["reason"] == stats.NO_TEST_FEW:
        sentence = sentence.split(" (n = ")[0] + " (one run each: no test of significance; set Repeats to 2 or more)."
    return f"{head}; {sentence}"


def _inference_batch(results: list[dict]) -> int | None:
    """The largest batch size every framework with inference timings measured (else the
    largest any did)."""
    sizes: dict[str, set[int]] = {}
    for r in results:
        if r.get("status") != "ok":
            continue
        for e in r.get("inference") or []:
            if e.get("status", "ok") == "ok" and isinstance(e.get("batch_size"), int):
                sizes.setdefault(r.get("framework"), set()).add(e["batch_size"])
    if not sizes:
        return None
    common = set.intersection(*sizes.values())
    return max(common or set.union(*sizes.values()))


def compiled(results: list[dict]) -> dict[str, bool]:
    """framework -> whether it compiled, as its results' jobs say (in the table's order)."""
    ran = {r.get("framework"): (r.get("spec") or {}).get("compile") for r in results}
    return {fw: ran[fw] for fw in ordered(ran) if isinstance(ran[fw], bool)}


def _compile_line(results: list[dict]) -> str | None:
    """When some frameworks compiled and others did not (a request that leaves compile to
    each framework), which did: the times above compare them as they ran."""
    compiled_ = compiled([r for r in results if r.get("status") == "ok"])
    if len(set(compiled_.values())) < 2:
        return None
    on = ", ".join(label(fw) for fw, c in compiled_.items() if c)
    off = ", ".join(label(fw) for fw, c in compiled_.items() if not c)
    return (f"**Compiled:** {on}; **not compiled:** {off}, each framework's faster setting for a short run "
            "on a CPU. To compare them all compiled, or all not, set Compile on the Run page.")


def headline(results: list[dict]) -> list[str]:
    """Markdown sentences, most important first; empty when nothing was measured."""
    lines = [
        _line(results, "evaluation.accuracy", "Most accurate", lambda v: f"test accuracy {v:.1%}", True),
        _line(results, "train.epoch_time_s", "Fastest to train", lambda v: f"{v:.3g} s per epoch", False),
    ]
    lines.append(_compile_line(results))
    bs = _inference_batch(results)
    if bs is not None:
        lines.append(_line(results, f"inference.{bs}.throughput_images_per_s", f"Fastest inference at batch {bs}",
                           lambda v: f"{v:,.0f} images/s", True))
    failed = [r for r in results if r.get("status") != "ok"]
    if failed:
        names = ", ".join(dict.fromkeys(f"{label(r.get('framework'))} ({r.get('status')})" for r in failed))
        lines.append(f"**Not in these figures:** {names}; see the message below.")
    return [line for line in lines if line]


def warnings(results: list[dict]) -> list[str]:
    """What the student should check before trusting the figures (engines.analysis.health)."""
    return ([g["sentence"] for g in health.accuracy_gaps(results)]
            + [g["sentence"] for g in health.framework_gaps(results)])
