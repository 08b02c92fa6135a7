"""DP-SGD (Abadi et al. 2016): per-example clipping and Gaussian noise, with an epsilon.

`config.optimizer.dp` (enabled, l2_clip, noise_multiplier, delta, dataset_size, accountant):

* `train_step` computes one gradient per batch row (a packed window is the privacy
  unit: "example") with `jax.vmap(jax.grad(...))`, of that row's mean token loss,
  inside the same sharded jitted step. With `grad_accum_steps` > 1 the microbatches
  are scanned and their per-example gradients stacked, so the noise is added once,
  after accumulation, never per microbatch.
* `optax.contrib.differentially_private_aggregate` (first in the optimizer chain, see
  `optim.make_optimizer`) clips each example's gradient to `l2_clip`, sums them, adds
  N(0, (noise_multiplier * l2_clip)^2) noise and divides by the batch size.
  Its PRNG key is replaced every step by `fold_in(key(seed), step)` (on a key stream of
  its own), so the noise depends only on the seed and the step: a resumed run, or the
  same run on another number of devices, adds the same noise.
* `epsilon` composes the steps with `dp-accounting` (RDP by default, or PLD): each step
  samples a fixed-size batch of B of the N training windows
  (`SampledWithoutReplacementDpEvent` around a `GaussianDpEvent`), N = `dp.dataset_size`
  or the training split's windows (its tokens // seq_len). Like most DP-SGD reports,
  this treats each step's batch as an independent sample; the loader's shuffled epochs
  are not, and rows that pack parts of one document are not independent either.
"""

from __future__ import annotations

import copy
import functools
from collections.abc import Iterable

import jax
import jax.numpy as jnp
import optax

NOISE_STREAM = 0x5EED  # fold_in(seed key, NOISE_STREAM) then step: apart from dropout keys.
ACCOUNTANTS = ("rdp", "pld")


def aggregate(dp_cfg) -> optax.GradientTransformation:
  """Per-example clip + sum + noise / batch: optax's `differentially_private_aggregate`, its
  key held as raw uint32 data (so the state checkpoints like any array; `train_step` sets it)."""
  inner = optax.contrib.differentially_private_aggregate(
      float(dp_cfg.l2_clip), float(dp_cfg.noise_multiplier), key=0)

  def init(params):
    state = inner.init(params)
    return state._replace(rng_key=jax.random.key_data(state.rng_key))

  def update(updates, state, params=None):
    typed = state._replace(rng_key=jax.random.wrap_key_data(state.rng_key))
    updates, new = inner.update(updates, typed, params)
    return updates, new._replace(rng_key=jax.random.key_data(new.rng_key))

  return optax.GradientTransformation(init, update)


def _with_noise_key(opt_state, key):
  """The optimizer state with the DP aggregator's (first in the chain) key set to `key`."""
  first = opt_state[0]
  if not isinstance(first, optax.contrib.DifferentiallyPrivateAggregateState):
    raise ValueError("optimizer.dp: the optimizer chain does not start with "
                     "differentially_private_aggregate. Fix: build it with optim.make_optimizer.")
  return (first._replace(rng_key=jax.random.key_data(key)), *opt_state[1:])


def per_example_grads(loss_fn, params, model, batch: dict, rng, document_attention: bool):
  """(grads with a leading batch axis, summed metrics) of each row's mean token loss."""

  def one(ex, i):
    ex_1 = jax.tree.map(lambda x: x[None], ex)

    def mean_loss(p):
      loss_sum, sums = loss_fn(p, model, ex_1, jax.random.fold_in(rng, i), document_attention,
                               False)
      return loss_sum / jnp.maximum(sums["weight_sum"], 1.0), sums

    return jax.grad(mean_loss, has_aux=True)(params)

  n = jax.tree.leaves(batch)[0].shape[0]
  grads, sums = jax.vmap(one)(batch, jnp.arange(n))
  return grads, jax.tree.map(lambda s: jnp.sum(s, 0), sums)


def train_step(state, batch: dict, *, loss_fn, model, tx, schedule, seed: int, accum_steps: int,
               document_attention: bool, batch_sharding) -> tuple:
  """One DP-SGD step (the DP counterpart of `train.train_step`, same inputs and metrics)."""
  rng = jax.random.fold_in(jax.random.key(seed), state.step)
  if accum_steps == 1:
    grads, sums = per_example_grads(loss_fn, state.params, model, batch, rng, document_attention)
  else:
    split = jax.tree.map(
        lambda x: x.reshape(x.shape[0] // accum_steps, accum_steps, *x.shape[1:]).swapaxes(0, 1),
        batch)

    def micro(carry, xs):
      mb, i = xs
      mb = jax.tree.map(lambda x: jax.lax.with_sharding_constraint(x, batch_sharding), mb)
      g, s = per_example_grads(loss_fn, state.params, model, mb, jax.random.fold_in(rng, i),
                               document_attention)
      return jax.tree.map(jnp.add, carry, s), g

    zeros = jax.tree.map(jnp.zeros_like, jax.eval_shape(
        lambda: per_example_grads(loss_fn, state.params, model,
                                  jax.tree.map(lambda x: x[0], split), rng,
                                  document_attention)[1]))
    sums, grads = jax.lax.scan(micro, zeros, (split, jnp.arange(accum_steps)))
    # [accum, B/accum, ...] -> [B, ...], rows in microbatch order (the noise ignores order).
    grads = jax.tree.map(lambda g: g.reshape(-1, *g.shape[2:]), grads)
  sums.pop("carry", None)
  noise_key = jax.random.fold_in(jax.random.fold_in(jax.random.key(seed), NOISE_STREAM),
                                 state.step)
  opt_state = _with_noise_key(state.opt_state, noise_key)
  updates, opt_state = tx.update(grads, opt_state, state.params)
  params = optax.apply_updates(state.params, updates)
  denom = jnp.maximum(sums["weight_sum"], 1.0)
  metrics = {
      "train_loss": sums["loss_sum"] / denom,
      "train_accuracy": sums["correct_sum"] / denom,
      "grad_norm": optax.tree.norm(updates),  # Of the update (the noised mean is not kept).
      "lr": schedule(state.step),
      "tokens": sums["weight_sum"],
  }
  return state.replace(step=state.step + 1, params=params, opt_state=opt_state), metrics


def make_train_step(loss_fn, **kw):
  return functools.partial(train_step, loss_fn=loss_fn, **kw)


# ----------------------------------------------------------------------------- accounting


def epsilon(noise_multiplier: float, batch_size: int, dataset_size: int, steps: int,
            delta: float, accountant: str = "rdp", poisson: bool = False) -> float:
  """Epsilon at `delta` after `steps` steps of the subsampled Gaussian mechanism."""
  if steps <= 0:
    return 0.0
  if noise_multiplier <= 0:
    return float("inf")
  if accountant not in ACCOUNTANTS:
    raise ValueError(f"accountant {accountant!r} is not one of {ACCOUNTANTS}.")
  if accountant == "rdp":
    # RDP composes linearly: one step's RDP curve (about a second to compute), times `steps`.
    acc = copy.copy(_one_step_rdp(noise_multiplier, batch_size, dataset_size, poisson))
    acc._rdp = acc._rdp * int(steps)  # noqa: SLF001  (what compose(event, steps) computes)
    return float(acc.get_epsilon(delta))
  from dp_accounting import pld
  event, relation = _event(noise_multiplier, batch_size, dataset_size, poisson)
  acc = pld.PLDAccountant(neighboring_relation=relation)
  acc.compose(event, int(steps))
  return float(acc.get_epsilon(delta))


def _event(noise_multiplier: float, batch_size: int, dataset_size: int, poisson: bool):
  import dp_accounting

  gauss = dp_accounting.GaussianDpEvent(noise_multiplier)
  if poisson:
    return (dp_accounting.PoissonSampledDpEvent(min(1.0, batch_size / dataset_size), gauss),
            dp_accounting.NeighboringRelation.ADD_OR_REMOVE_ONE)
  return (dp_accounting.SampledWithoutReplacementDpEvent(dataset_size, batch_size, gauss),
          dp_accounting.NeighboringRelation.REPLACE_ONE)


@functools.lru_cache(maxsize=16)
def _one_step_rdp(noise_multiplier: float, batch_size: int, dataset_size: int, poisson: bool):
  """An RDP accountant composed with one step (cached: a run asks at every logged step)."""
  from dp_accounting import rdp

  event, relation = _event(noise_multiplier, batch_size, dataset_size, poisson)
  acc = rdp.RdpAccountant(neighboring_relation=relation)
  acc.compose(event, 1)
  return acc


def dataset_windows(config, tokenizer, texts: Iterable[str] | None = None) -> int:
  """Training windows (privacy units) of the train split: its tokens (with EOS) // seq_len.

  `texts`: the train split's documents (a run passes its opened dataset's); read from
  `config.data` if None.
  """
  d = config.data
  if texts is None:
    from jaxlm.data import sources
    texts = sources.iter_texts(d, d.train_split)
  tokens = sum(len(tokenizer.encode(t)) + 1 for t in texts)
  return max(1, tokens // d.seq_len)


class Accountant:
  """Epsilon for the run's steps (cached per step count), for metrics.jsonl."""

  def __init__(self, config, tokenizer, texts: Iterable[str] | None = None):
    dp = config.optimizer.dp
    self.dp, self.batch = dp, int(config.data.batch_size)
    self.dataset_size = int(dp.dataset_size) or dataset_windows(config, tokenizer, texts)

  def metrics(self, step: int) -> dict:
    eps = epsilon(self.dp.noise_multiplier, self.batch, self.dataset_size, step, self.dp.delta,
                  self.dp.accountant, False)
    return {"dp_epsilon": eps, "dp_delta": float(self.dp.delta),
            "dp_dataset_size": self.dataset_size}
