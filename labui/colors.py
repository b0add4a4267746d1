"""One colour and one label per framework, the same on every page and chart: both come
from the framework table (engines.frameworks), which also fixes the order."""
from __future__ import annotations

from engines.frameworks import FRAMEWORKS, label

OTHER_COLOR = "#7F7F7F"


def ordered(frameworks) -> list[str]:
    """Frameworks in the table's order, unknown ones after, each once."""
    frameworks = list(dict.fromkeys(frameworks))
    known = [f for f in FRAMEWORKS if f in frameworks]
    return known + sorted(f for f in frameworks if f not in FRAMEWORKS)


def color_of(framework: str) -> str:
    f = FRAMEWORKS.get(framework)
    return f.color if f else OTHER_COLOR


def label_of(framework: str) -> str:
    return label(framework)


def domain_range(frameworks=None) -> tuple[list[str], list[str]]:
    """(domain, range) for an Altair colour scale: the colours are given explicitly, so
    a framework keeps its colour whichever subset a chart shows."""
    domain = ordered(list(frameworks) if frameworks is not None and len(frameworks) else FRAMEWORKS)
    return domain, [color_of(f) for f in domain]


def badge(framework: str) -> str:
    """Markdown: the framework's name in its colour (Streamlit's :color[...] only has a
    few named colours, so a coloured square is used)."""
    return f"<span style='color:{color_of(framework)}'>■</span> **{label_of(framework)}**"
