"""Training objectives: each maps (model outputs, batch) to summed losses and weights.

Sums (not means) are returned so that microbatches, devices and eval batches
combine exactly: the mean is taken once, over all real tokens.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax

from jaxlm.data.tokenizers import PAD_ID


def split_window(batch: dict) -> dict:
  """Packed windows of seq_len+1 tokens -> inputs, targets and their masks."""
  tokens = batch["tokens"]
  return {
      "inputs": tokens[:, :-1],
      "targets": tokens[:, 1:],
      "segment_ids": batch["segment_ids"][:, :-1],
      "positions": batch["positions"][:, :-1],
      "weights": (tokens[:, 1:] != PAD_ID).astype(jnp.float32),
  }


def cross_entropy_sums(logits_BLV: jax.Array, targets_BL: jax.Array,
                       weights_BL: jax.Array) -> dict[str, jax.Array]:
  """Summed token cross-entropy (nats), weight and number of correct argmax predictions."""
  nll_BL = optax.softmax_cross_entropy_with_integer_labels(logits_BLV.astype(jnp.float32),
                                                           targets_BL)
  correct_BL = (jnp.argmax(logits_BLV, -1) == targets_BL).astype(jnp.float32)
  return {
      "loss_sum": jnp.sum(nll_BL * weights_BL),
      "weight_sum": jnp.sum(weights_BL),
      "correct_sum": jnp.sum(correct_BL * weights_BL),
  }
