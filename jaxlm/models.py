"""Model families built from the public layers; `build_model` picks one from config."""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxlm.layers.embeddings import Embed, LearnedPositions, sinusoidal
from jaxlm.layers.mlp import bias_init, dense_init
from jaxlm.layers.norms import make_norm
from jaxlm.layers.transformer import ACT, TransformerConfig, TransformerStack


class TransformerLM(nn.Module):
  """Token + position embeddings, a Transformer stack, a final norm, vocab logits.

  With `causal=True` this is the decoder-only LM (GPT); with `causal=False` the
  same network is a bidirectional encoder (the BERT family uses it that way).
  """

  cfg: TransformerConfig

  @nn.compact
  def __call__(self, ids_BL: jax.Array, positions_BL: jax.Array | None = None,
               segment_ids_BL: jax.Array | None = None, deterministic: bool = True,
               return_hidden: bool = False) -> jax.Array:
    c = self.cfg
    dt, pdt = c.compute_dtype, c.weight_dtype
    if positions_BL is None:
      positions_BL = jnp.broadcast_to(jnp.arange(ids_BL.shape[1]), ids_BL.shape)
    embed = Embed(c.padded_vocab, c.emb_dim, dt, pdt, name="embed")
    x_BLD = embed(ids_BL)
    if c.position == "learned":
      x_BLD = x_BLD + LearnedPositions(c.max_len, c.emb_dim, dt, pdt, name="pos")(positions_BL)
    elif c.position == "sinusoidal":
      x_BLD = x_BLD + sinusoidal(positions_BL, c.emb_dim).astype(dt)
    x_BLD = nn.Dropout(c.dropout)(x_BLD, deterministic=deterministic)
    x_BLD = nn.with_logical_constraint(x_BLD, ACT)
    x_BLD = TransformerStack(c, deterministic, name="stack")(x_BLD, positions_BL, segment_ids_BL)
    if c.norm_position == "pre":
      x_BLD = make_norm(c.norm, dt, pdt, name="final_norm", use_bias=c.use_bias,
                        eps=c.norm_eps)(x_BLD)
    if return_hidden:
      return x_BLD
    if c.tie_embeddings:
      logits_BLV = embed.attend(x_BLD)
    else:
      logits_BLV = nn.Dense(c.padded_vocab, dtype=dt, param_dtype=pdt, use_bias=False,
                            kernel_init=dense_init(("embed", "vocab")), name="lm_head")(x_BLD)
    logits_BLV = nn.with_logical_constraint(logits_BLV, ("act_batch", "act_seq", "act_vocab"))
    logits_BLV = logits_BLV.astype(jnp.float32)
    if c.padded_vocab != c.vocab_size:  # Padding rows are never predicted.
      logits_BLV = jnp.where(jnp.arange(c.padded_vocab) < c.vocab_size, logits_BLV, -1e9)
    return logits_BLV


GPT = TransformerLM


FAMILIES = ("gpt",)


def build_model(model_cfg, vocab_size: int, seq_len: int, **overrides) -> nn.Module:
  """The model named by `config.model.family`, sized for the tokenizer and data."""
  family = model_cfg.family
  if family == "gpt":
    return TransformerLM(TransformerConfig.from_config(model_cfg, vocab_size, seq_len,
                                                       **overrides))
  raise ValueError(f"config.model.family={family!r} is not one of {FAMILIES}.")


def count_params(params, embedding_names=("embed", "pos")) -> tuple[int, int]:
  """(total, non-embedding) parameter counts; embeddings are top-level modules."""
  total = sum(x.size for x in jax.tree.leaves(params))
  emb = sum(x.size for k, v in params.items() if k in embedding_names
            for x in jax.tree.leaves(v))
  return total, total - emb


__all__ = ["GPT", "TransformerLM", "build_model", "count_params", "bias_init"]
