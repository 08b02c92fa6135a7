"""Reusable Flax (linen) layers; every parameter carries logical axis names.

Shape key used in names: B batch, L query length, S key length, D model width,
H query heads, K key/value heads, E head dim, F MLP width, V vocabulary.
"""

from jaxlm.layers import attention, embeddings, lstm, mlp, norms, transformer  # noqa: F401
