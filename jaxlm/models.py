"""Model families built from the public layers; `build_model` picks one from config."""

from __future__ import annotations

import dataclasses

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxlm.layers.embeddings import Embed, LearnedPositions, sinusoidal
from jaxlm.layers.lstm import LSTM, weight_init
from jaxlm.layers.mlp import bias_init, dense_init
from jaxlm.layers.norms import make_norm
from jaxlm.layers.transformer import ACT, TransformerConfig, TransformerStack, dataclass_from_config


def mask_padded_vocab(logits_BLV: jax.Array, vocab_size: int) -> jax.Array:
  """Logits of the padding columns (ids >= vocab_size) pushed to -1e9: never predicted.

  Added as a constant (not `jnp.where`), so the backward pass is the identity: no select
  over the [B, L, V] gradient (jaxlm#16). Under a softmax (the cross-entropy, sampling) the
  padded columns' probability and gradient are exactly 0, as with `jnp.where`; a loss on the
  raw padded logits would see -1e9 plus the projection (slice `[..., :vocab_size]` first).
  """
  padded = logits_BLV.shape[-1]
  if padded == vocab_size:
    return logits_BLV
  return logits_BLV + jnp.where(jnp.arange(padded) < vocab_size, 0.0, -1e9).astype(
      logits_BLV.dtype)


class TransformerLM(nn.Module):
  """Token + position embeddings, a Transformer stack, a final norm, vocab logits.

  With `causal=True` this is the decoder-only LM (GPT); with `causal=False` the
  same network is a bidirectional encoder (the BERT family uses it that way).
  """

  cfg: TransformerConfig

  @nn.compact
  def __call__(self, ids_BL: jax.Array, positions_BL: jax.Array | None = None,
               segment_ids_BL: jax.Array | None = None, deterministic: bool = True,
               return_hidden: bool = False, type_ids_BL: jax.Array | None = None) -> jax.Array:
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
    if c.type_vocab_size:
      if type_ids_BL is None:
        type_ids_BL = jnp.zeros_like(ids_BL)
      x_BLD = x_BLD + Embed(c.type_vocab_size, c.emb_dim, dt, pdt, name="type_embed")(type_ids_BL)
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
    return mask_padded_vocab(logits_BLV, c.vocab_size)


GPT = TransformerLM


@dataclasses.dataclass(frozen=True)
class LSTMConfig:
  vocab_size: int
  vocab_multiple: int = 128
  num_layers: int = 2
  emb_dim: int = 128
  lstm_hidden_dim: int = 0  # 0 = emb_dim.
  dropout: float = 0.0
  tie_embeddings: bool = True
  dtype: str = "float32"
  param_dtype: str = "float32"
  max_len: int = 512  # Context used when sampling (an LSTM itself has no length limit).
  init_scale: float = 0.0  # > 0: every weight uniform in [-init_scale, init_scale].
  lstm_unroll: int = 1  # Time steps unrolled per scan iteration (speed only).

  @property
  def padded_vocab(self) -> int:
    m = max(self.vocab_multiple, 1)
    return -(-self.vocab_size // m) * m

  @property
  def hidden(self) -> int:
    return self.lstm_hidden_dim or self.emb_dim

  @classmethod
  def from_config(cls, model_cfg, vocab_size: int, seq_len: int, **overrides):
    return dataclass_from_config(cls, model_cfg, vocab_size, seq_len, **overrides)


class LSTMLM(nn.Module):
  """Embedding -> `num_layers` LSTM layers (dropout between) -> vocab logits.

  Called like the Transformer LMs. With `carry` (from `initial_carry`) it returns
  `(logits, new_carry)`, so consecutive windows of a stream continue one state
  (truncated BPTT). Given `positions_BL`, the state is reset where a position is 0
  (a new packed document), the recurrent analogue of document attention.
  """

  cfg: LSTMConfig

  @nn.compact
  def __call__(self, ids_BL: jax.Array, positions_BL: jax.Array | None = None,
               segment_ids_BL: jax.Array | None = None, deterministic: bool = True,
               carry: dict | None = None, return_hidden: bool = False):
    del segment_ids_BL  # Document starts come from positions.
    c = self.cfg
    dt, pdt = jnp.dtype(c.dtype), jnp.dtype(c.param_dtype)
    embed = Embed(c.padded_vocab, c.emb_dim, dt, pdt, name="embed", init_scale=c.init_scale)
    drop = nn.Dropout(c.dropout)
    x_BLD = drop(embed(ids_BL), deterministic=deterministic)
    x_BLD = nn.with_logical_constraint(x_BLD, ACT)
    reset_BL = positions_BL == 0 if positions_BL is not None else None
    new_c, new_h = [], []
    for i in range(c.num_layers):
      layer_carry = None if carry is None else (carry["c"][i], carry["h"][i])
      x_BLD, (c_BH, h_BH) = LSTM(c.hidden, dt, pdt, c.init_scale, c.lstm_unroll,
                                 name=f"lstm_{i}")(x_BLD, layer_carry, reset_BL)
      x_BLD = drop(x_BLD, deterministic=deterministic)
      new_c.append(c_BH)
      new_h.append(h_BH)
    if return_hidden:  # Top LSTM outputs [B, L, H], for classification heads.
      return x_BLD
    if c.tie_embeddings:
      if c.hidden != c.emb_dim:
        x_BLD = nn.Dense(c.emb_dim, dtype=dt, param_dtype=pdt, name="proj",
                         kernel_init=dense_init(("mlp", "embed")),
                         bias_init=bias_init(("embed",)))(x_BLD)
      logits_BLV = embed.attend(x_BLD)
    else:
      logits_BLV = nn.Dense(c.padded_vocab, dtype=dt, param_dtype=pdt, use_bias=False,
                            kernel_init=weight_init(("embed", "vocab"), c.init_scale),
                            name="lm_head")(x_BLD)
    # An output bias (as in the classic LSTM LMs): the bounded LSTM output alone makes the
    # unigram distribution slow to learn.
    bias_V = self.param("output_bias", bias_init(("vocab",)), (c.padded_vocab,), pdt)
    logits_BLV = logits_BLV + jnp.asarray(bias_V, dt)
    logits_BLV = nn.with_logical_constraint(logits_BLV, ("act_batch", "act_seq", "act_vocab"))
    logits_BLV = logits_BLV.astype(jnp.float32)
    logits_BLV = mask_padded_vocab(logits_BLV, c.vocab_size)
    if carry is None:
      return logits_BLV
    return logits_BLV, {"c": jnp.stack(new_c), "h": jnp.stack(new_h)}


CARRY_AXES = ("layers", "act_batch", "act_embed")


def initial_carry(model: LSTMLM, batch: int, boxed: bool = False) -> dict:
  """Zero LSTM state {c, h}: [num_layers, batch, hidden]; `boxed` adds logical axis names."""
  c = model.cfg
  shape = (c.num_layers, batch, c.hidden)
  out = {"c": jnp.zeros(shape, jnp.float32), "h": jnp.zeros(shape, jnp.dtype(c.dtype))}
  if boxed:
    out = {k: nn.LogicallyPartitioned(v, CARRY_AXES) for k, v in out.items()}
  return out


FAMILIES = ("gpt", "bert", "lstm")  # ngram is count-based: see jaxlm/ngram_run.py.


def build_model(model_cfg, vocab_size: int, seq_len: int, **overrides) -> nn.Module:
  """The model named by `config.model.family`, sized for the tokenizer and data."""
  family = model_cfg.family
  if family == "gpt":
    return TransformerLM(TransformerConfig.from_config(model_cfg, vocab_size, seq_len,
                                                       **overrides))
  if family == "bert":  # The same network without the causal mask.
    return TransformerLM(TransformerConfig.from_config(model_cfg, vocab_size, seq_len,
                                                       **{"causal": False, **overrides}))
  if family == "lstm":
    return LSTMLM(LSTMConfig.from_config(model_cfg, vocab_size, seq_len, **overrides))
  if family == "ngram":
    raise ValueError("config.model.family='ngram' is count-based and has no Flax model: run it "
                     "through jaxlm.main (jaxlm.ngram_run), not build_model.")
  raise ValueError(f"config.model.family={family!r} is not one of {FAMILIES}.")


def count_params(params, embedding_names=("embed", "pos", "type_embed")) -> tuple[int, int]:
  """(total, non-embedding) parameter counts; embeddings are top-level modules."""
  total = sum(x.size for x in jax.tree.leaves(params))
  emb = sum(x.size for k, v in params.items() if k in embedding_names
            for x in jax.tree.leaves(v))
  return total, total - emb


__all__ = ["GPT", "LSTMLM", "LSTMConfig", "TransformerLM", "build_model", "count_params",
           "bias_init", "initial_carry"]
