"""Training data as a fixed number of shards, spread over however many processes.

The global batch is the concatenation of `S` shard streams (`config.data.shards`,
0 = one per process), each `batch_size / S` rows of its own documents
(`documents[s::S]`). A process reads only its own `S / P` shards. Because the
layout depends on `S`, not on the process count, a one-process run with
`shards=2` sees exactly the batches of a two-process run, and a checkpoint (which
stores every shard's position) resumes on any process count that divides `S`.
"""

from __future__ import annotations

import numpy as np

from jaxlm.config import ConfigError
from jaxlm.data import pipeline, sources
from jaxlm.data.tokenizers import Tokenizer


def num_shards(d, process_count: int) -> int:
  s = int(d.shards) or process_count
  if s % process_count:
    raise ConfigError(f"config.data.shards={s} is not divisible by {process_count} processes. "
                      f"Fix: use a multiple of {process_count} (or 0 = one per process).")
  if d.batch_size % s:
    raise ConfigError(f"config.data.batch_size={d.batch_size} is not divisible by "
                      f"config.data.shards={s}. Fix: use a multiple of {s}.")
  return s


class ShardedIterator:
  """This process's shards as one iterator of local batches (rows in shard order).

  State: {"num_shards": S, "shards": {"<s>": grain state of shard s}} for this
  process's shards; `set_state` accepts the merged state of all processes.
  """

  def __init__(self, d, tokenizer: Tokenizer, seed: int, process_index: int = 0,
               process_count: int = 1, source: sources.DataSource | None = None):
    self.num_shards = num_shards(d, process_count)
    per = self.num_shards // process_count
    self.shard_ids = list(range(process_index * per, (process_index + 1) * per))
    source = sources.opened(d, source)  # Opened once for all shards.
    self._its = [iter(pipeline.train_dataset(d, tokenizer, seed, s, self.num_shards,
                                             source=source)) for s in self.shard_ids]

  def __iter__(self):
    return self

  def __next__(self) -> dict[str, np.ndarray]:
    parts = [next(it) for it in self._its]
    if len(parts) == 1:
      return parts[0]
    return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}

  def get_state(self) -> dict:
    return {"num_shards": self.num_shards,
            "shards": {str(s): it.get_state() for s, it in zip(self.shard_ids, self._its,
                                                               strict=True)}}

  def set_state(self, state: dict) -> None:
    if "shards" not in state:  # A checkpoint from before shards: one stream.
      state = {"num_shards": 1, "shards": {"0": state}}
    if int(state["num_shards"]) != self.num_shards:
      raise ConfigError(
          f"The checkpoint's data has {state['num_shards']} shards but this run has "
          f"{self.num_shards} (config.data.shards, 0 = one per process). Fix: set "
          f"--config.data.shards={state['num_shards']} (any process count dividing it works).")
    for s, it in zip(self.shard_ids, self._its, strict=True):
      it.set_state(state["shards"][str(s)])


def merge_states(states: list[dict]) -> dict:
  """The per-process states (from `distributed.allgather_json`) as one."""
  out = {"num_shards": states[0]["num_shards"], "shards": {}}
  for s in states:
    out["shards"].update(s["shards"])
  return out
