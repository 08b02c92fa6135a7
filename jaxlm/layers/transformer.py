"""Transformer blocks and the layer stack (optionally scanned and rematerialized).

`TransformerConfig` gathers the switches the blocks need, so a research model
can build a stack without jaxlm's config system:

  >>> cfg = TransformerConfig(vocab_size=256, num_layers=2, num_heads=4, emb_dim=64,
  ...                         mlp_dim=256, position="rope")
  >>> stack = TransformerStack(cfg)
  >>> y_BLD = stack.apply(stack.init(key, x_BLD, positions_BL), x_BLD, positions_BL)
"""

from __future__ import annotations

import dataclasses

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxlm.layers.attention import Attention
from jaxlm.layers.mlp import Mlp
from jaxlm.layers.norms import make_norm

ACT = ("act_batch", "act_seq", "act_embed")


@dataclasses.dataclass(frozen=True)
class TransformerConfig:
  vocab_size: int
  vocab_multiple: int = 128  # Embedding rows rounded up to this (shardable, MXU-friendly).
  num_layers: int = 4
  num_heads: int = 4
  emb_dim: int = 128
  mlp_dim: int = 512
  num_kv_heads: int = 0
  head_dim: int = 0
  max_len: int = 512
  position: str = "learned"
  rope_base: float = 10_000.0
  attention: str = "dot"
  causal: bool = True
  sliding_window: int = 0
  norm: str = "layernorm"
  norm_position: str = "pre"
  mlp: str = "gelu"
  use_bias: bool = True
  dropout: float = 0.0
  attention_dropout: float = 0.0
  tie_embeddings: bool = True
  dtype: str = "float32"
  param_dtype: str = "float32"
  scan_layers: bool = False
  remat: str = "none"
  attention_impl: str = ""
  decode: bool = False
  sow_weights: bool = False
  cache_len: int = 0  # KV-cache slots when decoding; 0 = max_len (generation buckets set it).
  norm_eps: float = 1e-6  # LayerNorm/RMSNorm epsilon (Hugging Face GPT-2 uses 1e-5).
  type_vocab_size: int = 0  # > 0: add segment/type embeddings (BERT's sentence A/B).
  fused_qkv: bool = False  # One q/k/v projection matmul (MHA only).

  @property
  def padded_vocab(self) -> int:
    m = max(self.vocab_multiple, 1)
    return -(-self.vocab_size // m) * m

  @property
  def dims_per_head(self) -> int:
    return self.head_dim or self.emb_dim // self.num_heads

  @property
  def compute_dtype(self):
    return jnp.dtype(self.dtype)

  @property
  def weight_dtype(self):
    return jnp.dtype(self.param_dtype)

  @classmethod
  def from_config(cls, model_cfg, vocab_size: int, seq_len: int, **overrides):
    return dataclass_from_config(cls, model_cfg, vocab_size, seq_len, **overrides)


def dataclass_from_config(cls, model_cfg, vocab_size: int, seq_len: int, **overrides):
  """A model config dataclass from `config.model` (a ConfigDict) plus data-derived sizes."""
  fields = {f.name for f in dataclasses.fields(cls)}
  kw = {k: v for k, v in model_cfg.to_dict().items() if k in fields}
  kw.update(vocab_size=vocab_size, max_len=model_cfg.get("max_len") or seq_len, **overrides)
  return cls(**kw)


class Block(nn.Module):
  """Attention + MLP with residuals; pre-norm (GPT-2) or post-norm (original)."""

  cfg: TransformerConfig
  deterministic: bool = True

  @nn.compact
  def __call__(self, x_BLD, positions_BL, segment_ids_BL):
    c = self.cfg
    dt, pdt = c.compute_dtype, c.weight_dtype
    out_scale = 1.0 / (2 * c.num_layers)  # GPT-2: residual projections scaled by depth.
    attn = Attention(
        num_heads=c.num_heads, head_dim=c.dims_per_head, num_kv_heads=c.num_kv_heads,
        causal=c.causal, position=c.position, rope_base=c.rope_base, score=c.attention,
        sliding_window=c.sliding_window, dropout=c.attention_dropout, use_bias=c.use_bias,
        dtype=dt, param_dtype=pdt, implementation=c.attention_impl or None, decode=c.decode,
        cache_len=c.cache_len or c.max_len, sow_weights=c.sow_weights, out_scale=out_scale,
        fused_qkv=c.fused_qkv, name="attn")
    mlp = Mlp(c.mlp_dim, kind=c.mlp, use_bias=c.use_bias, dropout=c.dropout, dtype=dt,
              param_dtype=pdt, out_scale=out_scale, name="mlp")
    drop = nn.Dropout(c.dropout)
    norm1 = make_norm(c.norm, dt, pdt, name="norm1", use_bias=c.use_bias, eps=c.norm_eps)
    norm2 = make_norm(c.norm, dt, pdt, name="norm2", use_bias=c.use_bias, eps=c.norm_eps)
    x_BLD = nn.with_logical_constraint(x_BLD, ACT)
    if c.norm_position == "pre":
      h = attn(norm1(x_BLD), positions_BL, segment_ids_BL, self.deterministic)
      x_BLD = x_BLD + drop(h, deterministic=self.deterministic)
      h = mlp(norm2(x_BLD), self.deterministic)
      x_BLD = x_BLD + drop(h, deterministic=self.deterministic)
    else:
      h = attn(x_BLD, positions_BL, segment_ids_BL, self.deterministic)
      x_BLD = norm1(x_BLD + drop(h, deterministic=self.deterministic))
      h = mlp(x_BLD, self.deterministic)
      x_BLD = norm2(x_BLD + drop(h, deterministic=self.deterministic))
    return nn.with_logical_constraint(x_BLD, ACT)


class _ScanBlock(Block):
  """Block with the (carry, _) -> (carry, _) signature nn.scan needs."""

  @nn.compact
  def __call__(self, x_BLD, positions_BL, segment_ids_BL):  # type: ignore[override]
    return super().__call__(x_BLD, positions_BL, segment_ids_BL), None


REMAT_POLICIES = {
    "full": None,  # Save nothing: recompute the whole block in the backward pass.
    "dots_saveable": jax.checkpoint_policies.dots_with_no_batch_dims_saveable,
}


class TransformerStack(nn.Module):
  """`num_layers` blocks; `scan_layers` compiles one block whatever the depth."""

  cfg: TransformerConfig
  deterministic: bool = True

  @nn.compact
  def __call__(self, x_BLD, positions_BL, segment_ids_BL=None):
    c = self.cfg
    block_cls = _ScanBlock if c.scan_layers else Block
    if c.remat != "none":
      block_cls = nn.remat(block_cls, policy=REMAT_POLICIES[c.remat], prevent_cse=not c.scan_layers)
    if c.scan_layers:
      scanned = nn.scan(
          block_cls, variable_axes={"params": 0, "cache": 0, "intermediates": 0},
          split_rngs={"params": True, "dropout": True}, in_axes=(nn.broadcast, nn.broadcast),
          length=c.num_layers, metadata_params={nn.PARTITION_NAME: "layers"})
      x_BLD, _ = scanned(c, self.deterministic, name="layers")(x_BLD, positions_BL, segment_ids_BL)
      return x_BLD
    for i in range(c.num_layers):
      x_BLD = block_cls(c, self.deterministic, name=f"layer_{i}")(x_BLD, positions_BL,
                                                                  segment_ids_BL)
    return x_BLD
