"""Word-level tokenizer: whitespace-separated words, the PTB / WikiText convention."""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable, Sequence

import numpy as np
from etils import epath

from jaxlm.data.tokenizer_base import (
    EOS_ID,
    NUM_SPECIAL,
    SPECIAL_TOKENS,
    UNK_ID,
    WORD_VOCAB_FILE,
    Tokenizer,
    _cfg,
    _write_atomic,
)

# A word: what `str.split()` returns (`\s` and `str.isspace` agree on every code point).
_WORD = re.compile(r"\S+")


class WordTokenizer(Tokenizer):
  """Whitespace-separated words, the PTB / WikiText word-LM convention.

  Vocabulary ids follow frequency rank (most frequent word first, after the
  specials). Words not in the vocabulary, and a literal `<unk>` in the text (as
  in WikiText), map to `<unk>` (id 3); decode writes them back as `<unk>`. Any
  other special-token string in the text is an ordinary (out-of-vocabulary)
  word, so text can never inject control ids such as `<pad>`.

  With `eos_per_line`, each newline is an `<eos>` token and decode turns `<eos>`
  back into a newline; otherwise newlines are plain whitespace and `<eos>` is
  dropped like the other specials. Round trip is exact on whitespace-normalized
  text: single spaces between words, no spaces at line ends, `\\n` newlines.
  """

  kind = "word"

  def __init__(
      self, words: Sequence[str], lowercase: bool = False, eos_per_line: bool = True
  ):
    self.words = list(words)
    self.lowercase = bool(lowercase)
    self.eos_per_line = bool(eos_per_line)
    bad = [w for w in self.words if w in SPECIAL_TOKENS or w.split() != [w]]
    if bad or len(set(self.words)) != len(self.words):
      raise ValueError(
          f"Word vocab must be unique, non-empty, whitespace-free non-special words; got {bad[:5]}"
      )
    self._index = {w: i + NUM_SPECIAL for i, w in enumerate(self.words)}
    self._index[SPECIAL_TOKENS[UNK_ID]] = UNK_ID
    self._lookup = list(SPECIAL_TOKENS) + self.words

  @classmethod
  def train(
      cls,
      texts: Iterable[str],
      min_count: int = 1,
      max_size: int = 0,
      lowercase: bool = False,
      eos_per_line: bool = True,
  ) -> WordTokenizer:
    """Keeps words seen >= `min_count` times, at most `max_size` of them (0 = all).

    `max_size` counts words only (the 7 specials come on top), like torchtext.
    Ties in frequency are broken by the word itself so training is deterministic.
    """
    if min_count < 1 or max_size < 0:
      raise ValueError(f"Need word_min_count >= 1 and word_max_size >= 0, got {min_count}, "
                       f"{max_size}.")
    counts: Counter[str] = Counter()
    for t in texts:
      counts.update((t.lower() if lowercase else t).split())
    for special in SPECIAL_TOKENS:
      counts.pop(special, None)
    kept = sorted((w for w, c in counts.items() if c >= min_count), key=lambda w: (-counts[w], w))
    if max_size:
      kept = kept[:max_size]
    return cls(kept, lowercase=lowercase, eos_per_line=eos_per_line)

  @property
  def vocab_size(self) -> int:
    return NUM_SPECIAL + len(self.words)

  def encode(self, text: str) -> np.ndarray:
    if self.lowercase:
      text = text.lower()
    get = self._index.get
    if not self.eos_per_line:
      return np.array([get(w, UNK_ID) for w in text.split()], np.int32)
    ids: list[int] = []
    for k, line in enumerate(text.split("\n")):
      if k:
        ids.append(EOS_ID)
      ids.extend(get(w, UNK_ID) for w in line.split())
    return np.array(ids, np.int32)

  def encode_with_bytes(self, text: str) -> tuple[np.ndarray, np.ndarray]:
    """A word covers its own bytes and the whitespace before it; an `<eos>` its newline
    and the whitespace before that; an unknown word its real bytes (not "<unk> ")."""
    get, ids, nbytes = self._index.get, [], []
    pending = 0  # Bytes of whitespace since the last token.
    for k, line in enumerate(text.split("\n") if self.eos_per_line else [text]):
      if k:
        ids.append(EOS_ID)
        nbytes.append(pending + 1)
        pending = 0
      pos = 0
      for m in _WORD.finditer(line):
        word = m.group()
        ids.append(get(word.lower() if self.lowercase else word, UNK_ID))
        nbytes.append(len(line[pos:m.end()].encode("utf-8")))
        pos = m.end()
      pending += len(line[pos:].encode("utf-8"))
    return np.array(ids, np.int32), np.array(nbytes, np.int32)

  def decode(self, ids) -> str:
    ids = np.asarray(ids, np.int64).reshape(-1)
    lookup, lines, line = self._lookup, [], []
    for i in ids.tolist():
      if NUM_SPECIAL <= i < len(lookup) or i == UNK_ID:
        line.append(lookup[i])
      elif i == EOS_ID and self.eos_per_line:
        lines.append(" ".join(line))
        line = []
    lines.append(" ".join(line))
    return "\n".join(lines)

  def token_bytes(self) -> np.ndarray:
    """UTF-8 length of the word + 1: each word owns the space (or newline) after it.

    So the sum over a whitespace-normalized text whose lines all end in a newline
    is its exact UTF-8 length, minus one per empty line (`<eos>` counts 0, its
    newline is the previous word's separator). `<unk>` counts 6 = len("<unk> ")
    because that is what decode writes and what WikiText's raw text holds; the
    other specials count 0.
    """
    out = np.array([0] * NUM_SPECIAL + [len(w.encode("utf-8")) + 1 for w in self.words],
                   np.int32)
    out[UNK_ID] = len(SPECIAL_TOKENS[UNK_ID]) + 1
    return out

  def id_to_piece(self, i: int) -> str:
    return self._lookup[i]

  def save(self, directory: str) -> None:
    """Also writes `vocab.txt`: token of id i on line i (specials included), for reading."""
    _write_atomic(epath.Path(directory) / WORD_VOCAB_FILE,
                  "".join(f"{w}\n" for w in self._lookup).encode("utf-8"))
    super().save(directory)

  def _state(self) -> dict:
    return {"lowercase": self.lowercase, "eos_per_line": self.eos_per_line, "words": self.words}


def _train_word(texts: Iterable[str], cfg) -> WordTokenizer:
  return WordTokenizer.train(
      texts,
      min_count=int(_cfg(cfg, "word_min_count", 1)),
      max_size=int(_cfg(cfg, "word_max_size", 0)),
      lowercase=bool(_cfg(cfg, "word_lowercase", False)),
      eos_per_line=bool(_cfg(cfg, "word_eos_per_line", True)),
  )


def _load_word(state: dict, directory: str) -> WordTokenizer:
  return WordTokenizer(
      state["words"], lowercase=state.get("lowercase", False),
      eos_per_line=state.get("eos_per_line", True),
  )
