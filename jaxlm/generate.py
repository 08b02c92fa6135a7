"""Text generation from a trained model.

`sample_text` decodes without a KV cache: each new token runs the model over a
fixed-size window (one compiled shape), which is simple and always correct.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from jaxlm.data.tokenizers import Tokenizer


def sample_logits(logits_BV: jax.Array, rng, temperature: float = 1.0, top_k: int = 0,
                  top_p: float = 1.0) -> jax.Array:
  """Samples ids [B] from logits; temperature 0 is greedy."""
  if temperature <= 0:
    return jnp.argmax(logits_BV, axis=-1)
  logits_BV = logits_BV.astype(jnp.float32) / temperature
  if top_k:
    kth = jax.lax.top_k(logits_BV, top_k)[0][:, -1:]
    logits_BV = jnp.where(logits_BV < kth, -jnp.inf, logits_BV)
  if top_p < 1.0:
    sorted_BV = jnp.sort(logits_BV, axis=-1)[:, ::-1]
    cum_BV = jnp.cumsum(jax.nn.softmax(sorted_BV, axis=-1), axis=-1)
    # Keep the smallest prefix whose mass reaches top_p (always at least the top token).
    cutoff_idx = jnp.sum(cum_BV < top_p, axis=-1, keepdims=True)
    cutoff = jnp.take_along_axis(sorted_BV, cutoff_idx, axis=-1)
    logits_BV = jnp.where(logits_BV < cutoff, -jnp.inf, logits_BV)
  return jax.random.categorical(rng, logits_BV, axis=-1)


def sample_text(model: nn.Module, params, tokenizer: Tokenizer, prompt: str, num_tokens: int,
                temperature: float = 1.0, top_k: int = 0, seed: int = 0, mesh=None,
                rules=()) -> str:
  """Continues `prompt` by `num_tokens` tokens; stops early at EOS."""
  window = model.cfg.max_len
  ids = list(tokenizer.encode(prompt)) or [tokenizer.eos_id]

  @jax.jit
  def next_token(params, buf_1W, length, rng):
    logits = model.apply({"params": params}, buf_1W)
    last = jax.lax.dynamic_index_in_dim(logits[0], length - 1, keepdims=False)
    return sample_logits(last[None], rng, temperature, top_k)[0]

  rng = jax.random.key(seed)
  out: list[int] = []
  ctx = mesh if mesh is not None else _Null()
  with (jax.set_mesh(ctx) if mesh is not None else ctx), nn.logical_axis_rules(rules):
    for i in range(num_tokens):
      context = (ids + out)[-window:]
      buf = np.zeros((1, window), np.int32)
      buf[0, :len(context)] = context
      tok = int(next_token(params, jnp.asarray(buf), len(context), jax.random.fold_in(rng, i)))
      if tok == tokenizer.eos_id:
        break
      out.append(tok)
  return tokenizer.decode(out)


class _Null:
  def __enter__(self):
    return self

  def __exit__(self, *a):
    return False
