"""Multi-head / grouped-query / multi-query self-attention with an optional KV cache.

One module covers the variants researchers ablate: `num_kv_heads` (H = MHA,
1 = MQA, in between = GQA), causal or bidirectional, a sliding window,
RoPE or ALiBi positions, document (segment) masking, and the score function:
scaled dot product or the bilinear `h_t^T W_a h_s` (Luong et al.), here per
head on the projected query. On accelerators the path is `jax.nn.dot_product_attention`
(cuDNN flash attention on GPU); a plain einsum path (the CPU default, where XLA runs it
faster) serves attention dropout and returns the weights for inspection (`sow`n as
`intermediates/attention_weights`).

Example:
  >>> attn = Attention(num_heads=4, num_kv_heads=2, head_dim=16, position="rope")
  >>> variables = attn.init(key, x_BLD, positions_BL)
  >>> y_BLD = attn.apply(variables, x_BLD, positions_BL)
"""

from __future__ import annotations

import math

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxlm.layers.embeddings import alibi_bias, apply_rope
from jaxlm.layers.mlp import bias_init, dense_init

NEG_INF = -1e10


class Attention(nn.Module):
  num_heads: int
  head_dim: int
  num_kv_heads: int = 0  # 0 = num_heads.
  causal: bool = True
  position: str = "none"  # Only 'rope' and 'alibi' act here; others are added to the input.
  rope_base: float = 10_000.0
  score: str = "dot"  # dot | bilinear.
  sliding_window: int = 0
  dropout: float = 0.0
  use_bias: bool = True
  dtype: jnp.dtype = jnp.float32
  param_dtype: jnp.dtype = jnp.float32
  # 'einsum': explicit scores and softmax; else jax.nn.dot_product_attention's ('xla',
  # 'cudnn'). None: einsum on CPU (XLA:CPU runs it 3-5% faster, jaxlm#16), 'xla' elsewhere.
  implementation: str | None = None
  decode: bool = False  # Use and update the KV cache ('cache' collection).
  cache_len: int = 0  # Cache size in tokens when decoding.
  sow_weights: bool = False  # Store attention weights in 'intermediates'.
  out_scale: float = 1.0
  fused_qkv: bool = False  # One [D, 3, H, E] projection for q, k, v (MHA only): fewer matmuls.

  @nn.compact
  def __call__(self, x_BLD: jax.Array, positions_BL: jax.Array,
               segment_ids_BL: jax.Array | None = None,
               deterministic: bool = True) -> jax.Array:
    h, e = self.num_heads, self.head_dim
    k_heads = self.num_kv_heads or h
    b, length, d = x_BLD.shape
    kw = dict(dtype=self.dtype, param_dtype=self.param_dtype, use_bias=self.use_bias)
    def proj(name, heads, axes):
      return nn.Einsum((d, heads, e), "bld,dhe->blhe", name=name, bias_init=bias_init(axes[1:]),
                       kernel_init=dense_init(axes, in_axis=0, out_axis=(1, 2)), **kw)(x_BLD)

    if self.fused_qkv:  # The '3' axis is never sharded, so tensor shards split heads alike.
      if k_heads != h:
        raise ValueError(f"fused_qkv needs num_kv_heads == num_heads ({h}), got {k_heads}.")
      axes = ("embed", None, "heads", "head_dim")
      qkv_BL3HE = nn.Einsum((d, 3, h, e), "bld,dthe->blthe", name="qkv",
                            bias_init=bias_init(axes[1:]),
                            kernel_init=dense_init(axes, in_axis=0, out_axis=(1, 2, 3)),
                            **kw)(x_BLD)
      q_BLHE, k_BLKE, v_BLKE = (qkv_BL3HE[:, :, i] for i in range(3))
    else:
      q_BLHE = proj("query", h, ("embed", "heads", "head_dim"))
      k_BLKE = proj("key", k_heads, ("embed", "kv_heads", "head_dim"))
      v_BLKE = proj("value", k_heads, ("embed", "kv_heads", "head_dim"))
    q_BLHE = nn.with_logical_constraint(q_BLHE, ("act_batch", "act_seq", "act_heads", None))
    k_BLKE = nn.with_logical_constraint(k_BLKE, ("act_batch", "act_seq", "act_kv_heads", None))
    if self.position == "rope":
      q_BLHE = apply_rope(q_BLHE, positions_BL, self.rope_base)
      k_BLKE = apply_rope(k_BLKE, positions_BL, self.rope_base)
    if self.score == "bilinear":
      w_a = self.param("w_a", nn.with_logical_partitioning(
          lambda key, shape, dt: jnp.broadcast_to(jnp.eye(e, dtype=dt), shape),
          ("heads", None, None)), (h, e, e), self.param_dtype)
      q_BLHE = jnp.einsum("blhe,hef->blhf", q_BLHE, jnp.asarray(w_a, self.dtype))
    elif self.score != "dot":
      raise ValueError(f"Unknown attention score {self.score!r}; use 'dot' or 'bilinear'.")

    valid_BL = segment_ids_BL != 0 if segment_ids_BL is not None else jnp.ones((b, length), bool)
    seg_BL = segment_ids_BL if segment_ids_BL is not None else jnp.ones((b, length), jnp.int32)
    q_slot_BL = jnp.broadcast_to(jnp.arange(length), (b, length))
    if self.decode:
      k_BSKE, v_BSKE, k_seg_BS, k_pos_BS, k_slot_BS, q_slot_BL = self._update_cache(
          k_BLKE, v_BLKE, seg_BL * valid_BL, positions_BL)
    else:
      k_BSKE, v_BSKE, k_seg_BS, k_pos_BS = k_BLKE, v_BLKE, seg_BL * valid_BL, positions_BL
      k_slot_BS = q_slot_BL

    # Mask [B, 1, L, S]: same segment (0 = padding / empty cache slot), causal, window.
    mask = (seg_BL[:, :, None] == k_seg_BS[:, None, :]) & (k_seg_BS[:, None, :] != 0)
    if self.causal:
      mask &= k_slot_BS[:, None, :] <= q_slot_BL[:, :, None]
    if self.sliding_window:
      mask &= (q_slot_BL[:, :, None] - k_slot_BS[:, None, :]) < self.sliding_window
      if not self.causal:
        mask &= (k_slot_BS[:, None, :] - q_slot_BL[:, :, None]) < self.sliding_window
    mask = mask[:, None]
    bias = alibi_bias(h, positions_BL, k_pos_BS) if self.position == "alibi" else None

    impl = self.implementation or ("einsum" if jax.default_backend() == "cpu" else None)
    manual = self.sow_weights or (self.dropout > 0 and not deterministic) or impl == "einsum"
    if manual:
      out_BLHE = self._attend_manual(q_BLHE, k_BSKE, v_BSKE, mask, bias, deterministic)
    else:
      out_BLHE = jax.nn.dot_product_attention(
          q_BLHE, k_BSKE, v_BSKE, bias=None if bias is None else bias.astype(q_BLHE.dtype),
          mask=mask, scale=1.0 / math.sqrt(e), implementation=impl)
    out_BLHE = nn.with_logical_constraint(out_BLHE, ("act_batch", "act_seq", "act_heads", None))
    return nn.Einsum((h, e, d), "blhe,hed->bld", name="out", bias_init=bias_init(("embed",)),
                     kernel_init=dense_init(("heads", "head_dim", "embed"), self.out_scale,
                                            in_axis=(0, 1), out_axis=2), **kw)(out_BLHE)

  def _attend_manual(self, q_BLHE, k_BSKE, v_BSKE, mask_B1LS, bias_BHLS, deterministic):
    group = self.num_heads // k_BSKE.shape[2]
    k_BSHE = jnp.repeat(k_BSKE, group, axis=2)
    v_BSHE = jnp.repeat(v_BSKE, group, axis=2)
    logits_BHLS = jnp.einsum("blhe,bshe->bhls", q_BLHE, k_BSHE).astype(jnp.float32)
    logits_BHLS = logits_BHLS / math.sqrt(self.head_dim)
    if bias_BHLS is not None:
      logits_BHLS = logits_BHLS + bias_BHLS
    logits_BHLS = jnp.where(mask_B1LS, logits_BHLS, NEG_INF)
    probs_BHLS = jax.nn.softmax(logits_BHLS, axis=-1)
    probs_BHLS = jnp.where(mask_B1LS, probs_BHLS, 0.0)  # Fully masked rows (padding) -> 0.
    if self.sow_weights:
      self.sow("intermediates", "attention_weights", probs_BHLS)
    probs_BHLS = nn.Dropout(self.dropout)(probs_BHLS, deterministic=deterministic)
    return jnp.einsum("bhls,bshe->blhe", probs_BHLS.astype(v_BSHE.dtype), v_BSHE)

  def _update_cache(self, k_BLKE, v_BLKE, seg_BL, positions_BL):
    """Writes this call's keys at the cache index; returns the whole cache.

    Rows share one index (prompts are left-padded: padding has segment 0 and is
    never attended to), so each row may have its own positions. A cache whose index
    is a vector [B] (set by its owner; `init` makes a scalar) has one write index per
    row: a one-token call writes each row at its own slot (continuous batching,
    `jaxlm/batching.py`); writes past the end are dropped.
    """
    b, length, k_heads, e = k_BLKE.shape
    s = self.cache_len
    if not s:
      raise ValueError("Attention(decode=True) needs cache_len > 0.")
    ck = self.variable("cache", "cached_key", jnp.zeros, (b, s, k_heads, e), k_BLKE.dtype)
    cv = self.variable("cache", "cached_value", jnp.zeros, (b, s, k_heads, e), v_BLKE.dtype)
    cseg = self.variable("cache", "segment", jnp.zeros, (b, s), jnp.int32)
    cpos = self.variable("cache", "position", jnp.zeros, (b, s), jnp.int32)
    idx = self.variable("cache", "index", lambda: jnp.zeros((), jnp.int32))
    i = idx.value
    if i.ndim == 1:  # One write index per row.
      if length != 1:
        raise ValueError(f"A cache with one index per row takes one token per call, not "
                         f"{length}.")
      rows = jnp.arange(b)
      ck.value = ck.value.at[rows, i].set(k_BLKE[:, 0], mode="drop")
      cv.value = cv.value.at[rows, i].set(v_BLKE[:, 0], mode="drop")
      cseg.value = cseg.value.at[rows, i].set(seg_BL[:, 0].astype(jnp.int32), mode="drop")
      cpos.value = cpos.value.at[rows, i].set(positions_BL[:, 0].astype(jnp.int32),
                                              mode="drop")
    else:
      ck.value = jax.lax.dynamic_update_slice(ck.value, k_BLKE, (0, i, 0, 0))
      cv.value = jax.lax.dynamic_update_slice(cv.value, v_BLKE, (0, i, 0, 0))
      cseg.value = jax.lax.dynamic_update_slice(cseg.value, seg_BL.astype(jnp.int32), (0, i))
      cpos.value = jax.lax.dynamic_update_slice(cpos.value, positions_BL.astype(jnp.int32),
                                                (0, i))
    idx.value = i + length
    k_slot_BS = jnp.broadcast_to(jnp.arange(s), (b, s))
    q_slot_BL = jnp.broadcast_to(jnp.reshape(i, (-1, 1)) + jnp.arange(length), (b, length))
    return ck.value, cv.value, cseg.value, cpos.value, k_slot_BS, q_slot_BL
