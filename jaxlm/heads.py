"""Classification on top of a language-model backbone.

Shape key: B batch, L length, D model width, C classes.

`Classifier` keeps the backbone's parameters under `backbone` (the same tree
the pretraining run saved, so they restore by name) and adds a `head`. The
sequence is pooled from the backbone's final hidden states: the first token
(`<cls>`, for bidirectional encoders), the last non-pad token (for causal
decoders, the only position that has seen the whole text), or the mean of the
non-pad tokens.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxlm.config import POOLINGS
from jaxlm.data.tokenizers import PAD_ID
from jaxlm.layers.mlp import bias_init, dense_init


def pool(h_BLD: jax.Array, ids_BL: jax.Array, pooling: str) -> jax.Array:
  """[B, L, D] hidden states -> [B, D], ignoring padding (id 0)."""
  mask_BL = ids_BL != PAD_ID
  if pooling == "first":
    return h_BLD[:, 0]
  if pooling == "last":
    last_B = jnp.maximum(jnp.sum(mask_BL, axis=1) - 1, 0)
    return jnp.take_along_axis(h_BLD, last_B[:, None, None], axis=1)[:, 0]
  if pooling == "mean":
    m_BL1 = mask_BL[..., None].astype(h_BLD.dtype)
    return jnp.sum(h_BLD * m_BL1, axis=1) / jnp.maximum(jnp.sum(m_BL1, axis=1), 1.0)
  raise ValueError(f"config.finetune.pooling={pooling!r} is not one of {POOLINGS}.")


class Classifier(nn.Module):
  """Backbone hidden states -> pooled -> dropout -> dense logits [B, C]."""

  backbone: nn.Module
  num_classes: int
  pooling: str = "last"
  dropout: float = 0.0

  @nn.compact
  def __call__(self, ids_BL: jax.Array, positions_BL: jax.Array | None = None,
               segment_ids_BL: jax.Array | None = None,
               deterministic: bool = True) -> jax.Array:
    h_BLD = self.backbone(ids_BL, positions_BL, segment_ids_BL, deterministic=deterministic,
                          return_hidden=True)
    x_BD = pool(h_BLD, ids_BL, self.pooling).astype(jnp.float32)
    x_BD = nn.Dropout(self.dropout)(x_BD, deterministic=deterministic)
    logits_BC = nn.Dense(self.num_classes, kernel_init=dense_init(("embed", None)),
                         bias_init=bias_init((None,)), name="head")(x_BD)
    return logits_BC.astype(jnp.float32)


def default_pooling(family: str, causal: bool) -> str:
  """[CLS]/first token for bidirectional encoders, the last real token for causal models."""
  return "first" if family == "bert" or not causal else "last"
