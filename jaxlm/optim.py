"""Optimizer and learning-rate schedule from `config.optimizer`."""

from __future__ import annotations

import jax
import optax

from jaxlm import dp as dp_lib

NO_DECAY_NAMES = ("embedding", "pos_embedding", "bias", "scale")


def learning_rate_schedule(o, num_train_steps: int) -> optax.Schedule:
  """Linear warmup to the peak, then cosine/linear decay to end_lr_factor*peak (or flat)."""
  peak, end = o.learning_rate, o.learning_rate * o.end_lr_factor
  warmup = min(o.warmup_steps, max(num_train_steps - 1, 0))
  decay_steps = max(num_train_steps - warmup, 1)
  if o.schedule == "cosine":
    after = optax.cosine_decay_schedule(peak, decay_steps, alpha=o.end_lr_factor)
  elif o.schedule == "linear":
    after = optax.linear_schedule(peak, end, decay_steps)
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


def make_optimizer(o, num_train_steps: int) -> tuple[optax.GradientTransformation,
                                                      optax.Schedule]:
  """AdamW with global-norm clipping; returns the transform and its LR schedule."""
  schedule = learning_rate_schedule(o, num_train_steps)
  parts = [optax.clip_by_global_norm(o.grad_clip)] if o.grad_clip > 0 else []
  parts.append(optax.adamw(schedule, b1=o.b1, b2=o.b2, eps=o.eps, weight_decay=o.weight_decay,
                           mask=decay_mask))
  if "dp" in o and o.dp.enabled:  # bias: DP-SGD clips and noises per-example grads, first.
    parts.insert(0, dp_lib.aggregate(o.dp))
  return optax.chain(*parts), schedule
