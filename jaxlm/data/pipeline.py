"""The input pipeline: tfds data source -> grain -> packed, batched token windows.

Training: documents are sharded by process, shuffled by seed (reshuffled each
epoch), tokenized with an end-of-document token, and packed into windows of
`seq_len + 1` tokens (`inputs = w[:-1]`, `targets = w[1:]`; consecutive windows
share one token, so no token is skipped as a target) with per-token
segment ids and in-segment positions, so attention may be kept inside a
document. The iterator's state is small (grain's index plus where the packer
stands in the current document) and is saved in every checkpoint, so a resumed
run sees exactly the batches that would have come next.

Evaluation: the whole split, in order, packed the same way; the last window and
the last batch are padded and carry zero weight, so nothing is dropped or
counted twice.
"""

from __future__ import annotations

import collections
import copy
import queue
import threading
from collections.abc import Iterator

import grain
import numpy as np

from jaxlm.data import sources
from jaxlm.data.tokenizers import Tokenizer


class _Tokenize(grain.transforms.Map):
  """Example -> int32 ids of its text followed by EOS.

  `with_bytes`: [n, 2] rows of (id, UTF-8 bytes of the source text it covers), from
  `Tokenizer.encode_document`; the packer turns the second column into `bytes`.
  """

  def __init__(self, tokenizer: Tokenizer, with_bytes: bool = False):
    self._tok, self._with_bytes = tokenizer, with_bytes

  def map(self, example) -> np.ndarray:
    text = sources.decode_text(example["text"])
    if self._with_bytes:
      return np.stack(self._tok.encode_document(text), axis=1).astype(np.int32)
    ids = self._tok.encode(text)
    return np.append(ids, np.int32(self._tok.eos_id)).astype(np.int32)


class _PackIterator(grain.DatasetIterator):
  """Concatenates documents and cuts windows of `length` tokens.

  State: the parent's state from just before the oldest document still in the
  buffer, and how many of that document's tokens were already emitted. Restoring
  re-reads those documents (tokenization is deterministic), so the state stays
  tiny however long the documents are.
  """

  def __init__(self, parent: grain.DatasetIterator, length: int, pad_last: bool):
    super().__init__(parent)
    self._length, self._pad_last = length, pad_last
    self._docs: collections.deque = collections.deque()  # (state_before, ids)
    self._offset = 0  # Tokens of docs[0] already emitted.
    self._exhausted = False

  def _fill(self) -> None:
    have = sum(len(ids) for _, ids in self._docs) - self._offset
    while have < self._length and not self._exhausted:
      state = self._parent.get_state()
      try:
        ids = next(self._parent)
      except StopIteration:
        self._exhausted = True
        break
      if len(ids):
        self._docs.append((state, ids))
        have += len(ids)

  def __next__(self) -> dict[str, np.ndarray]:
    self._fill()
    available = sum(len(ids) for _, ids in self._docs) - self._offset
    if available <= 1 and self._exhausted:
      raise StopIteration  # A lone token has nothing to predict.
    tokens, segs, pos = [], [], []
    need, seg = self._length, 0
    for _, ids in self._docs:
      start = self._offset if seg == 0 else 0
      take = ids[start:start + need]
      seg += 1
      tokens.append(take)
      segs.append(np.full(len(take), seg, np.int32))
      pos.append(np.arange(len(take), dtype=np.int32))
      need -= len(take)
      if need == 0:
        break
    if need and not (self._exhausted and self._pad_last):
      raise StopIteration  # Exhausted without padding: drop the partial window.
    # Advance by length-1: a window's last token is the next window's first input, so
    # every token but the stream's first is a target exactly once.
    emitted = self._length - 1 if not need else self._length - need
    while emitted and self._docs:
      rest = len(self._docs[0][1]) - self._offset
      if emitted >= rest:
        emitted -= rest
        self._docs.popleft()
        self._offset = 0
      else:
        self._offset += emitted
        emitted = 0
    out = {
        "tokens": np.concatenate(tokens),
        "segment_ids": np.concatenate(segs),
        "positions": np.concatenate(pos),
    }
    if out["tokens"].ndim == 2:  # (id, source bytes) rows from `_Tokenize(with_bytes=True)`.
      out["tokens"], out["bytes"] = out["tokens"][:, 0], out["tokens"][:, 1]
    if need:
      out = {k: np.pad(v, (0, need)) for k, v in out.items()}
    return out

  def get_state(self) -> dict:
    parent = self._docs[0][0] if self._docs else self._parent.get_state()
    return {"parent": copy.deepcopy(parent), "offset": int(self._offset)}

  def set_state(self, state: dict) -> None:
    self._parent.set_state(state["parent"])
    self._docs.clear()
    self._offset = 0
    self._exhausted = False
    self._fill()
    self._offset = int(state["offset"])


class PackIterDataset(grain.IterDataset):
  """Packs a stream of 1-D id arrays into fixed windows (see `_PackIterator`)."""

  def __init__(self, parent: grain.IterDataset, length: int, pad_last: bool = False):
    super().__init__(parent)
    self._length, self._pad_last = length, pad_last

  def __iter__(self) -> _PackIterator:
    return _PackIterator(self._parent.__iter__(), self._length, self._pad_last)


def local_batch_size(batch_size: int, process_count: int) -> int:
  """This process's rows of a global batch: the one place it is computed (`config.validate`
  checks that `data.batch_size` divides over the processes before any work)."""
  if batch_size % process_count:
    raise ValueError(f"batch size {batch_size} is not divisible by {process_count} processes.")
  return batch_size // process_count


def documents(d, split: str, process_index: int = 0, process_count: int = 1,
              source: sources.DataSource | None = None) -> grain.MapDataset:
  """This process's share of a split's examples, as a grain MapDataset.

  `source`: the run's opened dataset (`sources.DataSource`); opened from `d` if None.
  """
  src = sources.opened(d, source).split(split)
  if len(src) == 0:
    raise sources.DataError(f"Split {split!r} of the dataset is empty. Fix: use another split "
                            "or more data.")
  ds = grain.MapDataset.source(src)
  return ds[process_index::process_count]


def train_dataset(d, tokenizer: Tokenizer, seed: int, process_index: int = 0,
                  process_count: int = 1, with_labels: bool = False,
                  source: sources.DataSource | None = None) -> grain.IterDataset:
  """Infinite stream of batches {tokens, segment_ids, positions}: [B_local, seq_len+1].

  `data.packing='pad'` gives one document per row instead (see `_PadRow`);
  `with_labels` then adds each row's `label` id, [B_local].
  """
  source = sources.opened(d, source)  # Opened once for the documents and their size.
  ds = documents(d, d.train_split, process_index, process_count, source)
  local_bs = local_batch_size(d.batch_size, process_count)
  packed_cached = _packing(d) == "pack" and _cache_tokens(d, source, d.train_split)
  if packed_cached:  # The same documents in the same order, tokenized once.
    tokenize = _Tokenize(tokenizer)
    ds = grain.MapDataset.source([tokenize.map(ds[i]) for i in range(len(ds))])
  if d.shuffle:
    ds = ds.shuffle(seed=seed)
  if _packing(d) == "pad":
    ds = ds.repeat(None).map(_PadRow(tokenizer, d.seq_len + 1, d.truncate,
                                     with_labels))
    return ds.to_iter_dataset(_read_options(d)).batch(local_bs, drop_remainder=True)
  ds = ds.repeat(None) if packed_cached else ds.repeat(None).map(_Tokenize(tokenizer))
  packed = PackIterDataset(ds.to_iter_dataset(_read_options(d)), d.seq_len + 1)
  return packed.batch(local_bs, drop_remainder=True)


def _cache_tokens(d, source: sources.DataSource | None, split: str) -> bool:
  """Whether to tokenize `split` once up front (`data.cache_tokens_mb`): its prepared size is
  known and at most that. Each step's batch then costs a list lookup per document instead of
  a record read, decode and tokenization (on a 2-core CPU that host work slows the step)."""
  if d.cache_tokens_mb <= 0:
    return False
  info = sources.opened(d, source).builder.info.splits.get(split)
  size = int(getattr(info, "num_bytes", 0) or 0)
  return 0 < size <= d.cache_tokens_mb * 2**20


def eval_batches(d, tokenizer: Tokenizer, split: str | None = None, process_index: int = 0,
                 process_count: int = 1, max_batches: int = -1,
                 with_labels: bool = False,
                 source: sources.DataSource | None = None) -> list[dict[str, np.ndarray]]:
  """The whole split in order as padded batches of this process's share.

  Besides the tokens, `bytes` [B, seq_len+1] holds how many UTF-8 bytes of the
  source text each token covers (`Tokenizer.encode_document`; 0 on padding and
  BOS), so bits per byte is per byte of the original text (`target_bytes`).
  Every process returns the same number of batches (short ones are padded
  with all-pad batches by the caller's agreement on `num_batches`), and padding
  tokens have target id 0 (pad), which the loss ignores. Padding rows have all
  segment ids 0 (and label -1 with `with_labels`).
  """
  split = split or d.eval_split
  ds = documents(d, split, process_index, process_count, source)
  if _packing(d) == "pad":
    rows_ds = ds.map(_PadRow(tokenizer, d.seq_len + 1, d.truncate, with_labels,
                             with_bytes=True))
    rows_iter = iter(rows_ds.to_iter_dataset(_read_options(d)))
  else:
    stream = ds.map(_Tokenize(tokenizer, with_bytes=True)).to_iter_dataset(_read_options(d))
    rows_iter = iter(PackIterDataset(stream, d.seq_len + 1, pad_last=True))
  local_bs = local_batch_size(d.batch_size, process_count)
  batches, rows = [], []
  for window in rows_iter:
    rows.append(window)
    if len(rows) == local_bs:
      batches.append(_stack(rows))
      rows = []
      if 0 < max_batches <= len(batches):
        return batches
  if rows:
    pad = {k: np.zeros_like(v) for k, v in rows[0].items()}
    if "label" in pad:
      pad["label"] = np.int32(-1)
    rows += [pad] * (local_bs - len(rows))
    batches.append(_stack(rows))
  return batches


PACKINGS = ("pack", "pad")


def _read_options(d) -> grain.ReadOptions:
  """Threads that read and tokenize documents ahead of the packer.

  grain's default (16 threads, 500 documents ahead) tokenizes far ahead: with
  one big document (a whole-file corpus) that is 500 copies of it in memory,
  and the threads contend for the GIL with the packer. 0 threads (read in the
  pipeline's own thread, which `Prefetcher` already runs in the background) was
  2-20x faster on 2 cores (experiments/data_bench).
  """
  return grain.ReadOptions(num_threads=int(d.read_threads),
                           prefetch_buffer_size=int(d.read_buffer))


def _packing(d) -> str:
  packing = d.packing
  if packing not in PACKINGS:
    raise sources.DataError(f"config.data.packing={packing!r} is not one of {PACKINGS}.")
  return packing


class _PadRow(grain.transforms.Map):
  """Example -> one padded row: BOS, its ids, EOS, then pad (id 0) up to `length`.

  For classification-style data: a row never mixes documents, segment ids are
  1 on tokens and 0 on padding (so the loss mask, targets != pad, excludes
  padding) and positions count from 0. A document longer than the row is cut
  (`truncate`) or is an error naming its length.
  """

  def __init__(self, tokenizer: Tokenizer, length: int, truncate: bool, with_labels: bool,
               with_bytes: bool = False):
    self._tok, self._length = tokenizer, length
    self._truncate, self._with_labels, self._with_bytes = truncate, with_labels, with_bytes

  def map(self, example) -> dict[str, np.ndarray]:
    text = sources.decode_text(example["text"])
    if self._with_bytes:  # BOS covers no bytes; see `Tokenizer.encode_document`.
      doc, nbytes = self._tok.encode_document(text)
      ids, nbytes = np.append(self._tok.bos_id, doc), np.append(0, nbytes)
    else:
      ids = np.concatenate([[self._tok.bos_id], self._tok.encode(text), [self._tok.eos_id]])
    ids = ids.astype(np.int32)
    if len(ids) > self._length:
      if not self._truncate:
        raise sources.DataError(
            f"A document of {len(ids)} tokens (with BOS/EOS) does not fit a row of "
            f"data.seq_len+1={self._length} tokens. Fix: raise data.seq_len, or set "
            "data.truncate=True to cut long documents.")
      ids = ids[:self._length]
    n = len(ids)
    seg = (np.arange(self._length) < n).astype(np.int32)
    out = {"tokens": np.pad(ids, (0, self._length - n)), "segment_ids": seg,
           "positions": np.arange(self._length, dtype=np.int32) * seg}
    if self._with_bytes:
      out["bytes"] = np.pad(nbytes[:n], (0, self._length - n)).astype(np.int32)
    if self._with_labels:
      if "label" not in example:
        raise sources.DataError("Labels were asked for but the dataset has none. Fix: set "
                                "config.data.label_key (and labels/num_classes).")
      out["label"] = np.int32(example["label"])
    return out


def empty_batch(d, process_count: int = 1) -> dict[str, np.ndarray]:
  """An all-padding batch (zero weight), for processes with fewer eval batches."""
  shape = (local_batch_size(d.batch_size, process_count), d.seq_len + 1)
  return {k: np.zeros(shape, np.int32) for k in ("tokens", "segment_ids", "positions", "bytes")}


def target_bytes(batch: dict, objective: str = "causal_lm"):
  """Source UTF-8 bytes of each target position of an eval batch, [B, seq_len].

  A causal LM predicts `tokens[:, 1:]`, a masked LM picks from `tokens[:, :-1]`.
  Works on numpy and jax arrays (it is called inside the jitted eval step).
  """
  if "bytes" not in batch:
    raise KeyError("This eval batch has no 'bytes' (source bytes per token), so bits per byte "
                   "cannot be computed. Fix: build eval batches with pipeline.eval_batches.")
  return batch["bytes"][:, :-1] if objective == "masked_lm" else batch["bytes"][:, 1:]


def _stack(rows: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
  return {k: np.stack([r[k] for r in rows]) for k in rows[0]}


class Prefetcher:
  """Runs the host pipeline on a thread, `depth` batches ahead of the step.

  Each item carries the iterator state *after* that batch, so the state saved
  with a checkpoint is exactly that of the last batch the model consumed, not
  of the ones prefetched beyond it.
  """

  def __init__(self, iterator: grain.DatasetIterator, to_device, depth: int = 2):
    self._it, self._to_device = iterator, to_device
    self._q: queue.Queue = queue.Queue(maxsize=max(1, depth))
    self._stop = threading.Event()
    self._thread = threading.Thread(target=self._run, daemon=True)
    self._thread.start()

  def _run(self) -> None:
    try:
      while not self._stop.is_set():
        batch = next(self._it)
        item = (self._to_device(batch), self._it.get_state())
        while not self._stop.is_set():
          try:
            self._q.put(item, timeout=0.1)
            break
          except queue.Full:
            continue
    except BaseException as e:  # Surface pipeline errors in the training thread.
      self._q.put(e)

  def __iter__(self) -> Iterator:
    return self

  def __next__(self):
    item = self._q.get()
    if isinstance(item, BaseException):
      raise item
    return item

  def close(self) -> None:
    self._stop.set()
    self._thread.join(timeout=5)
