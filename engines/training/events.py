"""Progress events as JSON lines, for the UI and the CLI.

A worker passes `JsonLinesEmitter(sys.stdout)` as the engines' `on_event`; the parent reads
the lines as they arrive. One object per line, always with "event"; numbers are plain
floats/ints so any JSON reader takes them (NaN is written as null).
"""
from __future__ import annotations

import json
import math
import threading
import time
from collections.abc import Callable
from typing import IO

EventCallback = Callable[[dict], None]


def _clean(v):
    if isinstance(v, float) and not math.isfinite(v):
        return None
    if isinstance(v, dict):
        return {k: _clean(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_clean(x) for x in v]
    if hasattr(v, "item") and callable(v.item):  # numpy / framework scalars
        return _clean(v.item())
    return v


def make_event(event: str, **fields) -> dict:
    return {"event": event, **{k: _clean(v) for k, v in fields.items()}}


class JsonLinesEmitter:
    """Writes each event as one JSON line and flushes, so a reading parent sees it now."""

    def __init__(self, stream: IO[str], *, framework: str | None = None):
        self.stream = stream
        self.framework = framework
        self._lock = threading.Lock()  # Keras may call back from its own threads

    def __call__(self, event: dict) -> None:
        ev = dict(event)
        if self.framework and "framework" not in ev:
            ev["framework"] = self.framework
        ev.setdefault("time", round(time.time(), 3))
        line = json.dumps(_clean(ev), allow_nan=False)
        with self._lock:
            self.stream.write(line + "\n")
            self.stream.flush()


def parse_events(text: str) -> list[dict]:
    """Events from a worker's output; lines that are not event objects are skipped."""
    out = []
    for line in text.splitlines():
        line = line.strip()
        if not line.startswith("{"):
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(obj, dict) and "event" in obj:
            out.append(obj)
    return out


def null_callback(event: dict) -> None:
    pass
