"""Evaluation of a recurrent LM that carries its state across windows (model.carry_state).

The eval split is packed into consecutive windows exactly as for every model
(`pipeline.eval_batches`: each token a target once, padding weighs 0). Here the
windows are re-dealt into B lanes of consecutive windows (lane j gets windows
j*m .. j*m+m-1), so row j of batch t+1 continues row j of batch t, and the LSTM
state runs on from window to window, from a zero state at each lane's start: the
standard way recurrent LMs are evaluated on word-level corpora. Same sums, same
loss/ppl/bpb definitions as `train.evaluate`.
"""

from __future__ import annotations

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from jaxlm import models, objectives, sharding, train
from jaxlm.data import lanes, pipeline


def deal_into_lanes(batches: list[dict], lanes: int) -> list[dict]:
  """Batches of consecutive windows -> batches whose rows are contiguous lanes."""
  windows = [{k: v[i] for k, v in b.items()} for b in batches
             for i in range(len(next(iter(b.values()))))]
  m = -(-len(windows) // lanes)
  empty = {k: np.zeros_like(v) for k, v in windows[0].items()}
  windows += [empty] * (m * lanes - len(windows))
  return [{k: np.stack([windows[j * m + t][k] for j in range(lanes)]) for k in windows[0]}
          for t in range(m)]


def _eval_step(params, carry, batch, *, model, token_bytes, document_attention):
  from jaxlm import train  # Late import: train imports this module's callers.
  _, sums = train.loss_and_metrics(params, model, batch, jax.random.key(0), document_attention,
                                   True, carry=carry)
  carry = sums.pop("carry")
  b = objectives.split_window(batch)
  sums["byte_sum"] = jnp.sum(jnp.take(token_bytes, b["targets"]) * b["weights"])
  return sums, carry


def evaluate(run, params, split: str | None = None, max_batches: int = -1,
             cache: dict | None = None) -> dict[str, float]:
  """Like `train.evaluate`, with the LSTM state carried along each lane."""
  d = run.config.data
  key = ("lanes", split, max_batches)
  if cache is not None and key in cache:
    batches = cache[key]
  else:
    if d.doc_unit == "file":  # One stream per split, cut into B lanes (jaxlm.data.lanes).
      batches = lanes.stream_eval_batches(d, run.tokenizer, split, jax.process_index(),
                                          jax.process_count(), max_batches)
    else:
      batches = pipeline.eval_batches(d, run.tokenizer, split, jax.process_index(),
                                      jax.process_count(), max_batches)
      batches = deal_into_lanes(batches, d.batch_size // jax.process_count())
    if cache is not None:
      cache[key] = batches
  if "lanes_step" not in (cache or {}):
    step = jax.jit(functools.partial(
        _eval_step, model=run.model, token_bytes=jnp.asarray(run.tokenizer.token_bytes()),
        document_attention=run.document_attention),
        in_shardings=(run.state_shardings.params, run.state_shardings.carry, run.batch_sharding),
        out_shardings=(sharding.replicated(run.mesh), run.state_shardings.carry))
    if cache is not None:
      cache["lanes_step"] = step
  else:
    step = cache["lanes_step"]
  totals: dict[str, float] = {}
  with jax.set_mesh(run.mesh), nn.logical_axis_rules(run.rules):
    carry = jax.device_put(models.initial_carry(run.model, d.batch_size),
                           run.state_shardings.carry)
    for batch in batches:
      sums, carry = step(params, carry, run.to_global(batch))
      for k, v in jax.device_get(sums).items():
        totals[k] = totals.get(k, 0.0) + float(v)
  return train.summarize(totals)
