"""One colour per framework, the same on every page and chart."""
from __future__ import annotations

FRAMEWORK_ORDER = ("keras", "tensorflow", "pytorch", "jax")
FRAMEWORK_COLORS = {
    "keras": "#D00000",       # Keras red
    "tensorflow": "#FF8F00",  # TensorFlow orange
    "pytorch": "#6F42C1",     # purple, distinct from Keras' red
    "jax": "#1A73E8",         # JAX blue
}
FRAMEWORK_LABELS = {"keras": "Keras", "tensorflow": "TensorFlow", "pytorch": "PyTorch", "jax": "JAX/Flax"}
OTHER_COLOR = "#7F7F7F"


def ordered(frameworks) -> list[str]:
    """Frameworks in the lab's fixed order, unknown ones after, each once."""
    frameworks = list(dict.fromkeys(frameworks))
    known = [f for f in FRAMEWORK_ORDER if f in frameworks]
    return known + sorted(f for f in frameworks if f not in FRAMEWORK_ORDER)


def color_of(framework: str) -> str:
    return FRAMEWORK_COLORS.get(framework, OTHER_COLOR)


def domain_range(frameworks=None) -> tuple[list[str], list[str]]:
    """(domain, range) for an Altair colour scale: the colours are given explicitly, so
    a framework keeps its colour whichever subset a chart shows."""
    domain = ordered(list(frameworks) if frameworks is not None and len(frameworks) else FRAMEWORK_ORDER)
    return domain, [color_of(f) for f in domain]


def badge(framework: str) -> str:
    """Markdown: the framework's name in its colour (Streamlit's :color[...] only has a
    few named colours, so a coloured square is used)."""
    return f"<span style='color:{color_of(framework)}'>■</span> **{framework}**"
