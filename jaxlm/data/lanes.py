"""Contiguous data lanes for recurrent LMs trained with truncated backprop through time.

`pipeline.train_dataset` puts consecutive windows of one stream in consecutive rows
of a batch. A recurrent model that carries its state from step to step needs the
opposite: row j of batch t+1 must continue row j of batch t. Here each of the B rows
is a lane: lane j reads documents j, j+B, j+2B, ... of the (seeded, per-epoch
reshuffled) document order and packs them into windows of `seq_len + 1` tokens that
overlap by one token, so the inputs `w[:-1]` of consecutive windows are contiguous.

The iterator state is the list of the lanes' packer states (small, JSON), saved with
every checkpoint like the ordinary pipeline's, so resume is exact.
"""

from __future__ import annotations

import numpy as np

from jaxlm.data import pipeline, sources
from jaxlm.data.tokenizers import Tokenizer


class LaneIterator:
  """Stacks the next window of every lane into a batch; state = the lanes' states."""

  def __init__(self, lane_iters: list):
    self._lanes = lane_iters

  def __iter__(self) -> LaneIterator:
    return self

  def __next__(self) -> dict[str, np.ndarray]:
    rows = [next(it) for it in self._lanes]
    return {k: np.stack([r[k] for r in rows]) for k in rows[0]}

  def get_state(self) -> dict:
    return {"lanes": [it.get_state() for it in self._lanes]}

  def set_state(self, state: dict) -> None:
    lanes = state.get("lanes")
    if lanes is None or len(lanes) != len(self._lanes):
      raise ValueError(f"Data state has {0 if lanes is None else len(lanes)} lanes but this run "
                       f"has {len(self._lanes)} (data.batch_size per process). Fix: resume "
                       "with the same batch size, or use a fresh --workdir.")
    for it, s in zip(self._lanes, lanes, strict=True):
      it.set_state(s)


class LaneDataset:
  """Infinite batches {tokens, segment_ids, positions}: [B_local, seq_len+1], one lane a row."""

  def __init__(self, d, tokenizer: Tokenizer, seed: int, process_index: int = 0,
               process_count: int = 1):
    self._d, self._tok, self._seed = d, tokenizer, seed
    self._pi, self._pc = process_index, process_count

  def __iter__(self) -> LaneIterator:
    d = self._d
    ds = pipeline.documents(d, d.train_split, self._pi, self._pc)
    local = d.batch_size // self._pc
    if len(ds) < local:
      raise sources.DataError(
          f"model.carry_state reads {local} contiguous lanes (data.batch_size per process) from "
          f"separate documents, but the train split has only {len(ds)} document(s) per process. "
          "Fix: split the text finer (data.doc_unit=paragraph or line) or lower data.batch_size.")
    if d.shuffle:
      ds = ds.shuffle(seed=self._seed)
    ds = ds.repeat(None)
    lanes = []
    for j in range(local):
      lane = ds[j::local].map(pipeline._Tokenize(self._tok))  # noqa: SLF001
      lanes.append(iter(pipeline.PackIterDataset(lane.to_iter_dataset(), d.seq_len + 1)))
    return LaneIterator(lanes)


def lane_dataset(d, tokenizer: Tokenizer, seed: int, process_index: int = 0,
                 process_count: int = 1) -> LaneDataset:
  """Same signature as `pipeline.train_dataset`; rows are contiguous across batches."""
  return LaneDataset(d, tokenizer, seed, process_index, process_count)
