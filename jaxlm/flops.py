"""Model FLOPs per trained token, per family: real matmuls only (for MFU).

A matmul with a [n, m] weight costs 2nm FLOPs per token forward and twice that backward (the
gradients w.r.t. its input and its weight), so training costs 6 FLOPs per matmul weight:

  flops/token = 6 * M + 6 * A

* M, the matmul weights a token passes through: every kernel (q/k/v/o and MLP of a Transformer
  block, an LSTM layer's input [D, 4H] and fused recurrent [H, 4H] kernels, the untied
  `lm_head` or the LSTM's `proj`) plus, with tied embeddings, the output projection
  `padded_vocab x emb_dim` (not for classification: its head is a [D, C] kernel and the
  backbone computes no vocabulary logits). Not counted: embedding lookups (a gather, not a
  matmul: the old LSTM count added one, 1.75x too high at 2x200 with a 10k vocabulary),
  position tables, biases and norm scales (`optim.decay_mask` tells kernels from the rest).
* A, attention (gpt, bert): 2 * num_layers * seq_len * num_heads * head_dim (QK^T and AV; the
  full L x L scores are computed, causal or not), as in nanoGPT's `estimate_mfu`. LSTM: 0.

So gpt/bert: 6 * (12 L D^2 + V D) + 12 L T D (with MLP width 4D, tied); lstm: 6 * (sum over
layers of 4H (D_in + H) + H V). Tested against XLA's `compiled.cost_analysis()` of the train
step within 5% (tests/test_flops.py); XLA also counts the softmax, norms, gate nonlinearities
and the optimizer, which this formula leaves out.
"""

from __future__ import annotations

import jax

from jaxlm import optim

FORMULA = ("6 * (matmul weights: kernels + tied output projection; no embedding lookups) + "
           "12 * num_layers * seq_len * num_heads * head_dim (gpt, bert; 0 for lstm)")


def matmul_weights(params, model_cfg, padded_vocab: int, vocab_logits: bool = True) -> int:
  """Weights used in matmuls per token: kernels, plus the tied output projection when the
  model computes vocabulary logits (`vocab_logits`; a classifier does not)."""
  mask = optim.decay_mask(params)
  kernels = sum(x.size for x, m in zip(jax.tree.leaves(params), jax.tree.leaves(mask),
                                       strict=True) if m)
  tied = padded_vocab * model_cfg.emb_dim if model_cfg.tie_embeddings and vocab_logits else 0
  return int(kernels + tied)


def attention_flops_per_token(model_cfg, seq_len: int) -> float:
  """Forward FLOPs of QK^T and AV per token (0 for the LSTM)."""
  m = model_cfg
  if m.family not in ("gpt", "bert"):
    return 0.0
  width = (m.head_dim or m.emb_dim // m.num_heads) * m.num_heads
  return 2.0 * m.num_layers * seq_len * width


def flops_per_token(params, config, vocab_size: int) -> float:
  """Training FLOPs per token (forward + backward) of `params` under `config` (see FORMULA)."""
  m = config.model
  multiple = max(m.vocab_multiple, 1)
  padded_vocab = -(-vocab_size // multiple) * multiple  # As the models pad their tables.
  vocab_logits = config.finetune.task != "classify"
  return 6.0 * matmul_weights(params, m, padded_vocab, vocab_logits) + \
      6.0 * attention_flops_per_token(m, config.data.seq_len)
