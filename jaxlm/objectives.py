"""Training objectives: each owns batch -> (summed loss, sums) for its model.

`Objective` (causal and masked LM, every pretraining family), `Classification` and
`Seq2Seq` (fine-tuning) share one interface, so one `steps.train_step` and one
`steps.eval_step` serve them all:

  loss(params, model, batch, rng, document_attention, deterministic, carry=None,
       with_bytes=False) -> (loss_sum, sums)
  eval_sums(...)  -> sums for evaluation (classification adds its predictions)

Sums (not means) are returned so that microbatches, devices and eval batches
combine exactly: the mean is taken once, over all real tokens (or rows).
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import optax

from jaxlm.data import pipeline
from jaxlm.data.tokenizers import BOS_ID, CLS_ID, EOS_ID, MASK_ID, NUM_SPECIAL, PAD_ID, SEP_ID

# Never selected for masked-LM prediction (as in BERT): structure, not text. <unk> stands
# for a word and stays a candidate.
UNMASKABLE = (PAD_ID, BOS_ID, EOS_ID, MASK_ID, CLS_ID, SEP_ID)


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


def first_argmax(logits_BLV: jax.Array) -> jax.Array:
  """`jnp.argmax(logits, -1)` (the first index of the maximum) as a max, then a min over the
  indices holding it: on XLA's CPU backend about 2x faster over a [B, L, V] tensor than
  argmax's pair reduction (jaxlm#16); equal to it, tests/test_metrics.py."""
  ids_V = jnp.arange(logits_BLV.shape[-1], dtype=jnp.int32)
  max_BL1 = jnp.max(logits_BLV, axis=-1, keepdims=True)
  return jnp.min(jnp.where(logits_BLV == max_BL1, ids_V, logits_BLV.shape[-1]), axis=-1)


def cross_entropy_sums(logits_BLV: jax.Array, targets_BL: jax.Array,
                       weights_BL: jax.Array) -> dict[str, jax.Array]:
  """Summed token cross-entropy (nats), weight and number of correct argmax predictions."""
  logits_BLV = logits_BLV.astype(jnp.float32)
  nll_BL = optax.softmax_cross_entropy_with_integer_labels(logits_BLV, targets_BL)
  correct_BL = (first_argmax(jax.lax.stop_gradient(logits_BLV)) == targets_BL).astype(
      jnp.float32)
  return {
      "loss_sum": jnp.sum(nll_BL * weights_BL),
      "weight_sum": jnp.sum(weights_BL),
      "correct_sum": jnp.sum(correct_BL * weights_BL),
  }


# ----------------------------------------------------------------------------- masked LM


def mask_tokens(rng, tokens_BL: jax.Array, vocab_size: int, fraction: float = 0.15,
                mask_prob: float = 0.8, random_prob: float = 0.1) -> tuple[jax.Array, jax.Array]:
  """BERT corruption: (inputs, selected). Each text token is selected with `fraction`;

  special tokens (`UNMASKABLE`: pad, <bos>, <eos>, <mask>, <cls>, <sep>) never are. A
  selected token becomes <mask> with `mask_prob`, a random non-special token with
  `random_prob`, and stays itself otherwise. The loss is taken on `selected` only.
  """
  k_sel, k_kind, k_rand = jax.random.split(rng, 3)
  shape = tokens_BL.shape
  maskable_BL = ~jnp.isin(tokens_BL, jnp.asarray(UNMASKABLE, tokens_BL.dtype))
  selected_BL = (jax.random.uniform(k_sel, shape) < fraction) & maskable_BL
  u_BL = jax.random.uniform(k_kind, shape)
  random_BL = jax.random.randint(k_rand, shape, NUM_SPECIAL, max(vocab_size, NUM_SPECIAL + 1))
  inputs_BL = jnp.where(selected_BL & (u_BL < mask_prob), MASK_ID, tokens_BL)
  to_random_BL = selected_BL & (u_BL >= mask_prob) & (u_BL < mask_prob + random_prob)
  inputs_BL = jnp.where(to_random_BL, random_BL, inputs_BL)
  return inputs_BL.astype(tokens_BL.dtype), selected_BL


def masked_lm_inputs(batch: dict, rng, vocab_size: int, fraction: float, mask_prob: float,
                     random_prob: float, document_attention: bool) -> dict:
  """Packed windows -> corrupted inputs, original targets, weights on the selected tokens.

  A window's last token is the next window's first, so only `tokens[:, :-1]` is used:
  every token of the stream is a masking candidate exactly once. Attention is always
  given segment ids so that padding (segment 0) is never attended to; without
  `document_attention` all real tokens share segment 1. Type ids alternate between
  consecutive packed documents (BERT's sentence A/B).
  """
  tokens = batch["tokens"][:, :-1]
  seg = batch["segment_ids"][:, :-1]
  # The mask depends on the step's key and the batch content: deterministic in train and eval.
  key = jax.random.fold_in(
      rng, jnp.sum(tokens * (jnp.arange(tokens.shape[1]) + 1)).astype(jnp.uint32))
  inputs, selected = mask_tokens(key, tokens, vocab_size, fraction, mask_prob, random_prob)
  return {
      "inputs": inputs,
      "targets": tokens,
      "weights": selected.astype(jnp.float32),
      "segment_ids": seg if document_attention else (tokens != PAD_ID).astype(jnp.int32),
      "positions": batch["positions"][:, :-1] if document_attention else None,
      "type_ids": jnp.where(seg > 0, (seg - 1) % 2, 0),
  }


@dataclasses.dataclass(frozen=True)
class Objective:
  """What the model is trained to predict; chosen from the family (see `for_config`).

  causal_lm: every next token (GPT, LSTM). masked_lm: the selected tokens of a
  corrupted input (BERT). Hashable, so it is a static argument of the jitted steps.
  """

  name: str = "causal_lm"
  vocab_size: int = 0
  fraction: float = 0.15
  mask_prob: float = 0.8
  random_prob: float = 0.1
  use_type_ids: bool = False

  def inputs(self, batch: dict, rng, document_attention: bool) -> dict:
    """Model inputs, targets and weights of a batch of packed windows."""
    if self.name == "masked_lm":
      b = masked_lm_inputs(batch, jax.random.fold_in(rng, 1), self.vocab_size, self.fraction,
                           self.mask_prob, self.random_prob, document_attention)
      if not self.use_type_ids:
        del b["type_ids"]
      return b
    b = split_window(batch)
    if not document_attention:
      b["segment_ids"] = None
      b["positions"] = None
    return b

  def loss(self, params, model, batch: dict, rng, document_attention: bool,
           deterministic: bool, carry=None, with_bytes: bool = False) -> tuple[jax.Array, dict]:
    """Summed loss and sums of a batch of packed windows.

    With `carry` (recurrent state) sums['carry'] is the new state; with `with_bytes`
    sums['byte_sum'] holds the UTF-8 bytes of the source text the weighted targets cover
    (the eval batch's 'bytes' field; for bits per byte).
    """
    b = self.inputs(batch, rng, document_attention)
    extra = {"type_ids_BL": b["type_ids"]} if "type_ids" in b else {}
    if carry is not None:
      extra["carry"] = carry
    logits = model.apply({"params": params}, b["inputs"], b["positions"], b["segment_ids"],
                         deterministic=deterministic, rngs={"dropout": rng}, **extra)
    if carry is not None:
      logits, carry = logits
    sums = cross_entropy_sums(logits, b["targets"], b["weights"])
    if with_bytes:
      sums["byte_sum"] = jnp.sum(pipeline.target_bytes(batch, self.name) * b["weights"])
    if carry is not None:
      sums["carry"] = jax.lax.stop_gradient(carry)
    return sums["loss_sum"], sums

  def eval_sums(self, params, model, batch: dict, document_attention: bool,
                carry=None) -> dict:
    """The sums of one eval batch (deterministic; target bytes included)."""
    return self.loss(params, model, batch, jax.random.key(0), document_attention, True, carry,
                     with_bytes=True)[1]


@dataclasses.dataclass(frozen=True)
class Classification(Objective):
  """Fine-tuning: one label per row. Batch: 'ids' [B, L], 'labels' [B], 'weight' [B] (0 for
  padding rows); the model returns class logits [B, C]."""

  name: str = "classify"

  def loss(self, params, model, batch: dict, rng, document_attention: bool = False,
           deterministic: bool = True, carry=None, with_bytes: bool = False) -> tuple:
    sums, _ = self._sums(params, model, batch, rng, deterministic)
    return sums["loss_sum"], sums

  def eval_sums(self, params, model, batch: dict, document_attention: bool = False,
                carry=None) -> dict:
    sums, preds_B = self._sums(params, model, batch, jax.random.key(0), True)
    return {**sums, "preds": preds_B, "labels": batch["labels"], "weight": batch["weight"]}

  @staticmethod
  def _sums(params, model, batch: dict, rng, deterministic: bool) -> tuple[dict, jax.Array]:
    logits_BC = model.apply({"params": params}, batch["ids"], deterministic=deterministic,
                            rngs={"dropout": rng})
    w_B = batch["weight"]
    nll_B = optax.softmax_cross_entropy_with_integer_labels(logits_BC.astype(jnp.float32),
                                                            batch["labels"])
    preds_B = jnp.argmax(logits_BC, -1)
    return {"loss_sum": jnp.sum(nll_B * w_B), "weight_sum": jnp.sum(w_B),
            "correct_sum": jnp.sum((preds_B == batch["labels"]) * w_B)}, preds_B


@dataclasses.dataclass(frozen=True)
class Seq2Seq(Objective):
  """Fine-tuning: the causal LM on `source <sep> target <eos>` rows, loss on the target only.
  Batch: 'tokens' [B, L+1], 'weights' [B, L] (1 on target tokens), 'weight' [B] (rows)."""

  name: str = "seq2seq"

  def loss(self, params, model, batch: dict, rng, document_attention: bool = False,
           deterministic: bool = True, carry=None, with_bytes: bool = False) -> tuple:
    tokens = batch["tokens"]
    weights = batch["weights"] * batch["weight"][:, None]
    logits = model.apply({"params": params}, tokens[:, :-1], deterministic=deterministic,
                         rngs={"dropout": rng})
    sums = cross_entropy_sums(logits, tokens[:, 1:], weights)
    return sums["loss_sum"], sums


CAUSAL_LM = Objective("causal_lm")

OBJECTIVES = {"gpt": "causal_lm", "lstm": "causal_lm", "bert": "masked_lm"}


def for_config(config, vocab_size: int) -> Objective:
  """The objective of `config.model.family` with its `config.mlm` settings."""
  name = OBJECTIVES.get(config.model.family, "causal_lm")
  if name == "causal_lm":
    return Objective(name)
  mlm = config.mlm
  return Objective(name, vocab_size, float(mlm.fraction), float(mlm.mask_prob),
                   float(mlm.random_prob), bool(config.model.type_vocab_size))
