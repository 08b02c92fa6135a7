"""SentencePiece (BPE or unigram) tokenizer whose special ids line up with jaxlm's."""

from __future__ import annotations

import hashlib
import io
import logging
import os
import time
from collections.abc import Iterable, Iterator

import numpy as np
import sentencepiece as spm
from etils import epath

from jaxlm.data.tokenizer_base import (
    BOS_ID,
    EOS_ID,
    MASK_ID,
    NUM_SPECIAL,
    PAD_ID,
    SPECIAL_TOKENS,
    TOKENIZER_FILE,
    UNK_ID,
    Tokenizer,
    _cfg,
    _write_atomic,
)

SPM_MODEL_FILE = "spm.model"
# Training lines are cut into chunks of at most this many characters (see _spm_sentences).
_SPM_CHUNK_CHARS = 2048


def _spm_sentences(
    texts: Iterable[str], max_sentences: int, max_chars: int
) -> Iterator[str]:
  """Non-empty lines of the documents, long lines cut into chunks, up to the caps.

  spm drops sentences over `max_sentence_length` bytes, so lines are cut at a
  space (before it, so the next chunk starts with `▁word` as it would in context)
  into chunks of at most `_SPM_CHUNK_CHARS` characters.
  """
  n_sent = n_chars = 0
  for doc in texts:
    for line in doc.split("\n"):
      start = 0
      while start < len(line):
        end = start + _SPM_CHUNK_CHARS
        if end < len(line):
          cut = line.rfind(" ", start + 1, end)
          end = cut if cut > start else end
        chunk = line[start:end]
        start = end
        if not chunk.strip():
          continue
        yield chunk
        n_sent += 1
        n_chars += len(chunk)
        if n_sent >= max_sentences or n_chars >= max_chars:
          return


class SentencePieceTokenizer(Tokenizer):
  """A SentencePiece (BPE or unigram) model whose special ids line up with ours.

  Models trained here use identity normalization, keep every whitespace
  character (`remove_extra_whitespaces=False`) and add no dummy prefix space,
  with byte fallback: so `decode(encode(x)) == x` for any text, and the
  `token_bytes()` of the ids of `x` sum to its UTF-8 length. One exception is
  spm's own meta symbol U+2581 `▁`, which it reads as a space. Newlines never
  occur in the training sentences (they are split into lines), so `\\n` is the
  byte piece `<0x0A>`. Without a dummy prefix a word at the start of a document
  or line is a different piece from the same word after a space (as in GPT-2).
  `<mask>`, `<cls>`, `<sep>` are control symbols: never produced from text (a
  literal "<mask>" is ordinary characters) and dropped by decode, as for the
  byte and char kinds.
  """

  kind = "spm"

  def __init__(self, model_proto: bytes):
    self.model_proto = bytes(model_proto)
    self.sp = spm.SentencePieceProcessor(model_proto=self.model_proto)
    _check_spm_specials(self.sp)
    self.model_sha256 = hashlib.sha256(self.model_proto).hexdigest()

  @classmethod
  def from_file(cls, path: str) -> SentencePieceTokenizer:
    """A serialized SentencePiece model (e.g. `spm.model` from another run)."""
    proto = epath.Path(path).read_bytes()
    try:
      return cls(proto)
    except (RuntimeError, OSError) as e:
      raise ValueError(f"{path} is not a readable SentencePiece model: {e}") from e

  @classmethod
  def train(
      cls,
      texts: Iterable[str],
      vocab_size: int = 8000,
      model_type: str = "unigram",
      max_sentences: int = 1_000_000,
      max_chars: int = 100_000_000,
  ) -> SentencePieceTokenizer:
    """Trains in memory on the first lines of `texts`, deterministically.

    `vocab_size` includes the 7 specials and the 256 byte pieces. Single-threaded
    and unshuffled so the same texts give a byte-identical model (the trainer
    spec, thread count included, is stored in the model and hence in its hash).
    """
    if model_type not in ("bpe", "unigram"):
      raise ValueError(f"data.spm_model_type must be 'bpe' or 'unigram', got {model_type!r}.")
    min_vocab = NUM_SPECIAL + 256 + 1
    if vocab_size < min_vocab:
      raise ValueError(
          f"data.vocab_size={vocab_size} is too small for SentencePiece with byte fallback: it"
          f" holds {NUM_SPECIAL} specials + 256 byte pieces, so use >= {min_vocab}."
      )
    writer = io.BytesIO()
    t0 = time.perf_counter()
    try:
      spm.SentencePieceTrainer.train(
          sentence_iterator=_spm_sentences(texts, max_sentences, max_chars),
          model_writer=writer,
          model_type=model_type,
          vocab_size=vocab_size,
          pad_id=PAD_ID, bos_id=BOS_ID, eos_id=EOS_ID, unk_id=UNK_ID,
          pad_piece=SPECIAL_TOKENS[PAD_ID], bos_piece=SPECIAL_TOKENS[BOS_ID],
          eos_piece=SPECIAL_TOKENS[EOS_ID], unk_piece=SPECIAL_TOKENS[UNK_ID],
          control_symbols=list(SPECIAL_TOKENS[MASK_ID:]),
          byte_fallback=True,
          normalization_rule_name="identity",
          remove_extra_whitespaces=False,
          add_dummy_prefix=False,
          max_sentence_length=4 * _SPM_CHUNK_CHARS,
          input_sentence_size=max_sentences,
          shuffle_input_sentence=False,
          num_threads=1,
          minloglevel=2,
      )
    except RuntimeError as e:
      raise ValueError(
          f"SentencePiece training failed ({e}). Fix: lower data.vocab_size if the text is"
          " too small for that many pieces, or raise it if the text has more distinct"
          " characters than it allows (as the message above says)."
      ) from e
    tok = cls(writer.getvalue())
    logging.info("Trained a %s SentencePiece model, %d pieces, in %.2fs.", model_type,
                 tok.vocab_size, time.perf_counter() - t0)
    return tok

  @property
  def vocab_size(self) -> int:
    return self.sp.get_piece_size()

  def encode(self, text: str) -> np.ndarray:
    return np.array(self.sp.encode(text), np.int32)

  def decode(self, ids) -> str:
    ids = np.asarray(ids, np.int64).reshape(-1)
    ids = ids[(ids >= NUM_SPECIAL) & (ids < self.vocab_size)]
    return self.sp.decode(ids.tolist())

  def encode_with_bytes(self, text: str) -> tuple[np.ndarray, np.ndarray]:
    """From spm's byte offsets into `text`: exact even for a literal `▁` (3 bytes).

    The bytes of a character split into byte pieces all go to its last piece.
    """
    pieces = self.sp.encode(text, out_type="proto").pieces
    return (np.array([p.id for p in pieces], np.int32),
            np.array([p.end - p.begin for p in pieces], np.int32))

  def token_bytes(self) -> np.ndarray:
    """Bytes of each piece: `▁` is one space, a byte piece `<0xNN>` is 1, controls 0."""
    sp, out = self.sp, np.zeros(self.vocab_size, np.int32)
    for i in range(NUM_SPECIAL, self.vocab_size):
      if sp.is_byte(i):
        out[i] = 1
      elif not (sp.is_control(i) or sp.is_unknown(i) or sp.is_unused(i)):
        out[i] = len(sp.id_to_piece(i).replace("\u2581", " ").encode("utf-8"))
    return out

  def id_to_piece(self, i: int) -> str:
    return self.sp.id_to_piece(i)

  def save(self, directory: str) -> None:
    """Writes the model as `spm.model` before tokenizer.json (which records its sha256)."""
    _write_atomic(epath.Path(directory) / SPM_MODEL_FILE, self.model_proto)
    super().save(directory)

  def _state(self) -> dict:
    return {"model_file": SPM_MODEL_FILE, "model_sha256": self.model_sha256,
            "vocab_size": self.vocab_size}


def _check_spm_specials(sp: spm.SentencePieceProcessor) -> None:
  """Refuses a model whose special ids differ from ours: model code relies on them."""
  roles = {"pad": (sp.pad_id(), PAD_ID), "bos": (sp.bos_id(), BOS_ID),
           "eos": (sp.eos_id(), EOS_ID), "unk": (sp.unk_id(), UNK_ID)}
  problems = [f"{name}_id={got} (need {want})" for name, (got, want) in roles.items()
              if got != want]
  n = sp.get_piece_size()
  for i in range(MASK_ID, NUM_SPECIAL):
    piece = sp.id_to_piece(i) if i < n else None
    # A control symbol, or a user-defined one (matched in text, so its encoding holds it).
    if piece != SPECIAL_TOKENS[i] or not (sp.is_control(i) or i in sp.encode(piece)):
      problems.append(f"id {i} is {piece!r} (need {SPECIAL_TOKENS[i]!r} as a control or"
                      " user-defined symbol)")
  if problems:
    raise ValueError(
        "SentencePiece model does not use jaxlm's special ids (pad=0 bos=1 eos=2 unk=3"
        " <mask>=4 <cls>=5 <sep>=6): " + "; ".join(problems) + "."
    )


def _load_spm(state: dict, directory: str) -> SentencePieceTokenizer:
  name = str(state.get("model_file", SPM_MODEL_FILE))
  if os.path.basename(name) != name or name in ("", ".", ".."):  # A name from data: no escape.
    raise ValueError(f"{directory}/{TOKENIZER_FILE}: model_file={name!r} must be a plain file "
                     "name inside that directory.")
  path = epath.Path(directory) / name
  try:
    proto = path.read_bytes()
  except FileNotFoundError as e:
    raise FileNotFoundError(
        f"{directory}/{TOKENIZER_FILE} is a SentencePiece tokenizer but {path} is missing."
    ) from e
  tok = SentencePieceTokenizer(proto)
  want = state.get("model_sha256")
  if want and tok.model_sha256 != want:
    raise ValueError(
        f"{path} has sha256 {tok.model_sha256[:16]}… but {TOKENIZER_FILE} records"
        f" {want[:16]}…: the model file was replaced. Restore it or use a fresh directory."
    )
  return tok


def _train_spm(texts: Iterable[str], cfg) -> SentencePieceTokenizer:
  return SentencePieceTokenizer.train(
      texts,
      vocab_size=int(_cfg(cfg, "vocab_size", 8000)),
      model_type=str(_cfg(cfg, "spm_model_type", "unigram")),
      max_sentences=int(_cfg(cfg, "spm_max_sentences", 1_000_000)),
      max_chars=int(_cfg(cfg, "spm_max_chars", 100_000_000)),
  )

