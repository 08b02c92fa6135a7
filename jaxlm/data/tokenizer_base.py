"""The tokenizer interface, the special tokens every kind shares, and file helpers.

The kinds live in `tokenizers` (byte, char, registry, loading), `word_tokenizer`
and `spm_tokenizer`; import them all from `jaxlm.data.tokenizers`.
"""

from __future__ import annotations

import abc
import hashlib
import json
from collections.abc import Sequence

import numpy as np
from etils import epath

from jaxlm import workdir as wd_lib

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
    """Ids to text; special tokens are dropped.

    Word-level is the exception: `<unk>` is written as "<unk>" and, with
    `eos_per_line`, `<eos>` as a newline.
    """

  @abc.abstractmethod
  def token_bytes(self) -> np.ndarray:
    """UTF-8 byte length of the text each id stands for (0 for specials).

    A property of the vocabulary, not of a text: bits per byte is computed from
    the source bytes of `encode_document` instead. (Word-level counts `<unk>` as
    the 6 bytes "<unk> " it decodes to; see `WordTokenizer.token_bytes`.)
    """

  def encode_with_bytes(self, text: str) -> tuple[np.ndarray, np.ndarray]:
    """`encode(text)` and, per id, how many UTF-8 bytes of `text` it covers.

    A token covers its own text and the whitespace before it that no token
    stands for, so the counts sum to the text's byte length less any whitespace
    after the last token (`encode_document` gives that to the `<eos>`). Counted
    from the text, not the vocabulary: an unknown word or character covers its
    real bytes, not those of "<unk>".
    """
    raise NotImplementedError(f"The {self.kind!r} tokenizer does not count source bytes.")

  def encode_document(self, text: str) -> tuple[np.ndarray, np.ndarray]:
    """One document as the pipeline feeds it: ids then `<eos>`, and source bytes per id.

    The `<eos>` covers the newline that separates documents (plus any whitespace
    at the end of the text), so the counts sum to exactly `len(text.encode()) + 1`:
    bits per byte = summed nats / (ln 2 * the bytes of the targets) counts every
    byte of the source text, separators included, whatever the tokenizer.
    """
    ids, nbytes = self.encode_with_bytes(text)
    rest = len(text.encode("utf-8")) - int(np.sum(nbytes))
    return (np.append(ids, self.eos_id).astype(np.int32),
            np.append(nbytes, rest + 1).astype(np.int32))

  @abc.abstractmethod
  def _state(self) -> dict:
    """JSON-serializable content that fully defines the tokenizer."""

  def save(self, directory: str) -> None:
    """Writes `tokenizer.json` last (atomically): its presence means a complete save."""
    blob = json.dumps({"kind": self.kind, **self._state()}, ensure_ascii=False)
    _write_atomic(epath.Path(directory) / TOKENIZER_FILE, blob.encode("utf-8"))

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


WORD_VOCAB_FILE = "vocab.txt"


def _write_atomic(path: epath.Path | str, data: bytes) -> None:
  """Write-then-rename through etils.epath (a `gs://` directory works), so a crash mid-save
  never leaves a truncated file behind; a failed write is a `CheckpointError` naming it."""
  wd_lib.write_bytes(path, data)


def _cfg(cfg, name: str, default):
  """A data-config field, or `default` when the config (or the field) is absent/None."""
  value = getattr(cfg, name, None) if cfg is not None else None
  return default if value is None else value

