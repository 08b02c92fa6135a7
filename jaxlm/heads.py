"""Classification on top of a language-model backbone.

Shape key: B batch, L length, D model width, C classes.

`Classifier` keeps the backbone's parameters under `backbone` (the same tree
the pretraining run saved, so they restore by name) and adds a `head`. The
sequence is pooled from the backbone's final hidden states: the first token
(`<cls>`, for bidirectional encoders), the last non-pad token (for causal
decoders, the only position that has seen the whole text), or the mean of the
non-pad tokens. Optional, for the mean: token dropout (each token left out of the
mean with probability p while training: the word dropout of Iyyer et al. 2015's deep
averaging network) and `head_layers` hidden ReLU layers before the logits.
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
  """Backbone hidden states -> pooled -> dropout -> [ReLU layers] -> dense logits [B, C]."""

  backbone: nn.Module
  num_classes: int
  pooling: str = "last"
  dropout: float = 0.0
  token_dropout: float = 0.0  # Mean pooling: P(a token is left out of the mean), training.
  head_layers: int = 0  # Hidden ReLU layers (each followed by dropout) before the logits.
  head_dim: int = 0  # Their width; 0 = the backbone's.

  @nn.compact
  def __call__(self, ids_BL: jax.Array, positions_BL: jax.Array | None = None,
               segment_ids_BL: jax.Array | None = None,
               deterministic: bool = True) -> jax.Array:
    h_BLD = self.backbone(ids_BL, positions_BL, segment_ids_BL, deterministic=deterministic,
                          return_hidden=True)
    pool_ids_BL = ids_BL
    if self.token_dropout > 0 and not deterministic:
      keep_BL = jax.random.bernoulli(self.make_rng("dropout"), 1.0 - self.token_dropout,
                                     ids_BL.shape)
      pool_ids_BL = jnp.where(keep_BL, ids_BL, PAD_ID)  # Left out of the mean.
    x_BD = pool(h_BLD, pool_ids_BL, self.pooling).astype(jnp.float32)
    x_BD = nn.Dropout(self.dropout)(x_BD, deterministic=deterministic)
    for i in range(self.head_layers):
      x_BD = nn.Dense(self.head_dim or x_BD.shape[-1], kernel_init=dense_init((None, None)),
                      bias_init=bias_init((None,)), name=f"hidden_{i}")(x_BD)
      x_BD = nn.Dropout(self.dropout)(nn.relu(x_BD), deterministic=deterministic)
    logits_BC = nn.Dense(self.num_classes, kernel_init=dense_init(("embed", None)),
                         bias_init=bias_init((None,)), name="head")(x_BD)
    return logits_BC.astype(jnp.float32)


def default_pooling(family: str, causal: bool) -> str:
  """[CLS]/first token for bidirectional encoders, the last real token for causal models."""
  return "first" if family == "bert" or not causal else "last"
