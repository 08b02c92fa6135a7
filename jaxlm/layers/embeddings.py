"""Token embeddings and position schemes: learned, sinusoidal, RoPE, ALiBi.

Example:
  >>> emb = Embed(num_embeddings=256, features=64)
  >>> x_BLD = emb.apply(emb.init(key, ids_BL), ids_BL)
  >>> q_BLHE = apply_rope(q_BLHE, positions_BL)  # Rotary positions on queries (and keys).
"""

from __future__ import annotations

import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np


class Embed(nn.Module):
  """Token embedding; `attend` gives the tied output projection (logits)."""

  num_embeddings: int
  features: int
  dtype: jnp.dtype = jnp.float32
  param_dtype: jnp.dtype = jnp.float32
  init_scale: float = 0.0  # > 0: uniform(-init_scale, init_scale) (the classic LSTM LMs).

  def setup(self):
    init = nn.initializers.normal(stddev=1.0 / math.sqrt(self.features))
    if self.init_scale:
      init = lambda k, s, d=jnp.float32: jax.random.uniform(k, s, d, -self.init_scale,
                                                            self.init_scale)
    self.embedding = self.param(
        "embedding", nn.with_logical_partitioning(init, ("vocab", "embed")),
        (self.num_embeddings, self.features), self.param_dtype)

  def __call__(self, ids_BL: jax.Array) -> jax.Array:
    return jnp.take(jnp.asarray(self.embedding, self.dtype), ids_BL, axis=0)

  def attend(self, x_BLD: jax.Array) -> jax.Array:
    return jnp.einsum("bld,vd->blv", x_BLD, jnp.asarray(self.embedding, self.dtype))


class LearnedPositions(nn.Module):
  """A trained table of `max_len` position vectors (GPT-2 style)."""

  max_len: int
  features: int
  dtype: jnp.dtype = jnp.float32
  param_dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, positions_BL: jax.Array) -> jax.Array:
    table = self.param(
        "pos_embedding", nn.with_logical_partitioning(nn.initializers.normal(0.02),
                                                      (None, "embed")),
        (self.max_len, self.features), self.param_dtype)
    return jnp.take(jnp.asarray(table, self.dtype), positions_BL, axis=0)


def sinusoidal(positions_BL: jax.Array, features: int, max_timescale: float = 10_000.0):
  """Fixed sine/cosine position vectors (Vaswani et al.), any length."""
  half = features // 2
  inv = jnp.exp(-math.log(max_timescale) * jnp.arange(half, dtype=jnp.float32) / max(half, 1))
  angles_BLh = positions_BL[..., None].astype(jnp.float32) * inv
  out = jnp.concatenate([jnp.sin(angles_BLh), jnp.cos(angles_BLh)], axis=-1)
  if features % 2:
    out = jnp.pad(out, [(0, 0)] * (out.ndim - 1) + [(0, 1)])
  return out


def apply_rope(x_BLHE: jax.Array, positions_BL: jax.Array, base: float = 10_000.0) -> jax.Array:
  """Rotary position embedding (Su et al.) on the last dim, in float32.

  Rotates pairs (x[i], x[i + E/2]) by angle pos * base^(-2i/E), so the dot
  product of a rotated query and key depends only on their distance.
  """
  e = x_BLHE.shape[-1]
  half = e // 2
  inv = 1.0 / (base ** (jnp.arange(half, dtype=jnp.float32) * 2.0 / e))
  angles_BLh = positions_BL[..., None].astype(jnp.float32) * inv
  sin, cos = jnp.sin(angles_BLh)[:, :, None, :], jnp.cos(angles_BLh)[:, :, None, :]
  x = x_BLHE.astype(jnp.float32)
  x1, x2 = x[..., :half], x[..., half:2 * half]
  rotated = jnp.concatenate([x1 * cos - x2 * sin, x2 * cos + x1 * sin, x[..., 2 * half:]], -1)
  return rotated.astype(x_BLHE.dtype)


def alibi_slopes(num_heads: int) -> np.ndarray:
  """ALiBi head slopes (Press et al.): a geometric sequence starting at 2^(-8/n)."""

  def pow2(n):
    start = 2.0 ** (-8.0 / n)
    return [start ** (i + 1) for i in range(n)]

  if math.log2(num_heads).is_integer():
    return np.array(pow2(num_heads), np.float32)
  closest = 2 ** math.floor(math.log2(num_heads))
  extra = pow2(2 * closest)[0::2][: num_heads - closest]
  return np.array(pow2(closest) + extra, np.float32)


def alibi_bias(num_heads: int, q_pos_BL: jax.Array, k_pos_BS: jax.Array) -> jax.Array:
  """Additive attention bias [B, H, L, S] = -slope_h * |q_pos - k_pos|."""
  slopes_H = jnp.asarray(alibi_slopes(num_heads))
  dist_BLS = jnp.abs(q_pos_BL[:, :, None] - k_pos_BS[:, None, :]).astype(jnp.float32)
  return -slopes_H[None, :, None, None] * dist_BLS[:, None]
