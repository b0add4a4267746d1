"""The result cache: RunResults by key, and trained weights beside them.

A diskcache directory (default `cache_dir()/results`, safe to share between processes).
Every value is a JSON text file of its own (`disk_min_file_size=0`): a result is then
readable with any tool, and a damaged file is a damaged entry, found by `get`, dropped with
a warning and recomputed, rather than a pickle that fails somewhere later.

Entries:
  result:<key>        a RunResult (schema 1) plus "key", "comparison_key", "created_at"
  train:<train_key>   where the weights of a finished training are, and its "train"
                      section, so that a job that differs only in inference settings
                      loads them instead of training again
"""
from __future__ import annotations

import json
import logging
import os
import time
import warnings
from pathlib import Path

import diskcache

from engines.paths import cache_dir
from engines.runs.spec import FRAMEWORKS, SCHEMA, comparison_key

log = logging.getLogger(__name__)

RESULT_STATUSES = ("ok", "oom", "crashed", "timed_out", "error", "cancelled")
CACHEABLE_STATUSES = ("ok", "oom")  # a failure is shown once, then tried again
_RESULT = "result:"
_TRAIN = "train:"


class CorruptEntry(ValueError):
    pass


def validate_result(result) -> list[str]:
    """What is wrong with a RunResult, as messages; empty when it is usable."""
    if not isinstance(result, dict):
        return [f"not an object but {type(result).__name__}"]
    problems = []
    if result.get("schema") != SCHEMA:
        problems.append(f"schema is {result.get('schema')!r}, this lab reads {SCHEMA}")
    if result.get("framework") not in FRAMEWORKS:
        problems.append(f"framework {result.get('framework')!r} is not one of {', '.join(FRAMEWORKS)}")
    if result.get("status") not in RESULT_STATUSES:
        problems.append(f"status {result.get('status')!r} is not one of {', '.join(RESULT_STATUSES)}")
    if not isinstance(result.get("spec"), dict):
        problems.append("spec is missing")
    for name in ("train", "evaluation", "model", "environment"):
        if result.get(name) is not None and not isinstance(result[name], dict):
            problems.append(f"{name} must be an object or null")
    if not isinstance(result.get("inference", []), list):
        problems.append("inference must be a list")
    return problems


class ResultStore:
    def __init__(self, path=None):
        self.path = Path(path) if path is not None else cache_dir() / "results"
        self.path.mkdir(parents=True, exist_ok=True)
        # disk_min_file_size=0: every value in its own file (see the module docstring).
        self._cache = diskcache.Cache(str(self.path), disk_min_file_size=0, timeout=60)

    # -- results ------------------------------------------------------------------------
    def get(self, key: str) -> dict | None:
        try:
            return self._load(_RESULT + key, expect_key=key)
        except CorruptEntry as e:
            self._drop(_RESULT + key, e)
            return None

    def put(self, key: str, result: dict) -> None:
        result = dict(result, key=key, created_at=result.get("created_at") or time.time())
        problems = validate_result(result)
        if problems:
            raise ValueError(f"not a valid RunResult for {key}: {'; '.join(problems)}")
        result["comparison_key"] = comparison_key(result["spec"])
        self._cache.set(_RESULT + key, json.dumps(result, allow_nan=False))

    def delete(self, key: str) -> bool:
        return bool(self._cache.delete(_RESULT + key))

    def delete_comparison(self, comparison_key: str) -> int:
        return sum(self.delete(r["key"]) for r in self.comparison_results(comparison_key))

    def list_results(self) -> list[dict]:
        out = []
        for k in list(self._cache.iterkeys()):
            if isinstance(k, str) and k.startswith(_RESULT):
                result = self.get(k[len(_RESULT):])
                if result is not None:
                    out.append(result)
        return out

    def comparison_results(self, comparison_key: str) -> list[dict]:
        rows = [r for r in self.list_results() if r.get("comparison_key") == comparison_key]
        return sorted(rows, key=lambda r: (r["spec"].get("seed", 0), FRAMEWORKS.index(r["framework"])))

    def comparisons(self) -> list[dict]:
        """One summary per comparison, newest first. "statuses" counts results by status."""
        groups: dict[str, list[dict]] = {}
        for r in self.list_results():
            groups.setdefault(r["comparison_key"], []).append(r)
        out = []
        for ck, rows in groups.items():
            spec = rows[0]["spec"]
            statuses: dict[str, int] = {}
            for r in rows:
                statuses[r["status"]] = statuses.get(r["status"], 0) + 1
            out.append({
                "comparison_key": ck, "dataset": spec.get("dataset"), "resolution": spec.get("resolution"),
                "architecture": spec.get("architecture"),
                "frameworks": [f for f in FRAMEWORKS if any(r["framework"] == f for r in rows)],
                "seeds": sorted({r["spec"].get("seed") for r in rows}),
                "created_at": max(r["created_at"] for r in rows), "n_results": len(rows),
                "statuses": statuses,
                "spec": {k: v for k, v in spec.items() if k not in ("frameworks", "seed", "repeats")},
            })
        return sorted(out, key=lambda c: c["created_at"], reverse=True)

    # -- trained weights ----------------------------------------------------------------
    def weights_path(self, train_key: str, framework: str) -> str:
        """Where a task saves its weights (the engine adds its format's suffix)."""
        folder = self.path / "weights"
        folder.mkdir(exist_ok=True)
        return str(folder / f"{train_key}-{framework}")

    def put_training(self, train_key: str, *, weights_file: str, train: dict | None, result_key: str) -> None:
        self._cache.set(_TRAIN + train_key, json.dumps(
            {"weights_file": weights_file, "train": train, "result_key": result_key}, allow_nan=False))

    def get_training(self, train_key: str) -> dict | None:
        """A finished training whose weight file is still there, or None."""
        try:
            entry = self._load(_TRAIN + train_key)
        except CorruptEntry as e:
            self._drop(_TRAIN + train_key, e)
            return None
        if entry is None:
            return None
        if not os.path.isfile(entry.get("weights_file") or ""):
            self._drop(_TRAIN + train_key, CorruptEntry(f"weight file {entry.get('weights_file')} is gone"))
            return None
        return entry

    # -- internals ----------------------------------------------------------------------
    def _load(self, name: str, expect_key: str | None = None) -> dict | None:
        try:
            text = self._cache.get(name)
        except Exception as e:  # noqa: BLE001 - an unreadable value file (bad bytes, ...)
            raise CorruptEntry(f"unreadable: {type(e).__name__}: {e}") from None
        if text is None:
            return None
        try:
            value = json.loads(text)
        except (TypeError, ValueError) as e:
            raise CorruptEntry(f"not valid JSON ({e})") from None
        if not isinstance(value, dict):
            raise CorruptEntry(f"not an object but {type(value).__name__}")
        if expect_key is not None:
            problems = validate_result(value)
            if value.get("key") != expect_key:
                problems.append(f"it is stored as {expect_key} but says key {value.get('key')!r}")
            if problems:
                raise CorruptEntry("; ".join(problems))
        return value

    def _drop(self, name: str, why: Exception) -> None:
        msg = f"dropped the cache entry {name} in {self.path}: {why}; it will be computed again"
        log.warning(msg)
        warnings.warn(msg, RuntimeWarning, stacklevel=3)
        try:
            self._cache.delete(name)
        except Exception:  # noqa: BLE001 - a value file we cannot even delete: leave it
            log.exception("could not delete %s", name)
