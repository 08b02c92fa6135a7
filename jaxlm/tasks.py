"""Labeled and paired data for fine-tuning: read, check, encode, batch.

Task datasets (SST-2: 67k sentences; Multi30k: 29k pairs) fit in memory, so
they are read once into numpy arrays of fixed length (pad-and-mask, no
packing): one example per row. Training batches come from `ArrayIterator`, a
seeded, per-epoch shuffle whose state (epoch, position) is saved with every
checkpoint. Evaluation batches cover the whole split in order; the last batch
is padded with rows of weight 0, so nothing is dropped or counted twice.
"""

from __future__ import annotations

import csv
import json
import os

import numpy as np

from jaxlm.data.sources import DataError
from jaxlm.data.tokenizers import CLS_ID, EOS_ID, PAD_ID, SEP_ID, Tokenizer

FORMATS = (".tsv", ".csv", ".jsonl")


def split_path(f, d, split: str) -> str:
  """The configured file (or pair prefix) of a split: train, data.eval_split or 'test'."""
  field = {d.train_split: "train_path", d.eval_split: "eval_path", "test": "test_path"}.get(split)
  if field is None:
    raise DataError(f"Split {split!r} is not one of {d.train_split!r}, {d.eval_split!r}, 'test'"
                    ". Fix: pick one of those (config.data.train_split/eval_split name them).")
  path = os.path.expanduser(f[field])
  if not path:
    raise DataError(f"config.finetune.{field} is empty but split {split!r} was asked for. "
                    "Fix: set it to the split's file.")
  return path


def read_labeled(path: str, text_key: str, label_key: str) -> tuple[list[str], list[str]]:
  """(texts, labels as strings) from a TSV/CSV with a header row, or JSONL objects."""
  ext = os.path.splitext(path)[1].lower()
  if ext not in FORMATS:
    raise DataError(f"{path}: unknown format {ext!r}. Fix: use one of {FORMATS}.")
  if not os.path.isfile(path):
    raise DataError(f"{path} does not exist. Fix: check config.finetune.*_path.")
  texts, labels = [], []
  with open(path, encoding="utf-8", newline="") as fh:
    if ext == ".jsonl":
      rows = (json.loads(line) for line in fh if line.strip())
    else:  # TSV as GLUE writes it: no quoting; CSV with standard quoting.
      quoting = csv.QUOTE_NONE if ext == ".tsv" else csv.QUOTE_MINIMAL
      reader = csv.DictReader(fh, delimiter="\t" if ext == ".tsv" else ",", quoting=quoting)
      cols = reader.fieldnames or []
      missing = [k for k in (text_key, label_key) if k not in cols]
      if missing:
        raise DataError(f"{path}: no column {missing} in header {cols}. Fix: set "
                        "config.finetune.text_key/label_key to the header's names.")
      rows = reader
    for i, row in enumerate(rows):
      if text_key not in row or label_key not in row or row[label_key] is None:
        raise DataError(f"{path}: row {i + 1} lacks {text_key!r} or {label_key!r}. Fix: "
                        "check the file or config.finetune.text_key/label_key.")
      texts.append(str(row[text_key]))
      labels.append(str(row[label_key]).strip())
  return texts, labels


def read_tfds_labeled(name: str, split: str, data_dir: str, text_key: str,
                      label_key: str) -> tuple[list[str], list[str]]:
  """(texts, labels) of a prepared tfds dataset (e.g. glue/sst2); nothing is downloaded."""
  import tensorflow_datasets as tfds

  try:
    src = tfds.data_source(name, split=split, data_dir=data_dir or None, download=False)
  except Exception as e:
    raise DataError(f"config.finetune.tfds_name={name!r} split {split!r} cannot be read ({e})."
                    " Fix: prepare it where there is network (`tfds build`) and pass "
                    "--config.data.data_dir, or use config.finetune.train_path files.") from e
  texts, labels = [], []
  for ex in src:
    t = ex[text_key]
    texts.append(t.decode("utf-8") if isinstance(t, bytes) else str(t))
    labels.append(str(int(ex[label_key])))
  return texts, labels


def label_names(f, train_labels: list[str]) -> list[str]:
  """The class names in id order: config.finetune.labels, else the sorted train labels."""
  if f.labels:
    names = [x.strip() for x in f.labels.split(",") if x.strip()]
    if len(set(names)) != len(names):
      raise DataError(f"config.finetune.labels={f.labels!r} repeats a label. Fix: list each "
                      "class once.")
  else:
    names = sorted(set(train_labels), key=lambda x: (not x.lstrip("-").isdigit(),
                                                     int(x) if x.lstrip("-").isdigit() else 0, x))
  if len(names) < 2:
    raise DataError(f"Only {len(names)} class(es) {names}: a classifier needs 2 or more. Fix: "
                    "check config.finetune.label_key/labels.")
  return names


def label_ids(labels: list[str], names: list[str], where: str) -> np.ndarray:
  """Labels -> ids; a label outside the set is an error naming the row and the set."""
  index = {n: i for i, n in enumerate(names)}
  out = np.empty(len(labels), np.int32)
  for i, lab in enumerate(labels):
    if lab not in index:
      raise DataError(f"{where}: row {i + 1} has label {lab!r}, not in the label set {names}. "
                      "Fix: correct the data or config.finetune.labels.")
    out[i] = index[lab]
  return out


def encode_classify(tok: Tokenizer, texts: list[str], seq_len: int,
                    first_token: bool) -> np.ndarray:
  """[N, seq_len] ids: `<cls>` + text (first-token pooling) or text + `<eos>` (last/mean)."""
  out = np.full((len(texts), seq_len), PAD_ID, np.int32)
  for i, t in enumerate(texts):
    ids = tok.encode(t)[:seq_len - 1]
    row = np.concatenate([[CLS_ID], ids]) if first_token else np.append(ids, EOS_ID)
    out[i, :len(row)] = row
  return out


def read_pairs(prefix: str, src_suffix: str, tgt_suffix: str) -> tuple[list[str], list[str]]:
  """Line-aligned source/target files `prefix+src_suffix`, `prefix+tgt_suffix`."""
  sides = []
  for suffix in (src_suffix, tgt_suffix):
    path = prefix + suffix
    if not os.path.isfile(path):
      raise DataError(f"{path} does not exist. Fix: check config.finetune.*_path (a prefix) and "
                      "src_suffix/tgt_suffix.")
    with open(path, encoding="utf-8") as fh:
      sides.append([line.rstrip("\n") for line in fh])
  src, tgt = sides
  if len(src) != len(tgt):
    raise DataError(f"{prefix}{src_suffix} has {len(src)} lines but {prefix}{tgt_suffix} has "
                    f"{len(tgt)}: they must be line-aligned.")
  return src, tgt


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
    self.local = batch_size // process_count
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
  local = batch_size // process_count
  out = []
  for start in range(0, total, batch_size):
    lo = start + process_index * local
    out.append({k: v[lo:lo + local] for k, v in padded.items()})
  return out
