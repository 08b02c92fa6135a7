"""Tokenizers behind one interface: byte, char, word and SentencePiece.

Every tokenizer reserves the same first ids for special tokens, so model code
can rely on `pad_id == 0` whatever the kind. A tokenizer is saved as
`tokenizer.json` (plus `vocab.txt` for word, `spm.model` for SentencePiece) in a
directory and its `identity()` (kind, vocab size, content hash) is stored in
checkpoints so a resume or fine-tune with a different tokenizer is refused.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterable, Sequence

import numpy as np
from etils import epath

from jaxlm.data.spm_tokenizer import (  # noqa: F401  (re-exported)
    _SPM_CHUNK_CHARS,
    SPM_MODEL_FILE,
    SentencePieceTokenizer,
    _load_spm,
    _spm_sentences,
    _train_spm,
)
from jaxlm.data.tokenizer_base import (  # noqa: F401  (re-exported)
    BOS_ID,
    CLS_ID,
    EOS_ID,
    MASK_ID,
    NUM_SPECIAL,
    PAD_ID,
    SEP_ID,
    SPECIAL_TOKENS,
    TOKENIZER_FILE,
    UNK_ID,
    WORD_VOCAB_FILE,
    Tokenizer,
    _cfg,
    _write_atomic,
)
from jaxlm.data.word_tokenizer import WordTokenizer, _load_word, _train_word  # noqa: F401


def utf8_char_lengths(text: str) -> np.ndarray:
  """UTF-8 byte length of each character of `text`, [len(text)] int32."""
  b = np.frombuffer(text.encode("utf-8"), np.uint8)
  starts = np.flatnonzero((b & 0xC0) != 0x80)  # Every byte but a continuation byte.
  return np.diff(starts, append=len(b)).astype(np.int32)


class ByteTokenizer(Tokenizer):
  """UTF-8 bytes: ids 7..262. Exact round trip for any string."""

  kind = "byte"

  @property
  def vocab_size(self) -> int:
    return NUM_SPECIAL + 256

  def encode(self, text: str) -> np.ndarray:
    return np.frombuffer(text.encode("utf-8"), np.uint8).astype(np.int32) + NUM_SPECIAL

  def decode(self, ids) -> str:
    ids = np.asarray(ids, np.int64)
    ids = ids[(ids >= NUM_SPECIAL) & (ids < self.vocab_size)] - NUM_SPECIAL
    return ids.astype(np.uint8).tobytes().decode("utf-8", errors="replace")

  def encode_with_bytes(self, text: str) -> tuple[np.ndarray, np.ndarray]:
    ids = self.encode(text)
    return ids, np.ones(len(ids), np.int32)

  def token_bytes(self) -> np.ndarray:
    out = np.ones(self.vocab_size, np.int32)
    out[:NUM_SPECIAL] = 0
    return out

  def id_to_piece(self, i: int) -> str:
    if i < NUM_SPECIAL:
      return SPECIAL_TOKENS[i]
    b = i - NUM_SPECIAL
    return chr(b) if 32 <= b < 127 else f"<0x{b:02X}>"

  def _state(self) -> dict:
    return {}


class CharTokenizer(Tokenizer):
  """Unicode characters seen in the training text; others map to <unk>."""

  kind = "char"

  def __init__(self, chars: Sequence[str]):
    self.chars = list(chars)
    self._index = {c: i + NUM_SPECIAL for i, c in enumerate(self.chars)}
    self._lookup = np.array(list(SPECIAL_TOKENS) + self.chars, dtype=object)

  @classmethod
  def train(cls, texts: Iterable[str]) -> CharTokenizer:
    seen: set[str] = set()
    for t in texts:
      seen.update(t)
    return cls(sorted(seen))

  @property
  def vocab_size(self) -> int:
    return NUM_SPECIAL + len(self.chars)

  def encode(self, text: str) -> np.ndarray:
    get = self._index.get
    return np.fromiter((get(c, UNK_ID) for c in text), np.int32, count=len(text))

  def decode(self, ids) -> str:
    ids = np.asarray(ids, np.int64)
    ids = ids[(ids >= NUM_SPECIAL) & (ids < self.vocab_size)]
    return "".join(self._lookup[ids])

  def encode_with_bytes(self, text: str) -> tuple[np.ndarray, np.ndarray]:
    return self.encode(text), utf8_char_lengths(text)

  def token_bytes(self) -> np.ndarray:
    return np.array([0] * NUM_SPECIAL + [len(c.encode("utf-8")) for c in self.chars], np.int32)

  def _state(self) -> dict:
    return {"chars": self.chars}


def _from_state(state: dict, directory: str) -> Tokenizer:
  kind = state.get("kind")
  if kind == "byte":
    return ByteTokenizer()
  if kind == "char":
    return CharTokenizer(state["chars"])
  extra = _EXTRA_LOADERS.get(kind)
  if extra is None:
    raise ValueError(f"Unknown tokenizer kind {kind!r} in {directory}/{TOKENIZER_FILE}.")
  return extra(state, directory)



# Kinds other than byte/char register a loader here: kind -> (state, dir) -> Tokenizer.
_EXTRA_LOADERS: dict[str, Callable[[dict, str], Tokenizer]] = {
    "word": _load_word,
    "spm": _load_spm,
}
# Kinds that must be trained on text: kind -> (texts, data_config) -> Tokenizer.
_TRAINERS: dict[str, Callable[[Iterable[str], object], Tokenizer]] = {
    "char": lambda texts, cfg: CharTokenizer.train(texts),
    "word": _train_word,
    "spm": _train_spm,
}
KINDS = ("byte", "char", "word", "spm")


def load_tokenizer(directory: str) -> Tokenizer:
  """Loads the tokenizer saved by `Tokenizer.save` in `directory`."""
  path = epath.Path(directory) / TOKENIZER_FILE
  try:
    state = json.loads(path.read_text(encoding="utf-8"))
  except FileNotFoundError as e:
    raise FileNotFoundError(f"No tokenizer at {path}.") from e
  except json.JSONDecodeError as e:
    raise ValueError(f"Corrupt tokenizer file {path}: {e}. Delete it to rebuild.") from e
  return _from_state(state, directory)


def tokenizer_from_path(path: str) -> Tokenizer:
  """`data.tokenizer_path`: a saved tokenizer directory (or its tokenizer.json), or a
  bare SentencePiece `.model` file, which must use jaxlm's special ids."""
  p = epath.Path(path if "://" in str(path) else os.path.expanduser(path))
  if p.is_dir():
    return load_tokenizer(p)
  if p.name == TOKENIZER_FILE:
    return load_tokenizer(p.parent)
  if p.is_file():
    return SentencePieceTokenizer.from_file(p)
  raise FileNotFoundError(
      f"data.tokenizer_path={path!r} is neither a tokenizer directory nor a SentencePiece"
      " model file."
  )


def get_tokenizer(
    kind: str,
    workdir: str | None,
    texts: Callable[[], Iterable[str]] | None = None,
    data_config=None,
) -> Tokenizer:
  """The run's tokenizer: loaded from `workdir` if saved there, else built and saved.

  Built means loaded from `data_config.tokenizer_path` when that is set (see
  `tokenizer_from_path`), else trained. `texts` yields the training split's
  documents; it is called only when a tokenizer has to be trained (char, word,
  SentencePiece). Problems are `DataError`s (a `ValueError`), which the CLI
  reports as one line.
  """
  from jaxlm.data.readers import DataError

  try:
    return _get_tokenizer(kind, workdir, texts, data_config)
  except DataError:
    raise
  except (ValueError, FileNotFoundError) as e:
    raise DataError(str(e)) from e


def _get_tokenizer(kind, workdir, texts, data_config) -> Tokenizer:
  path = _cfg(data_config, "tokenizer_path", None) or None
  if workdir and (epath.Path(workdir) / TOKENIZER_FILE).exists():
    tok = load_tokenizer(workdir)
    if tok.kind != kind:
      raise ValueError(
          f"{workdir}/{TOKENIZER_FILE} holds a {tok.kind!r} tokenizer but config.data.tokenizer"
          f" is {kind!r}. Use a fresh --workdir or set --config.data.tokenizer={tok.kind}."
      )
    if path and tokenizer_from_path(path).identity() != tok.identity():
      raise ValueError(
          f"{workdir}/{TOKENIZER_FILE} differs from data.tokenizer_path={path!r}: this run was"
          " started with another tokenizer. Use a fresh --workdir or unset data.tokenizer_path."
      )
    return tok
  if path:
    tok = tokenizer_from_path(path)
    if tok.kind != kind:
      raise ValueError(
          f"data.tokenizer_path={path!r} holds a {tok.kind!r} tokenizer but"
          f" config.data.tokenizer is {kind!r}. Set --config.data.tokenizer={tok.kind}."
      )
  elif kind == "byte":
    tok = ByteTokenizer()
  elif kind in _TRAINERS:
    if texts is None:
      raise ValueError(f"The {kind!r} tokenizer must be trained but no texts were given.")
    tok = _TRAINERS[kind](texts(), data_config)
  else:
    raise ValueError(
        f"config.data.tokenizer={kind!r} is not one of {sorted(set(KINDS) | set(_TRAINERS))}."
    )
  if workdir:
    tok.save(workdir)
  return tok
