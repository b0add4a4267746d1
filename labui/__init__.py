"""UI helpers of the Streamlit app: colours, result shaping, Altair charts, widgets.

Nothing in this package imports torch, tensorflow, jax, keras or flax: the app starts
fast and every framework runs in the workers. ``colors``, ``results`` and ``charts``
do not import Streamlit either, so they are unit-testable on their own.
"""
