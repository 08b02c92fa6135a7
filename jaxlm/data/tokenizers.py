"""Tokenizers behind one interface: byte, char (and word / SentencePiece).

Every tokenizer reserves the same first ids for special tokens, so model code
can rely on `pad_id == 0` whatever the kind. A tokenizer is saved as
`tokenizer.json` (plus model files for SentencePiece) in a directory and its
`identity()` (kind, vocab size, content hash) is stored in checkpoints so a
resume or fine-tune with a different tokenizer is refused.
"""

from __future__ import annotations

import abc
import hashlib
import json
import os
from collections.abc import Callable, Iterable, Sequence

import numpy as np

SPECIAL_TOKENS = ("<pad>", "<bos>", "<eos>", "<unk>", "<mask>", "<cls>", "<sep>")
PAD_ID, BOS_ID, EOS_ID, UNK_ID, MASK_ID, CLS_ID, SEP_ID = range(len(SPECIAL_TOKENS))
NUM_SPECIAL = len(SPECIAL_TOKENS)
TOKENIZER_FILE = "tokenizer.json"


class Tokenizer(abc.ABC):
  """Maps text to int32 ids and back. Ids 0..6 are the special tokens."""

  kind: str = ""
  pad_id, bos_id, eos_id, unk_id = PAD_ID, BOS_ID, EOS_ID, UNK_ID
  mask_id, cls_id, sep_id = MASK_ID, CLS_ID, SEP_ID

  @property
  @abc.abstractmethod
  def vocab_size(self) -> int:
    """Number of ids, special tokens included."""

  @abc.abstractmethod
  def encode(self, text: str) -> np.ndarray:
    """Text to a 1-D int32 array of ids (no bos/eos added)."""

  @abc.abstractmethod
  def decode(self, ids: Sequence[int] | np.ndarray) -> str:
    """Ids to text; special tokens are dropped."""

  @abc.abstractmethod
  def token_bytes(self) -> np.ndarray:
    """UTF-8 byte length of the text each id stands for (0 for specials).

    Used to turn a loss in nats per token into bits per byte.
    """

  @abc.abstractmethod
  def _state(self) -> dict:
    """JSON-serializable content that fully defines the tokenizer."""

  def save(self, directory: str) -> None:
    os.makedirs(directory, exist_ok=True)
    with open(os.path.join(directory, TOKENIZER_FILE), "w", encoding="utf-8") as f:
      json.dump({"kind": self.kind, **self._state()}, f, ensure_ascii=False)

  def identity(self) -> dict:
    """Kind, vocab size and a hash of the content: equal iff same tokenizer."""
    blob = json.dumps(self._state(), sort_keys=True, ensure_ascii=False).encode()
    return {
        "kind": self.kind,
        "vocab_size": self.vocab_size,
        "sha256": hashlib.sha256(blob).hexdigest()[:16],
    }

  def id_to_piece(self, i: int) -> str:
    """Readable form of one id (for plots and nearest-neighbour lists)."""
    if i < NUM_SPECIAL:
      return SPECIAL_TOKENS[i]
    return self.decode([i])


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


# Kinds defined in other modules register a loader here: kind -> (state, dir) -> Tokenizer.
_EXTRA_LOADERS: dict[str, Callable[[dict, str], Tokenizer]] = {}
# Kinds that must be trained on text: kind -> (texts, data_config) -> Tokenizer.
_TRAINERS: dict[str, Callable[[Iterable[str], object], Tokenizer]] = {
    "char": lambda texts, cfg: CharTokenizer.train(texts),
}
KINDS = ("byte", "char")


def load_tokenizer(directory: str) -> Tokenizer:
  """Loads the tokenizer saved by `Tokenizer.save` in `directory`."""
  path = os.path.join(directory, TOKENIZER_FILE)
  try:
    with open(path, encoding="utf-8") as f:
      state = json.load(f)
  except FileNotFoundError as e:
    raise FileNotFoundError(f"No tokenizer at {path}.") from e
  except json.JSONDecodeError as e:
    raise ValueError(f"Corrupt tokenizer file {path}: {e}. Delete it to rebuild.") from e
  return _from_state(state, directory)


def get_tokenizer(
    kind: str,
    workdir: str | None,
    texts: Callable[[], Iterable[str]] | None = None,
    data_config=None,
) -> Tokenizer:
  """The run's tokenizer: loaded from `workdir` if saved there, else built and saved.

  `texts` yields the training split's documents; it is called only when a
  tokenizer has to be trained (char, word, SentencePiece).
  """
  if workdir and os.path.exists(os.path.join(workdir, TOKENIZER_FILE)):
    tok = load_tokenizer(workdir)
    if tok.kind != kind:
      raise ValueError(
          f"{workdir}/{TOKENIZER_FILE} holds a {tok.kind!r} tokenizer but config.data.tokenizer"
          f" is {kind!r}. Use a fresh --workdir or set --config.data.tokenizer={tok.kind}."
      )
    return tok
  if kind == "byte":
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
