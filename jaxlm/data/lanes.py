"""Contiguous data lanes for recurrent LMs trained with truncated backprop through time.

`pipeline.train_dataset` puts consecutive windows of one stream in consecutive rows
of a batch. A recurrent model that carries its state from step to step needs the
opposite: row j of batch t+1 must continue row j of batch t. Here each of the B rows
is a lane: lane j reads documents j, j+B, j+2B, ... of the (seeded, per-epoch
reshuffled) document order and packs them into windows of `seq_len + 1` tokens that
overlap by one token, so the inputs `w[:-1]` of consecutive windows are contiguous.

The iterator state is the list of the lanes' packer states (small, JSON), saved with
every checkpoint like the ordinary pipeline's, so resume is exact.

With `data.doc_unit='file'` the split is the classic word-level LM protocol instead
(PTB/WikiText, Zaremba et al. 2014): one token stream per split, `[<eos>]` followed by every
file's tokens (with `word_eos_per_line`, every line ends in `<eos>`, blank lines included),
cut into B equal contiguous lanes (row j = stream[j*n:(j+1)*n], n = N // B), read in windows
of `seq_len` targets; an epoch is (n - 1) // seq_len windows and the next epoch starts the
lanes again. The leading `<eos>` is the context of the first word, so on evaluation
(`stream_eval_batches`) every token of the split is a target exactly once (PTB valid: 73,760).
State: the window counter.
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
               process_count: int = 1, source: sources.DataSource | None = None):
    self._d, self._tok, self._seed = d, tokenizer, seed
    self._pi, self._pc = process_index, process_count
    self._source = sources.opened(d, source)

  def __iter__(self) -> LaneIterator | StreamLaneIterator:
    d = self._d
    local = pipeline.local_batch_size(d.batch_size, self._pc)
    if d.doc_unit == "file":
      stream = stream_tokens(d, self._tok, d.train_split, source=self._source)
      return StreamLaneIterator(stream, d.batch_size, self._pi * local, local, d.seq_len)
    ds = pipeline.documents(d, d.train_split, self._pi, self._pc, self._source)
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


def stream_tokens(d, tokenizer: Tokenizer, split: str, with_bytes: bool = False,
                  source: sources.DataSource | None = None
                  ) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
  """A split as one stream: `<eos>`, then each document's ids, each ending in `<eos>`.

  Word level (`word_eos_per_line`): every line of the text ends in `<eos>`, the last one too
  (the reader strips a file's trailing newlines), blank lines inside included.
  `with_bytes`: also the UTF-8 bytes of the source text each id covers
  (`Tokenizer.encode_with_bytes`; a document's closing `<eos>` covers its newline), for
  bits per byte.
  """
  eos = np.int32(tokenizer.eos_id)
  parts, counts = [np.array([eos], np.int32)], [np.zeros(1, np.int32)]
  lines = bool(getattr(tokenizer, "eos_per_line", False))  # Word level: newline = <eos>.
  for text in sources.opened(d, source).texts(split):
    ids, nbytes = tokenizer.encode_with_bytes(text)
    ids, nbytes = np.asarray(ids, np.int32), np.asarray(nbytes, np.int32)
    rest = len(text.encode("utf-8")) - int(nbytes.sum())  # Whitespace after the last token.
    if not (lines and text.endswith("\n")):  # The last line (or the document) ends too.
      ids, nbytes = np.append(ids, eos), np.append(nbytes, rest + 1)
    elif len(nbytes):
      nbytes[-1] += rest
    parts.append(ids)
    counts.append(nbytes)
  stream = np.concatenate(parts)
  if len(stream) < 2:
    raise sources.DataError(f"Split {split!r} has no tokens. Fix: check data.path/eval_path.")
  return (stream, np.concatenate(counts).astype(np.int32)) if with_bytes else stream


def _window(tokens: np.ndarray, start: int, length: int) -> dict[str, np.ndarray]:
  """Tokens [start, start+length) of each row (zero-padded), with segment ids and positions."""
  x = tokens[:, start:start + length]
  real = np.ones_like(x)
  if x.shape[1] < length:
    pad = ((0, 0), (0, length - x.shape[1]))
    x, real = np.pad(x, pad), np.pad(real, pad)
  pos = np.broadcast_to(start + np.arange(length, dtype=np.int32), x.shape)
  return {"tokens": x.astype(np.int32), "segment_ids": real.astype(np.int32),
          "positions": np.where(real > 0, pos, 0).astype(np.int32)}


class StreamLaneIterator:
  """Training windows of the one-stream protocol: this process's `local` of `lanes` rows."""

  def __init__(self, stream: np.ndarray, lanes: int, first: int, local: int, seq_len: int):
    n = len(stream) // lanes
    self.windows_per_epoch = (n - 1) // seq_len
    if self.windows_per_epoch < 1:
      raise sources.DataError(
          f"The training stream has {len(stream)} tokens: {lanes} lanes (data.batch_size) of "
          f"{n} tokens cannot hold one window of seq_len={seq_len} targets. Fix: lower "
          "data.batch_size or data.seq_len, or use more data.")
    self._rows = stream[:n * lanes].reshape(lanes, n)[first:first + local]
    self._seq_len, self._t = seq_len, 0

  def __iter__(self) -> StreamLaneIterator:
    return self

  def __next__(self) -> dict[str, np.ndarray]:
    w = self._t % self.windows_per_epoch
    self._t += 1
    return _window(self._rows, w * self._seq_len, self._seq_len + 1)

  def get_state(self) -> dict:
    return {"stream_window": self._t}

  def set_state(self, state: dict) -> None:
    if "stream_window" not in state:
      raise ValueError("The saved data state is not the one-stream lane protocol's (it was saved "
                       "with another data.doc_unit). Fix: resume with the same config, or use a "
                       "fresh --workdir.")
    self._t = int(state["stream_window"])


def stream_eval_batches(d, tokenizer: Tokenizer, split: str | None = None,
                        process_index: int = 0, process_count: int = 1,
                        max_batches: int = -1, source: sources.DataSource | None = None
                        ) -> list[dict[str, np.ndarray]]:
  """The split's stream in `data.batch_size` contiguous lanes, every token a target once.

  Lane j holds targets j*n+1 .. (j+1)*n of the stream (n = ceil((N-1)/B)) and the token
  before them; windows overlap by one token; the tail is padded (pad targets weigh 0).
  """
  stream, counts = stream_tokens(d, tokenizer, split or d.eval_split, with_bytes=True,
                                 source=source)
  lanes, targets = d.batch_size, len(stream) - 1
  n = -(-targets // lanes)
  rows = np.zeros((lanes, n + 1), np.int32)  # Pad id 0 past a lane's end.
  byte_rows = np.zeros((lanes, n + 1), np.int32)
  for j in range(lanes):
    end = min((j + 1) * n, targets) + 1
    if end - j * n > 1:
      rows[j, :end - j * n] = stream[j * n:end]
      byte_rows[j, :end - j * n] = counts[j * n:end]
  local = pipeline.local_batch_size(lanes, process_count)
  rows = rows[process_index * local:(process_index + 1) * local]
  byte_rows = byte_rows[process_index * local:(process_index + 1) * local]
  t = d.seq_len
  num = -(-n // t)
  if max_batches > 0:
    num = min(num, max_batches)
  out = []
  for w in range(num):
    b = _window(rows, w * t, t + 1)
    b["segment_ids"] = (b["tokens"] != 0).astype(np.int32)
    b["bytes"] = _window(byte_rows, w * t, t + 1)["tokens"]
    out.append(b)
  return out


def lane_dataset(d, tokenizer: Tokenizer, seed: int, process_index: int = 0,
                 process_count: int = 1, source: sources.DataSource | None = None
                 ) -> LaneDataset:
  """Same signature as `pipeline.train_dataset`; rows are contiguous across batches."""
  return LaneDataset(d, tokenizer, seed, process_index, process_count, source)
