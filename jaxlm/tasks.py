"""Labeled and paired data for fine-tuning: read, check, encode, batch.

Task datasets (SST-2: 67k sentences; Multi30k: 29k pairs) fit in memory, so
they are read once into numpy arrays of fixed length (pad-and-mask, no
packing): one example per row. Training batches come from `ArrayIterator`, a
seeded, per-epoch shuffle whose state (epoch, position) is saved with every
checkpoint. Evaluation batches cover the whole split in order; the last batch
is padded with rows of weight 0, so nothing is dropped or counted twice.
"""

from __future__ import annotations

import numpy as np

from jaxlm.data import pipeline, readers, sources
from jaxlm.data.sources import DataError
from jaxlm.data.tokenizers import CLS_ID, EOS_ID, PAD_ID, SEP_ID, Tokenizer


def read_split(d, split: str, task: str,
               source: sources.DataSource | None = None) -> tuple[list[str], list]:
  """(texts, label ids) or (sources, targets) of a split of `config.data`'s source.

  The data layer reads TSV/CSV/JSONL/parallel files or tfds datasets into
  canonical examples (`text`, `label` id, `target`) and maps labels through
  `data.labels` / `data.num_classes`; ids outside the set are refused here too
  (tfds test splits use -1 for 'unlabeled').
  """
  src = sources.opened(d, source).split(split)
  n = len(src)
  where = f"config.data split {split!r}"
  check_nonempty(n, f"Split {split!r} of {d.path or d.name}")
  texts = [sources.decode_text(src[i]["text"]) for i in range(n)]
  key = "label" if task == "classify" else "target"
  try:
    other = [src[i][key] for i in range(n)]
  except KeyError as e:
    need = ("config.data.label_key (and data.labels or data.num_classes)" if key == "label"
            else "config.data.format='parallel' with data.target_path, or data.target_key")
    raise DataError(f"{where} has no {key!r}: finetune.task={task!r} needs {need}. Fix: set "
                    "it.") from e
  if task == "classify":
    num = len(readers.ReadOptions.from_config(d).label_names)
    other = [int(x) for x in other]
    bad = [i for i, x in enumerate(other) if not 0 <= x < num]
    if bad:
      raise DataError(f"{where}: row {bad[0] + 1} has label id {other[bad[0]]}, outside the "
                      f"{num} configured classes ({len(bad)} such rows). Fix: set "
                      "config.data.labels/num_classes to cover them, or use a labeled split.")
  else:
    other = [sources.decode_text(x) for x in other]
  return texts, other


def class_names(d) -> list[str]:
  names = list(readers.ReadOptions.from_config(d).label_names)
  if len(names) < 2:
    raise DataError(f"config.data: {len(names)} class(es) configured; a classifier needs 2 or "
                    "more. Fix: set config.data.labels (names) or config.data.num_classes.")
  return names


def encode_classify(tok: Tokenizer, texts: list[str], seq_len: int,
                    first_token: bool) -> np.ndarray:
  """[N, seq_len] ids: `<cls>` + text (first-token pooling) or text + `<eos>` (last/mean)."""
  out = np.full((len(texts), seq_len), PAD_ID, np.int32)
  for i, t in enumerate(texts):
    ids = tok.encode(t)[:seq_len - 1]
    row = np.concatenate([[CLS_ID], ids]) if first_token else np.append(ids, EOS_ID)
    out[i, :len(row)] = row
  return out


def encode_pairs(tok: Tokenizer, src: list[str], tgt: list[str],
                 seq_len: int) -> dict[str, np.ndarray]:
  """Prompted LM rows `src <sep> tgt <eos>`: tokens [N, seq_len+1], target weights [N, seq_len].

  Only target-side tokens (and the closing `<eos>`) carry weight, so the loss
  is on the translation, not on the prompt. Long pairs are cut: the source to
  half the window, the target to the rest.
  """
  n, width = len(src), seq_len + 1
  tokens = np.full((n, width), PAD_ID, np.int32)
  weights = np.zeros((n, seq_len), np.float32)
  prompt_len = np.zeros(n, np.int32)
  for i, (s, t) in enumerate(zip(src, tgt, strict=True)):
    s_ids = np.append(tok.encode(s)[:width // 2 - 1], SEP_ID)
    t_ids = np.append(tok.encode(t), EOS_ID)[:width - len(s_ids)]
    row = np.concatenate([s_ids, t_ids])
    tokens[i, :len(row)] = row
    weights[i, len(s_ids) - 1:len(row) - 1] = 1.0  # Target k predicts tokens[k + 1].
    prompt_len[i] = len(s_ids)
  return {"tokens": tokens, "weights": weights, "prompt_len": prompt_len}


def check_nonempty(n: int, what: str) -> None:
  if n == 0:
    raise DataError(f"{what} has no examples. Fix: point it at a non-empty file or split.")


class ArrayIterator:
  """Endless shuffled batches of rows; state = (epoch, position) for exact resume.

  Each epoch is a fresh permutation seeded by (seed, epoch); the last partial
  batch of an epoch is skipped. Every process takes its rows of each global batch.
  """

  def __init__(self, arrays: dict[str, np.ndarray], batch_size: int, seed: int,
               process_index: int = 0, process_count: int = 1):
    self.arrays, self.batch_size, self.seed = arrays, batch_size, seed
    self.n = len(next(iter(arrays.values())))
    if self.n < batch_size:
      raise DataError(f"The training split has {self.n} examples, fewer than one batch "
                      f"({batch_size}). Fix: lower config.data.batch_size or add data.")
    self.local = pipeline.local_batch_size(batch_size, process_count)
    self.offset = process_index * self.local
    self.epoch, self.pos = 0, 0

  def _perm(self) -> np.ndarray:
    return np.random.default_rng([self.seed, self.epoch]).permutation(self.n)

  def __iter__(self):
    return self

  def __next__(self) -> dict[str, np.ndarray]:
    if self.pos + self.batch_size > self.n:
      self.epoch, self.pos = self.epoch + 1, 0
    idx = self._perm()[self.pos:self.pos + self.batch_size][self.offset:self.offset + self.local]
    self.pos += self.batch_size
    return {k: v[idx] for k, v in self.arrays.items()}

  def get_state(self) -> dict:
    return {"epoch": self.epoch, "pos": self.pos}

  def set_state(self, state: dict) -> None:
    self.epoch, self.pos = int(state["epoch"]), int(state["pos"])


def eval_batches(arrays: dict[str, np.ndarray], batch_size: int, process_index: int = 0,
                 process_count: int = 1) -> list[dict[str, np.ndarray]]:
  """The whole split in order, this process's rows, with `weight` 1 for real rows, 0 for padding."""
  n = len(next(iter(arrays.values())))
  total = -(-n // batch_size) * batch_size
  padded = {k: np.concatenate([v, np.zeros((total - n, *v.shape[1:]), v.dtype)])
            for k, v in arrays.items()}
  padded["weight"] = (np.arange(total) < n).astype(np.float32)
  local = pipeline.local_batch_size(batch_size, process_count)
  out = []
  for start in range(0, total, batch_size):
    lo = start + process_index * local
    out.append({k: v[lo:lo + local] for k, v in padded.items()})
  return out
