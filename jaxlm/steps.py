"""The pure steps: `train_step(state, batch) -> (state, metrics)` and the eval steps.

Each is jitted once (see `jaxlm.run.Run`) with explicit shardings and donation;
randomness is `fold_in(seed, step)`, so a resumed run replays the same randomness.
"""

from __future__ import annotations

import functools
from typing import Any

import flax.linen as nn
import flax.struct
import jax
import jax.numpy as jnp
import optax
from jax.flatten_util import ravel_pytree

from jaxlm import objectives


class TrainState(flax.struct.PyTreeNode):
  step: jax.Array
  params: Any
  opt_state: Any
  carry: Any = None  # Recurrent state carried across steps (lstm with model.carry_state).


def model_inputs(batch: dict, document_attention: bool) -> dict:
  """Batch of packed windows -> the causal LM's inputs and targets."""
  return objectives.CAUSAL_LM.inputs(batch, None, document_attention)


def loss_and_metrics(params, model, batch: dict, rng, document_attention: bool,
                     deterministic: bool, objective: objectives.Objective = objectives.CAUSAL_LM,
                     carry=None, with_bytes: bool = False) -> tuple[jax.Array, dict]:
  """Summed loss and sums of one batch: the objective's (`Objective.loss`)."""
  return objective.loss(params, model, batch, rng, document_attention, deterministic, carry,
                        with_bytes)


def flat_data_parallel(grad_fn, mesh, axis: str = "data", carry_specs=None):
  """`grad_fn(params, batch, carry) -> (grads, sums)` with the batch's rows (and a carried
  recurrent state's) split over `mesh`'s `axis` by `shard_map`: each device differentiates
  its own rows and one `psum` adds the raveled (grads, sums); the new state (`sums['carry']`)
  stays with its rows (`carry_specs`: the state's PartitionSpecs, its rows on `axis`).
  The same sums as XLA's partitioning of the whole step, whose CPU runtime all-reduces each
  parameter array apart (a rendezvous per array: a quarter of a small model's step on 2 CPU
  devices, jaxlm#16). For deterministic steps only: randomness drawn inside would be drawn
  per shard. Params must be replicated (a data-only mesh)."""
  spec = jax.sharding.PartitionSpec

  def local(params, batch, carry):
    with nn.logical_axis_rules(()):  # Inside shard_map every array is this device's own.
      grads, sums = grad_fn(params, batch, carry)
    new_carry = sums.pop("carry", None)  # Recurrent state: this device's rows, not summed.
    flat, unravel = ravel_pytree((grads, sums))
    return *unravel(jax.lax.psum(flat, axis)), new_carry

  def run(params, batch, carry=None):
    grads, sums, new_carry = jax.shard_map(
        local, mesh=mesh, in_specs=(spec(), spec(axis), carry_specs),
        out_specs=(spec(), spec(), carry_specs), check_vma=False)(params, batch, carry)
    return grads, sums if new_carry is None else {**sums, "carry": new_carry}

  return run


def train_step(state: TrainState, batch: dict, *, model, tx, schedule, seed: int,
               accum_steps: int, document_attention: bool, batch_sharding,
               objective: objectives.Objective = objectives.CAUSAL_LM,
               flat_allreduce_mesh=None, carry_specs=None) -> tuple:
  """One optimizer step; `accum_steps` microbatches are scanned inside the jit.

  With `flat_allreduce_mesh` (set by `Run` for deterministic data-parallel CPU steps; see
  `flat_data_parallel`) the gradient is summed by one all-reduce (`carry_specs`: how a
  carried recurrent state is sharded).
  """
  rng = jax.random.fold_in(jax.random.key(seed), state.step)
  grad_fn = jax.grad(functools.partial(loss_and_metrics, objective=objective), has_aux=True)

  if flat_allreduce_mesh is not None and accum_steps == 1:
    grads, sums = flat_data_parallel(
        lambda p, b, c: grad_fn(p, model, b, rng, document_attention, False, carry=c),
        flat_allreduce_mesh, carry_specs=carry_specs)(state.params, batch, state.carry)
  elif accum_steps == 1:
    grads, sums = grad_fn(state.params, model, batch, rng, document_attention, False,
                          carry=state.carry)
  else:
    def micro(carry, xs):
      mb, i = xs
      mb = jax.tree.map(lambda x: jax.lax.with_sharding_constraint(x, batch_sharding), mb)
      g, s = grad_fn(state.params, model, mb, jax.random.fold_in(rng, i), document_attention,
                     False, carry=state.carry)
      return jax.tree.map(jnp.add, carry, (g, s)), None

    # Row j of microbatch i is row j*accum+i: every device contributes to every microbatch.
    split = jax.tree.map(
        lambda x: x.reshape(x.shape[0] // accum_steps, accum_steps, *x.shape[1:]).swapaxes(0, 1),
        batch)
    zeros = jax.tree.map(jnp.zeros_like, jax.eval_shape(
        lambda: grad_fn(state.params, model, jax.tree.map(lambda x: x[0], split), rng,
                        document_attention, False, carry=state.carry)))
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
              objective: objectives.Objective = objectives.CAUSAL_LM) -> dict:
  """Summed loss, weight, correct and target bytes of one eval batch (padding weighs 0);
  classification adds its predictions (`Objective.eval_sums`).

  With `carry` (an LSTM state carried across windows) the sums hold the new state
  under 'carry'; without, every window starts from a zero state.
  """
  return objective.eval_sums(params, model, batch, document_attention, carry)
