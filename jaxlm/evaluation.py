"""The one LM evaluation of a model on a data split, used by training and eval mode alike.

`evaluate(run, params, ...)` packs the split into consecutive windows
(`pipeline.eval_batches`: each token a target once, padding weighs 0) and sums
loss, weight, correct predictions and target bytes over them; `summarize` turns
the sums into loss, perplexity, bits per byte and accuracy (`metrics.lm_metrics`).

State handling follows the run (`state_handling(run)`):
- 'stateless': Transformers, and LSTMs without model.carry_state: every window
  starts from a zero state (as they were trained).
- 'carried_lanes': an LSTM with model.carry_state: the windows are re-dealt into B
  lanes of consecutive windows (lane j gets windows j*m .. j*m+m-1), so row j of
  batch t+1 continues row j of batch t, and the state runs on from window to window
  from a zero state at each lane's start, the standard way recurrent LMs are evaluated.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import numpy as np
from jax.experimental import multihost_utils

from jaxlm import metrics as metrics_lib
from jaxlm import models
from jaxlm.data import lanes, pipeline

EVAL_PATH = "jaxlm.evaluation.evaluate"


def state_handling(run) -> str:
  """How `evaluate` treats a recurrent state for this run: 'carried_lanes' or 'stateless'."""
  return "carried_lanes" if run.carry_state else "stateless"


def deal_into_lanes(batches: list[dict], lanes: int) -> list[dict]:
  """Batches of consecutive windows -> batches whose rows are contiguous lanes."""
  windows = [{k: v[i] for k, v in b.items()} for b in batches
             for i in range(len(next(iter(b.values()))))]
  m = -(-len(windows) // lanes)
  empty = {k: np.zeros_like(v) for k, v in windows[0].items()}
  windows += [empty] * (m * lanes - len(windows))
  return [{k: np.stack([windows[j * m + t][k] for j in range(lanes)]) for k in windows[0]}
          for t in range(m)]


def _batches(run, split: str | None, max_batches: int, stride: int) -> list[dict]:
  d = run.config.data
  carried = state_handling(run) == "carried_lanes"
  if carried and stride > 1:
    raise ValueError("evaluate(stride>1) skips windows, which breaks the carried LSTM state "
                     "(model.carry_state). Fix: use stride=1 or max_batches.")
  if carried and d.doc_unit == "file":  # One stream per split, cut into B lanes.
    return lanes.stream_eval_batches(d, run.tokenizer, split, jax.process_index(),
                                     jax.process_count(), max_batches, run.data)
  batches = pipeline.eval_batches(d, run.tokenizer, split, jax.process_index(),
                                  jax.process_count(), -1 if stride > 1 else max_batches,
                                  source=run.data)
  batches = batches[::stride]
  if carried:
    return deal_into_lanes(batches, run.local_batch_size)
  if jax.process_count() > 1:  # Every process must run the same number of steps.
    n = int(np.max(multihost_utils.process_allgather(np.array(len(batches)))))
    batches += [pipeline.empty_batch(d, jax.process_count())] * (n - len(batches))
  return batches


def evaluate(run, params, eval_step_fn=None, split: str | None = None,
             max_batches: int = -1, cache: dict | None = None,
             stride: int = 1) -> dict[str, float]:
  """Loss, perplexity, bits per byte and accuracy over the split (or its first batches).

  `eval_step_fn` defaults to the run's jitted eval step (`run.jit_eval_step()`).
  `stride` > 1 evaluates every stride-th batch of the whole split instead: a cheap
  estimate without the bias of the split's first batches. `cache` keeps the
  batches between calls.
  """
  key = (split, max_batches, stride)
  if cache is not None and key in cache:
    batches = cache[key]
  else:
    batches = _batches(run, split, max_batches, stride)
    if cache is not None:
      cache[key] = batches
  step = eval_step_fn or run.jit_eval_step()
  carried = state_handling(run) == "carried_lanes"
  totals: dict[str, float] = {}
  with jax.set_mesh(run.mesh), nn.logical_axis_rules(run.rules):
    carry = None
    if carried:
      carry = jax.device_put(models.initial_carry(run.model, run.config.data.batch_size),
                             run.state_shardings.carry)
    for batch in batches:
      if carried:
        sums = step(params, run.to_global(batch), carry)
        carry = sums.pop("carry")
      else:
        sums = step(params, run.to_global(batch))
      for k, v in jax.device_get(sums).items():
        totals[k] = totals.get(k, 0.0) + float(v)
  return summarize(totals, masked_lm=run.objective.name == "masked_lm")


def summarize(totals: dict[str, float], masked_lm: bool = False) -> dict[str, float]:
  """Summed eval loss/weight/correct/bytes -> loss, perplexity, bits per byte, accuracy."""
  out = metrics_lib.lm_metrics(totals.get("loss_sum", 0.0), totals.get("weight_sum", 0.0),
                               totals.get("byte_sum", 0.0), totals.get("correct_sum", 0.0))
  # Masked LM: loss/ppl/bpb/accuracy are over the selected (masked) tokens only.
  return {"mlm_accuracy": out["accuracy"], **out} if masked_lm else out
