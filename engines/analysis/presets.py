"""Paper presets: the five papers' experiments as RunSpecs, with their published figures.

Each preset is one YAML file in ``presets/`` (data, not code): the paper (title, file under
shared/papers, hardware), one or more labelled RunSpec dicts, the paper's published figures
(per spec, framework and metric, with the unit as printed and the table or figure they come
from), and a ``cpu_reduced`` override that says what it reduces. Loading a preset never
builds a dataset: a spec whose data is not on this machine (a breast-histology folder, say)
still loads and validates; the dataset's state is checked when it runs.

    list_presets() -> [Preset]            get_preset(name) -> Preset
    preset.specs(reduced=False) -> [RunSpec]     preset.published, .hardware, .paper
    published_rows(preset) -> [{"spec_label","framework","metric","stat","value","unit","source","note"}]
    side_by_side(preset, results) -> [{"spec_label","framework","metric","stat","ours","paper",
                                       "unit","n","our_hardware","paper_hardware","source","note"}]

Published units are kept as printed; ``side_by_side`` converts our figure into the paper's
unit (fraction -> %, bytes -> MB (10^6), J -> kJ; squared for a variance).
"""
from __future__ import annotations

import copy
import math
from dataclasses import dataclass
from pathlib import Path

import yaml

from engines.analysis import stats
from engines.frameworks import FRAMEWORKS
from engines.paths import REPO_ROOT
from engines.runs.spec import RunSpec, SpecError

PRESETS_DIR = REPO_ROOT / "presets"
STATS = ("mean", "variance", "std")

# (our unit, the paper's unit) -> factor that turns ours into theirs
_CONVERSIONS = {
    ("s", "s"): 1.0, ("ms", "ms"): 1.0, ("img/s", "img/s"): 1.0, ("", ""): 1.0,
    ("fraction", "fraction"): 1.0, ("fraction", "%"): 100.0,
    ("bytes", "bytes"): 1.0, ("bytes", "MB"): 1e-6, ("bytes", "MiB"): 1.0 / 2**20,
    ("J", "J"): 1.0, ("J", "kJ"): 1e-3,
}
# metrics the lab does not measure: shown with the paper's figure only
_UNMEASURED_PREFIXES = ("host.",)


class PresetError(ValueError):
    """A preset file is malformed; the message names the file and the field."""


@dataclass(frozen=True)
class Preset:
    name: str
    title: str
    paper: dict
    spec_entries: tuple[dict, ...]  # {"label", "spec": dict}
    published: tuple[dict, ...]  # flat rows, see published_rows()
    cpu_reduced: dict
    summary: str = ""
    notes: tuple[str, ...] = ()
    published_tests: tuple[dict, ...] = ()
    order: int = 100
    path: str = ""

    @property
    def hardware(self) -> str:
        return self.paper.get("hardware", "")

    @property
    def labels(self) -> list[str]:
        return [e["label"] for e in self.spec_entries]

    @property
    def reduced_description(self) -> str:
        return self.cpu_reduced.get("description", "")

    def spec_dicts(self, reduced: bool = False) -> list[tuple[str, dict]]:
        """(label, RunSpec dict) for each spec, with the cpu_reduced override applied when
        reduced (its `keep` list, then `changes`, then the spec's `per_spec` changes)."""
        out = []
        keep = self.cpu_reduced.get("keep") if reduced else None
        for entry in self.spec_entries:
            label = entry["label"]
            if keep is not None and label not in keep:
                continue
            d = copy.deepcopy(entry["spec"])
            if reduced:
                d.update(copy.deepcopy(self.cpu_reduced.get("changes") or {}))
                d.update(copy.deepcopy((self.cpu_reduced.get("per_spec") or {}).get(label) or {}))
            out.append((label, d))
        return out

    def labelled_specs(self, reduced: bool = False) -> list[tuple[str, RunSpec]]:
        """(label, validated RunSpec); SpecError names the preset and the spec."""
        out = []
        for label, d in self.spec_dicts(reduced):
            try:
                out.append((label, RunSpec.from_dict(d)))
            except SpecError as e:
                problems = {f"{self.name} / {label}{' (cpu_reduced)' if reduced else ''} / {k}": v
                            for k, v in e.problems.items()}
                raise SpecError(problems) from None
        return out

    def specs(self, reduced: bool = False) -> list[RunSpec]:
        return [s for _, s in self.labelled_specs(reduced)]

    def to_dict(self) -> dict:
        return {"name": self.name, "title": self.title, "summary": self.summary, "paper": dict(self.paper),
                "hardware": self.hardware, "notes": list(self.notes),
                "specs": [{"label": name, "spec": d} for name, d in self.spec_dicts(False)],
                "cpu_reduced": copy.deepcopy(self.cpu_reduced),
                "published": [dict(r) for r in self.published],
                "published_tests": [dict(r) for r in self.published_tests]}


# --------------------------------------------------------------------------- loading
def _fail(path: Path, msg: str):
    raise PresetError(f"{path.name}: {msg}")


def _base_unit(unit: str, stat: str) -> tuple[str, int]:
    """The unit of the metric itself and the power it is raised to ("s^2", variance -> s, 2)."""
    if stat == "variance":
        for sq in ("^2", "²"):
            if unit.endswith(sq):
                return unit[: -len(sq)], 2
    return unit, 1


def _load(path: Path) -> Preset:
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as e:
        _fail(path, f"not valid YAML: {e}")
    if not isinstance(raw, dict):
        _fail(path, "must be a mapping")
    for key in ("name", "title", "paper", "specs", "published", "cpu_reduced"):
        if key not in raw:
            _fail(path, f"missing {key!r}")
    paper = raw["paper"]
    if not isinstance(paper, dict) or not all(paper.get(k) for k in ("title", "file", "hardware")):
        _fail(path, "paper needs title, file and hardware")

    entries = []
    for i, e in enumerate(raw["specs"] or []):
        if not isinstance(e, dict) or not isinstance(e.get("label"), str) or not isinstance(e.get("spec"), dict):
            _fail(path, f"specs[{i}] needs a label and a spec mapping")
        entries.append({"label": e["label"], "spec": e["spec"]})
    if not entries:
        _fail(path, "no specs")
    labels = [e["label"] for e in entries]
    if len(set(labels)) != len(labels):
        _fail(path, "spec labels must be unique")
    frameworks = {e["label"]: list(e["spec"].get("frameworks") or []) for e in entries}

    rows = []
    for i, g in enumerate(raw["published"] or []):
        where = f"published[{i}]"
        if not isinstance(g, dict):
            _fail(path, f"{where} must be a mapping")
        for key in ("metric", "source", "values"):
            if key not in g:
                _fail(path, f"{where} missing {key!r}")
        unit = g.get("unit", "")
        unit = "" if unit is None else str(unit)
        stat = g.get("stat", "mean")
        if stat not in STATS:
            _fail(path, f"{where} stat must be one of {', '.join(STATS)}")
        spec_labels = g.get("spec", labels if len(labels) == 1 else None)
        if spec_labels is None:
            _fail(path, f"{where} must name its spec (the preset has several)")
        spec_labels = [spec_labels] if isinstance(spec_labels, str) else list(spec_labels)
        for sl in spec_labels:
            if sl not in labels:
                _fail(path, f"{where} names unknown spec {sl!r}")
        if not isinstance(g["values"], dict) or not g["values"]:
            _fail(path, f"{where} values must map framework -> number")
        for fw, v in g["values"].items():
            if fw not in FRAMEWORKS:
                _fail(path, f"{where} unknown framework {fw!r}")
            if isinstance(v, bool) or not isinstance(v, (int, float)):
                _fail(path, f"{where} {fw}: {v!r} is not a number")
            for sl in spec_labels:
                if fw not in frameworks[sl]:
                    _fail(path, f"{where} {fw} is not among the frameworks of {sl!r}")
                rows.append({"spec_label": sl, "framework": fw, "metric": g["metric"], "stat": stat,
                             "value": v, "unit": unit, "source": g["source"], "note": g.get("note")})

    tests = []
    for i, t in enumerate(raw.get("published_tests") or []):
        if not isinstance(t, dict) or t.get("spec") not in labels or "t" not in t:
            _fail(path, f"published_tests[{i}] needs a known spec and t")
        tests.append(dict(t))

    reduced = raw["cpu_reduced"]
    if not isinstance(reduced, dict) or not reduced.get("description"):
        _fail(path, "cpu_reduced needs a description of what it reduces")
    if not isinstance(reduced.get("changes", {}), dict):
        _fail(path, "cpu_reduced.changes must be a mapping")
    for sl in list(reduced.get("per_spec") or {}) + list(reduced.get("keep") or []):
        if sl not in labels:
            _fail(path, f"cpu_reduced names unknown spec {sl!r}")

    return Preset(name=str(raw["name"]), title=str(raw["title"]), paper=dict(paper),
                  spec_entries=tuple(entries), published=tuple(rows), cpu_reduced=dict(reduced),
                  summary=str(raw.get("summary", "")).strip(), notes=tuple(raw.get("notes") or ()),
                  published_tests=tuple(tests), order=int(raw.get("order", 100)), path=str(path))


_CACHE: dict[str, tuple] = {}  # folder -> (files' mtimes and sizes, presets): re-read on change


def list_presets(directory: Path | str | None = None) -> list[Preset]:
    """Every preset in presets/ (or the given folder), in their `order`."""
    folder = Path(directory) if directory else PRESETS_DIR
    files = sorted(folder.glob("*.yaml"))
    stamp = tuple((str(p), p.stat().st_mtime_ns, p.stat().st_size) for p in files)
    if _CACHE.get(str(folder), (None,))[0] == stamp:
        return list(_CACHE[str(folder)][1])
    presets = [_load(p) for p in files]
    names = [p.name for p in presets]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise PresetError(f"preset names used twice: {', '.join(dupes)}")
    presets = sorted(presets, key=lambda p: (p.order, p.name))
    _CACHE[str(folder)] = (stamp, tuple(presets))
    return list(presets)


def get_preset(name: str, directory: Path | str | None = None) -> Preset:
    presets = {p.name: p for p in list_presets(directory)}
    if name not in presets:
        raise KeyError(f"unknown preset {name!r}; known: {', '.join(presets)}")
    return presets[name]


def published_rows(preset: Preset) -> list[dict]:
    """The paper's figures as table rows: {"spec_label","framework","metric","stat",
    "value","unit","source","note"}, value and unit as printed."""
    return [dict(r) for r in preset.published]


# --------------------------------------------------------------------------- ours vs theirs
def _arch_default_batch(architecture):
    try:
        import models

        return (models.get_architecture(architecture).defaults or {}).get("batch_size", 32)
    except (ValueError, KeyError, TypeError):
        return None


def _resolution(d: dict):
    if d.get("resolution") is not None:
        return d["resolution"]
    try:
        from engines.datasets import get_info

        return get_info(d.get("dataset")).default_resolution
    except Exception:  # noqa: BLE001 - an unknown dataset simply does not match
        return None


def _match_key(d: dict) -> tuple:
    """What a result must share with a preset's spec: dataset, resolution, architecture and
    (so that the H100 preset's batch-32/64/128 training runs stay apart) the training batch
    size, resolved to the architecture's default when unset."""
    arch = d.get("architecture")
    return (d.get("dataset"), _resolution(d), arch, d.get("train_batch_size") or _arch_default_batch(arch))


def match_results(preset: Preset, results: list[dict]) -> dict[str, list[dict]]:
    """spec label -> the RunResult dicts (any status) whose spec matches that spec, full or
    cpu_reduced. A result matching no spec is left out."""
    keys: dict[tuple, str] = {}
    for reduced in (False, True):
        for label, d in preset.spec_dicts(reduced):
            keys.setdefault(_match_key(d), label)
    out: dict[str, list[dict]] = {label: [] for label in preset.labels}
    for r in results or []:
        spec = (r or {}).get("spec") or {}
        label = keys.get(_match_key(spec))
        frameworks = [fw for name, d in preset.spec_dicts(False) if name == label for fw in d.get("frameworks", [])]
        if label is not None and r.get("framework") in frameworks:
            out[label].append(r)
    return out


def _factor(metric: str, unit: str, stat: str) -> float | None:
    base, power = _base_unit(unit, stat)
    ours = stats.metric_unit(metric)
    if metric.startswith("train.final_loss") or metric.endswith("_loss"):
        ours = ""
    f = _CONVERSIONS.get((ours, base))
    return None if f is None else f ** power


def _hardware(results: list[dict]) -> str | None:
    seen = []
    for r in results:
        env = r.get("environment") or {}
        hw = env.get("gpu") or env.get("cpu") or env.get("device")
        if hw and hw not in seen:
            seen.append(hw)
    return "; ".join(seen) or None


def side_by_side(preset: Preset, results: list[dict]) -> list[dict]:
    """One row per published figure: {"spec_label","framework","metric","stat","ours",
    "paper","unit","n","our_hardware","paper_hardware","source","note"}.

    "ours" is the mean (or sample variance / std, as the paper's figure is) over the
    repeats of the matching ok results, converted into the paper's unit; null where we have
    no value (no matching result, a metric the lab does not measure, a variance from fewer
    than 2 repeats)."""
    matched = match_results(preset, results)
    rows = []
    for p in preset.published:
        rs = [r for r in matched.get(p["spec_label"], []) if r.get("framework") == p["framework"]]
        values = stats.metric_values(rs, p["metric"]).get(p["framework"], [])
        ok = [r for r in rs if r.get("status") == "ok"]
        note = p.get("note")
        ours = None
        factor = _factor(p["metric"], p["unit"], p["stat"])
        if p["metric"].startswith(_UNMEASURED_PREFIXES):
            note = note or "not measured by the lab"
        elif factor is None:
            note = f"cannot convert {stats.metric_unit(p['metric']) or 'no unit'} to {p['unit'] or 'no unit'}"
        elif values:
            s = stats.summarize(values)
            raw = {"mean": s["mean"], "std": s["std"],
                   "variance": None if s["std"] is None else s["std"] ** 2}[p["stat"]]
            ours = None if raw is None else raw * factor
            if ours is not None and not math.isfinite(ours):
                ours = None
        rows.append({"spec_label": p["spec_label"], "framework": p["framework"], "metric": p["metric"],
                     "stat": p["stat"], "ours": ours, "paper": p["value"], "unit": p["unit"],
                     "n": len(values), "our_hardware": _hardware(ok), "paper_hardware": preset.hardware,
                     "source": p["source"], "note": note})
    return rows
