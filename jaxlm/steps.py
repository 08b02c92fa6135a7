"""The pure steps: `train_step(state, batch) -> (state, metrics)` and the eval steps.

Each is jitted once (see `jaxlm.run.Run`) with explicit shardings and donation;
randomness is `fold_in(seed, step)`, so a resumed run replays the same randomness.
"""

from __future__ import annotations

import functools
from typing import Any

import flax.struct
import jax
import jax.numpy as jnp
import optax

from jaxlm import objectives
from jaxlm.data import pipeline


class TrainState(flax.struct.PyTreeNode):
  step: jax.Array
  params: Any
  opt_state: Any
  carry: Any = None  # Recurrent state carried across steps (lstm with model.carry_state).


def model_inputs(batch: dict, document_attention: bool) -> dict:
  """Batch of packed windows -> the model's keyword inputs and the LM targets."""
  return objectives.Objective().inputs(batch, None, document_attention)


def loss_and_metrics(params, model, batch: dict, rng, document_attention: bool,
                     deterministic: bool, objective: objectives.Objective | None = None,
                     carry=None, with_bytes: bool = False) -> tuple[jax.Array, dict]:
  """Summed loss and metrics of one batch.

  With `carry` (recurrent state) sums['carry'] is the new state; with `with_bytes`
  sums['byte_sum'] holds the UTF-8 bytes of the source text the weighted targets cover
  (the eval batch's 'bytes' field; for bits per byte).
  """
  objective = objective or objectives.Objective()
  b = objective.inputs(batch, rng, document_attention)
  extra = {"type_ids_BL": b["type_ids"]} if "type_ids" in b else {}
  if carry is not None:
    extra["carry"] = carry
  logits = model.apply({"params": params}, b["inputs"], b["positions"], b["segment_ids"],
                       deterministic=deterministic, rngs={"dropout": rng}, **extra)
  if carry is not None:
    logits, carry = logits
  sums = objectives.cross_entropy_sums(logits, b["targets"], b["weights"])
  if with_bytes:
    sums["byte_sum"] = jnp.sum(pipeline.target_bytes(batch, objective.name) * b["weights"])
  if carry is not None:
    sums["carry"] = jax.lax.stop_gradient(carry)
  return sums["loss_sum"], sums


def train_step(state: TrainState, batch: dict, *, model, tx, schedule, seed: int,
               accum_steps: int, document_attention: bool, batch_sharding,
               objective: objectives.Objective | None = None) -> tuple:
  """One optimizer step; `accum_steps` microbatches are scanned inside the jit."""
  rng = jax.random.fold_in(jax.random.key(seed), state.step)
  grad_fn = jax.grad(functools.partial(loss_and_metrics, objective=objective, carry=state.carry),
                     has_aux=True)

  if accum_steps == 1:
    grads, sums = grad_fn(state.params, model, batch, rng, document_attention, False)
  else:
    def micro(carry, xs):
      mb, i = xs
      mb = jax.tree.map(lambda x: jax.lax.with_sharding_constraint(x, batch_sharding), mb)
      g, s = grad_fn(state.params, model, mb, jax.random.fold_in(rng, i), document_attention,
                     False)
      return jax.tree.map(jnp.add, carry, (g, s)), None

    # Row j of microbatch i is row j*accum+i: every device contributes to every microbatch.
    split = jax.tree.map(
        lambda x: x.reshape(x.shape[0] // accum_steps, accum_steps, *x.shape[1:]).swapaxes(0, 1),
        batch)
    zeros = jax.tree.map(jnp.zeros_like, jax.eval_shape(
        lambda: grad_fn(state.params, model, jax.tree.map(lambda x: x[0], split), rng,
                        document_attention, False)))
    (grads, sums), _ = jax.lax.scan(micro, zeros, (split, jnp.arange(accum_steps)))

  carry = sums.pop("carry", None)
  denom = jnp.maximum(sums["weight_sum"], 1.0)
  grads = jax.tree.map(lambda g: g / denom, grads)
  updates, opt_state = tx.update(grads, state.opt_state, state.params)
  params = optax.apply_updates(state.params, updates)
  metrics = {
      "train_loss": sums["loss_sum"] / denom,
      "train_accuracy": sums["correct_sum"] / denom,
      "grad_norm": optax.tree.norm(grads),
      "lr": schedule(state.step),
      "tokens": sums["weight_sum"],
  }
  return state.replace(step=state.step + 1, params=params, opt_state=opt_state,
                       carry=carry), metrics


def eval_step(params, batch: dict, carry=None, *, model, document_attention: bool,
              objective: objectives.Objective | None = None) -> dict:
  """Summed loss, weight, correct and target bytes of one eval batch (padding weighs 0).

  With `carry` (an LSTM state carried across windows) the sums hold the new state
  under 'carry'; without, every window starts from a zero state.
  """
  _, sums = loss_and_metrics(params, model, batch, jax.random.key(0), document_attention, True,
                             objective, carry=carry, with_bytes=True)
  return sums
