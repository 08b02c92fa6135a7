"""Tokenizers behind one interface: byte, char, word and SentencePiece.

Every tokenizer reserves the same first ids for special tokens, so model code
can rely on `pad_id == 0` whatever the kind. A tokenizer is saved as
`tokenizer.json` (plus `vocab.txt` for word, `spm.model` for SentencePiece) in a
directory and its `identity()` (kind, vocab size, content hash) is stored in
checkpoints so a resume or fine-tune with a different tokenizer is refused.
"""

from __future__ import annotations

import abc
import hashlib
import io
import json
import logging
import os
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence

import numpy as np
import sentencepiece as spm

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

    Used to turn a loss in nats per token into bits per byte. (Word-level counts
    `<unk>` as the 6 bytes "<unk> " it decodes to; see `WordTokenizer.token_bytes`.)
    """

  @abc.abstractmethod
  def _state(self) -> dict:
    """JSON-serializable content that fully defines the tokenizer."""

  def save(self, directory: str) -> None:
    """Writes `tokenizer.json` last (atomically): its presence means a complete save."""
    os.makedirs(directory, exist_ok=True)
    blob = json.dumps({"kind": self.kind, **self._state()}, ensure_ascii=False)
    _write_atomic(os.path.join(directory, TOKENIZER_FILE), blob.encode("utf-8"))

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


WORD_VOCAB_FILE = "vocab.txt"
SPM_MODEL_FILE = "spm.model"
# Training lines are cut into chunks of at most this many characters (see _spm_sentences).
_SPM_CHUNK_CHARS = 2048


def _write_atomic(path: str, data: bytes) -> None:
  """Write-then-rename, so a crash mid-save never leaves a truncated file behind."""
  tmp = f"{path}.tmp{os.getpid()}"
  with open(tmp, "wb") as f:
    f.write(data)
  os.replace(tmp, path)


def _cfg(cfg, name: str, default):
  """A data-config field, or `default` when the config (or the field) is absent/None."""
  value = getattr(cfg, name, None) if cfg is not None else None
  return default if value is None else value


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
    os.makedirs(directory, exist_ok=True)
    _write_atomic(os.path.join(directory, WORD_VOCAB_FILE),
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
    with open(path, "rb") as f:
      proto = f.read()
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
          f"SentencePiece training failed ({e}). If the vocabulary is too large for the"
          " training text, lower data.vocab_size."
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
    os.makedirs(directory, exist_ok=True)
    _write_atomic(os.path.join(directory, SPM_MODEL_FILE), self.model_proto)
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


def _load_spm(state: dict, directory: str) -> SentencePieceTokenizer:
  path = os.path.join(directory, state.get("model_file", SPM_MODEL_FILE))
  try:
    with open(path, "rb") as f:
      proto = f.read()
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
  path = os.path.join(directory, TOKENIZER_FILE)
  try:
    with open(path, encoding="utf-8") as f:
      state = json.load(f)
  except FileNotFoundError as e:
    raise FileNotFoundError(f"No tokenizer at {path}.") from e
  except json.JSONDecodeError as e:
    raise ValueError(f"Corrupt tokenizer file {path}: {e}. Delete it to rebuild.") from e
  return _from_state(state, directory)


def tokenizer_from_path(path: str) -> Tokenizer:
  """`data.tokenizer_path`: a saved tokenizer directory (or its tokenizer.json), or a
  bare SentencePiece `.model` file, which must use jaxlm's special ids."""
  path = os.path.expanduser(path)
  if os.path.isdir(path):
    return load_tokenizer(path)
  if os.path.basename(path) == TOKENIZER_FILE:
    return load_tokenizer(os.path.dirname(path) or ".")
  if os.path.isfile(path):
    return SentencePieceTokenizer.from_file(path)
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
  if workdir and os.path.exists(os.path.join(workdir, TOKENIZER_FILE)):
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
