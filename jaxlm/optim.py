"""Optimizer and learning-rate schedule from `config.optimizer`.

`optimizer.name`: `adamw` (default), `sgd` (plain SGD, no momentum, as the classic LSTM LM
recipes use) or `muon` (`optax.contrib.muon`'s update, with its Newton-Schulz iterations
batched in `jaxlm.muon`: the Transformer blocks' matrices by orthogonalized momentum at
`muon_learning_rate`, the rest by AdamW at `learning_rate`; `muon_dimensions`).
`optimizer.schedule='step_decay'`: the epoch-based staircase of Zaremba et al.
(2014): epochs 1..decay_start_epoch at the peak, then x decay_factor per epoch
(`optax.exponential_decay` with `staircase=True`, one transition per `steps_per_epoch`).
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import optax

from jaxlm import dp as dp_lib
from jaxlm import muon as muon_lib

NO_DECAY_NAMES = ("embedding", "pos_embedding", "bias", "scale")


def learning_rate_schedule(o, num_train_steps: int) -> optax.Schedule:
  """Linear warmup to the peak, then cosine/linear decay to end_lr_factor*peak, flat, or the
  epoch staircase `step_decay` (lr in epoch e = peak * decay_factor^max(e - decay_start_epoch, 0),
  epochs counted from 1)."""
  peak, end = o.learning_rate, o.learning_rate * o.end_lr_factor
  warmup = min(o.warmup_steps, max(num_train_steps - 1, 0))
  decay_steps = max(num_train_steps - warmup, 1)
  if o.schedule == "cosine":
    after = optax.cosine_decay_schedule(peak, decay_steps, alpha=o.end_lr_factor)
  elif o.schedule == "linear":
    after = optax.linear_schedule(peak, end, decay_steps)
  elif o.schedule == "step_decay":
    after = optax.exponential_decay(
        peak, transition_steps=o.steps_per_epoch, decay_rate=o.decay_factor,
        transition_begin=(o.decay_start_epoch - 1) * o.steps_per_epoch, staircase=True)
  else:
    after = optax.constant_schedule(peak)
  if not warmup:
    return after
  return optax.join_schedules([optax.linear_schedule(0.0, peak, warmup), after], [warmup])


def decay_mask(params) -> object:
  """True for weight matrices; False for norms, biases (even 2-D per-head ones) and embeddings."""

  def keep(path, x) -> bool:
    keys = [p.key for p in path if isinstance(p, jax.tree_util.DictKey)]  # Skips box fields.
    return x.ndim >= 2 and (not keys or keys[-1] not in NO_DECAY_NAMES)

  return jax.tree_util.tree_map_with_path(keep, params)


def muon_dimensions(params) -> object:
  """Muon's view of each parameter: the Transformer blocks' kernels as matrices (input axes ->
  output axes), None (AdamW) for embeddings, norms, biases and everything outside the blocks.

  Kernels are laid out input first: `qkv` [D, 3, H, Dh] (q, k and v orthogonalized apart:
  the 3 is a batch axis), `out` [H, Dh, D], other kernels [D_in, ...outputs].
  """
  from optax.contrib import MuonDimensionNumbers as Dims

  def dims(path, x):
    keys = _keys(path)
    if "stack" not in keys or keys[-1] != "kernel" or x.ndim < 2:
      return None
    if keys[-2] == "qkv":
      return Dims(reduction_axis=(0,), output_axis=(2, 3))
    if keys[-2] == "out":
      return Dims(reduction_axis=tuple(range(x.ndim - 1)), output_axis=(x.ndim - 1,))
    return Dims(reduction_axis=(0,), output_axis=tuple(range(1, x.ndim)))

  return jax.tree_util.tree_map_with_path(dims, params)


def make_optimizer(o, num_train_steps: int, extra: Sequence[optax.GradientTransformation] = ()
                   ) -> tuple[optax.GradientTransformation, optax.Schedule]:
  """AdamW or plain SGD with global-norm clipping, then `extra` (fine-tuning's
  `scale_by_group`); returns the transform and its LR schedule."""
  schedule = learning_rate_schedule(o, num_train_steps)
  parts = [optax.clip_by_global_norm(o.grad_clip)] if o.grad_clip > 0 else []
  if o.name == "sgd":
    if o.weight_decay:
      parts.append(optax.add_decayed_weights(o.weight_decay, mask=decay_mask))
    parts.append(optax.sgd(schedule))
  elif o.name == "muon":
    scale = o.muon_learning_rate / o.learning_rate  # The same schedule shape, another peak.
    parts.append(muon_lib.muon(
        lambda step: schedule(step) * scale, schedule, muon_dimensions, beta=o.muon_beta,
        weight_decay=o.weight_decay, adam_b1=o.b1, adam_b2=o.b2))
  else:
    parts.append(optax.adamw(schedule, b1=o.b1, b2=o.b2, eps=o.eps, weight_decay=o.weight_decay,
                             mask=decay_mask))
  if o.dp.enabled:  # DP-SGD clips and noises per-example grads, first in the chain.
    parts.insert(0, dp_lib.aggregate(o.dp))
  return optax.chain(*parts, *extra), schedule


# ----------------------------------------------------------------------------- fine-tuning groups


def _keys(path) -> list[str]:
  return [str(p.key) for p in path if isinstance(p, jax.tree_util.DictKey)]  # Skips boxes.


def param_group(keys: list[str], f, num_layers: int) -> str:
  """Optimizer group of a parameter: head, frozen, backbone or depth_<d> (layer-wise decay)."""
  if keys and keys[0] == "head":
    return "head"
  if f.freeze_backbone:
    return "frozen"
  if f.layer_lr_decay == 1:
    return "backbone"
  for k in keys:
    m = re.fullmatch(r"(?:layer|block|lstm)_(\d+)", k)
    if m:
      return f"depth_{int(m.group(1)) + 1}"
  if any(k in ("embed", "pos", "token_embed", "type_embed") for k in keys):
    return "depth_0"
  return f"depth_{num_layers + 1}"  # Final norm, LM head: above the top layer.


def lr_factor(group: str, f, num_layers: int) -> float:
  """LR multiplier of a group relative to optimizer.learning_rate."""
  if group == "frozen":
    return 0.0
  if group == "backbone":
    return 1.0
  return f.layer_lr_decay ** (num_layers + 1 - int(group.split("_")[1]))


def scale_by_group(f, num_layers: int, base_lr: float) -> optax.GradientTransformation:
  """Multiplies each parameter's update by its group's LR factor (0 freezes it).

  After AdamW (whose update already includes the weight decay), this equals
  `optax.multi_transform` over per-group AdamWs with scaled schedules, but its
  state is empty: multi_transform's MaskedNode placeholders have no logical
  axis names, so they cannot be sharded and checkpointed like the rest.
  """
  def factors(tree):
    def one(path, u):
      group = param_group(_keys(path), f, num_layers)
      head = (f.head_lr / base_lr) if f.head_lr else 1.0
      factor = head if group == "head" else lr_factor(group, f, num_layers)
      return u * jnp.asarray(factor, u.dtype)
    return jax.tree_util.tree_map_with_path(one, tree)

  return optax.GradientTransformation(lambda params: optax.EmptyState(),
                                      lambda updates, state, params=None: (factors(updates), state))

