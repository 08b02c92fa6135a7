"""Tokenizers: round trips, shared special ids, save/load identity, word/spm training."""

from __future__ import annotations

import io
import json
import os
import pickle
import random

import ml_collections
import numpy as np
import pytest
import sentencepiece as spm
from conftest import shared_data

from jaxlm.data import tokenizers as T

UNICODE = "naïve café ÅΩ 日本語 😀👩‍👩‍👧 \t tab\r\nCRLF  two  spaces \u00a0nbsp ﬁ\x00nul "
TRICKY = ["", " ", "\n", "\n\n x \n", " lead", "trail  ", "a\tb", "<mask> <unk> <pad>", UNICODE]


def _synthetic(n_lines: int = 1500, seed: int = 0) -> str:
  """Pseudo-English with a Zipf-ish vocabulary: always available, enough to train spm on."""
  rng = random.Random(seed)
  syll = ["ka", "to", "ri", "ne", "sa", "mu", "lo", "pe", "di", "vu", "the", "and", "ing"]
  words = ["".join(rng.choice(syll) for _ in range(rng.randint(1, 4))) for _ in range(300)]
  weights = [1 / (r + 1) for r in range(len(words))]
  lines = []
  for _ in range(n_lines):
    ws = rng.choices(words, weights, k=rng.randint(3, 15))
    lines.append(" ".join(ws).capitalize() + rng.choice([".", ",", "!", "?", ""]))
  return "\n".join(lines) + "\n"


SYNTH = _synthetic()


def _spm_cfg(vocab_size: int, model_type: str) -> ml_collections.ConfigDict:
  return ml_collections.ConfigDict(
      {"tokenizer": "spm", "vocab_size": vocab_size, "spm_model_type": model_type}
  )


@pytest.fixture(scope="module", params=["bpe", "unigram"])
def spm_synth(request) -> T.SentencePieceTokenizer:
  return T._TRAINERS["spm"]([SYNTH], _spm_cfg(500, request.param))


@pytest.fixture(scope="module")
def shakespeare_path() -> str:  # Skips if absent; fails under CI=true.
  return shared_data("tinyshakespeare", "input.txt")


@pytest.fixture(scope="module")
def shakespeare(shakespeare_path) -> str:
  with open(shakespeare_path, encoding="utf-8") as f:
    return f.read(200_000)


def _all_kinds(spm_tok) -> list[T.Tokenizer]:
  return [
      T.ByteTokenizer(),
      T.CharTokenizer.train([SYNTH]),
      T.WordTokenizer.train([SYNTH]),
      spm_tok,
  ]


# ---------------------------------------------------------------- byte / char


def test_byte_round_trip_any_unicode():
  tok = T.ByteTokenizer()
  for s in [*TRICKY, "".join(chr(c) for c in range(1, 0x800, 7)), "\U0001f600" * 5]:
    ids = tok.encode(s)
    assert ids.dtype == np.int32
    assert tok.decode(ids) == s
    assert tok.token_bytes()[ids].sum() == len(s.encode("utf-8"))


def test_char_round_trip_and_unk():
  tok = T.CharTokenizer.train([SYNTH, UNICODE])
  for s in [SYNTH[:2000], UNICODE, ""]:
    ids = tok.encode(s)
    assert tok.decode(ids) == s
    assert tok.token_bytes()[ids].sum() == len(s.encode("utf-8"))
  assert tok.encode("Ж").tolist() == [T.UNK_ID]
  assert tok.decode(tok.encode("aЖb")) == "ab"  # <unk> is dropped like every special


# ---------------------------------------------------------------- word


def test_word_round_trip_normalized_with_eos_lines():
  tok = T.WordTokenizer.train([SYNTH])
  ids = tok.encode(SYNTH)
  assert (ids == T.EOS_ID).sum() == SYNTH.count("\n")
  assert T.UNK_ID not in ids
  assert tok.decode(ids) == SYNTH
  a, b, c = tok.words[5], tok.words[50], tok.words[100]
  norm = f"{a} {b}\n\n{c}\n"
  assert tok.decode(tok.encode(f"  {a}   {b} \t\n\n {c}  \n")) == norm
  # Each word owns one separator byte; <eos> is 0, so only the empty line is missing.
  assert tok.token_bytes()[tok.encode(norm)].sum() == len(norm) - 1


def test_word_unk_and_literal_specials():
  tok = T.WordTokenizer.train(["the cat <unk> sat <pad> <eos> <mask>"])
  assert "<unk>" not in tok.words and "<pad>" not in tok.words
  assert tok.words == ["cat", "sat", "the"]  # all count 1: ties broken by the string
  ids = tok.encode("the dog <unk> sat <pad>").tolist()
  assert ids == [tok.words.index("the") + 7, T.UNK_ID, T.UNK_ID, tok.words.index("sat") + 7,
                 T.UNK_ID]  # text cannot inject <pad>
  assert tok.decode(ids) == "the <unk> <unk> sat <unk>"
  assert tok.decode([T.PAD_ID, T.BOS_ID, 7, T.MASK_ID, T.SEP_ID, 999]) == "cat"
  assert tok.token_bytes()[T.UNK_ID] == len("<unk> ")
  assert tok.token_bytes()[7] == len("cat ")


def test_word_min_count_max_size_lowercase():
  text = "b b b a a c c d The the THE\n"
  tok = T.WordTokenizer.train([text], min_count=2)
  assert tok.words == ["b", "a", "c"]  # 'the'/'The'/'THE' once each when case-sensitive
  tok = T.WordTokenizer.train([text], lowercase=True)
  assert tok.words == ["b", "the", "a", "c", "d"]
  assert tok.decode(tok.encode("THE B")) == "the b"
  tok = T.WordTokenizer.train([text], max_size=2)
  assert tok.words == ["b", "a"] and tok.vocab_size == T.NUM_SPECIAL + 2
  # Same counts in another order: same vocab (deterministic tie-breaking).
  assert T.WordTokenizer.train([" ".join(reversed(text.split()))], max_size=2).words == tok.words
  with pytest.raises(ValueError, match="word_min_count"):
    T.WordTokenizer.train([text], min_count=0)


def test_word_without_eos_per_line():
  tok = T.WordTokenizer.train([SYNTH], eos_per_line=False)
  ids = tok.encode("Kato\nrine")
  assert T.EOS_ID not in ids and len(ids) == 2
  assert tok.decode([*ids.tolist(), T.EOS_ID]) == tok.decode(ids)


def test_word_trainer_reads_config(tmp_path):
  cfg = ml_collections.ConfigDict(
      {"word_min_count": 2, "word_max_size": 3, "word_lowercase": True, "word_eos_per_line": False}
  )
  tok = T._TRAINERS["word"](["A a b B b c c d"], cfg)
  assert (tok.words, tok.lowercase, tok.eos_per_line) == (["b", "a", "c"], True, False)
  tok.save(str(tmp_path))
  lines = (tmp_path / T.WORD_VOCAB_FILE).read_text(encoding="utf-8").splitlines()
  assert lines == [*T.SPECIAL_TOKENS, "b", "a", "c"]
  state = json.loads((tmp_path / T.TOKENIZER_FILE).read_text(encoding="utf-8"))
  assert state["kind"] == "word" and state["words"] == ["b", "a", "c"]
  assert T.load_tokenizer(str(tmp_path)).identity() == tok.identity()


def test_word_on_shakespeare(shakespeare):
  tok = T.WordTokenizer.train([shakespeare], min_count=2)
  ids = tok.encode(shakespeare)
  assert 0 < (ids == T.UNK_ID).mean() < 0.2  # singletons
  in_vocab = "\n".join(" ".join(w for w in line.split() if w in tok._index)
                       for line in shakespeare.split("\n"))
  assert tok.decode(tok.encode(in_vocab)) == in_vocab


# ---------------------------------------------------------------- SentencePiece


def test_spm_special_ids_and_round_trip(spm_synth):
  tok = spm_synth
  assert tok.vocab_size == 500
  sp = tok.sp
  assert [sp.id_to_piece(i) for i in range(T.NUM_SPECIAL)] == list(T.SPECIAL_TOKENS)
  assert (sp.pad_id(), sp.bos_id(), sp.eos_id(), sp.unk_id()) == (0, 1, 2, 3)
  assert all(sp.is_control(i) for i in (0, 1, 2, 4, 5, 6)) and sp.is_unknown(3)
  for s in [SYNTH[:3000], *TRICKY]:
    ids = tok.encode(s)
    assert ids.dtype == np.int32 and (ids >= T.NUM_SPECIAL).all()
    assert tok.decode(ids) == s, s
    assert tok.token_bytes()[ids].sum() == len(s.encode("utf-8")), s
  # Specials are never produced from text and dropped on decode, as for byte and char.
  assert T.MASK_ID not in tok.encode("<mask>")
  assert tok.decode([T.BOS_ID, *tok.encode("Kato").tolist(), T.MASK_ID, T.EOS_ID]) == "Kato"
  assert (tok.token_bytes()[:T.NUM_SPECIAL] == 0).all()


def test_spm_compresses_and_is_deterministic(spm_synth):
  again = T.SentencePieceTokenizer.train(
      [SYNTH], vocab_size=500, model_type=_model_type(spm_synth)
  )
  assert again.identity() == spm_synth.identity()
  assert again.model_proto == spm_synth.model_proto
  assert len(spm_synth.encode(SYNTH)) < 0.5 * len(SYNTH)


def _model_type(tok: T.SentencePieceTokenizer) -> str:
  from sentencepiece import sentencepiece_model_pb2

  m = sentencepiece_model_pb2.ModelProto()
  m.ParseFromString(tok.model_proto)
  return sentencepiece_model_pb2.TrainerSpec.ModelType.Name(m.trainer_spec.model_type).lower()


@pytest.mark.parametrize("model_type", ["bpe", "unigram"])
def test_spm_on_shakespeare(shakespeare, model_type):
  cfg = _spm_cfg(2000, model_type)
  tok = T._TRAINERS["spm"]([shakespeare], cfg)
  assert tok.vocab_size == 2000 and _model_type(tok) == model_type
  for s in [shakespeare[:20_000], *TRICKY]:
    ids = tok.encode(s)
    assert tok.decode(ids) == s
    assert tok.token_bytes()[ids].sum() == len(s.encode("utf-8"))
  assert len(tok.encode(shakespeare[:20_000])) < 0.4 * 20_000
  assert T._TRAINERS["spm"]([shakespeare], cfg).identity() == tok.identity()


def test_spm_training_caps_and_long_lines():
  long_line = " ".join(["kato rine"] * 3000)  # ~30 KB on one line: longer than spm accepts
  chunks = list(T._spm_sentences([long_line, "x\n\n  \ny"], 10**6, 10**9))
  assert all(len(c) <= T._SPM_CHUNK_CHARS for c in chunks)
  assert "".join(chunks[:-2]) == long_line and chunks[-2:] == ["x", "y"]
  assert chunks[1].startswith(" ") and chunks[0][-1] != " "  # cut before a space
  assert len(list(T._spm_sentences([SYNTH], 10, 10**9))) == 10
  assert sum(map(len, T._spm_sentences([SYNTH], 10**6, 500))) < 600

  def endless():
    while True:
      yield SYNTH

  tok = T.SentencePieceTokenizer.train(endless(), vocab_size=400, max_sentences=800)
  assert tok.vocab_size == 400


def test_spm_bad_config_is_clear():
  with pytest.raises(ValueError, match="too small"):
    T.SentencePieceTokenizer.train([SYNTH], vocab_size=100)
  with pytest.raises(ValueError, match="spm_model_type"):
    T.SentencePieceTokenizer.train([SYNTH], vocab_size=400, model_type="word")
  with pytest.raises(ValueError, match="lower data.vocab_size"):
    T.SentencePieceTokenizer.train(["tiny text only"], vocab_size=5000)


def test_spm_pickles(spm_synth):
  clone = pickle.loads(pickle.dumps(spm_synth))
  assert clone.identity() == spm_synth.identity()
  assert clone.encode(SYNTH[:500]).tolist() == spm_synth.encode(SYNTH[:500]).tolist()


# ---------------------------------------------------------------- all kinds


def test_special_ids_identical_across_kinds(spm_synth):
  for tok in _all_kinds(spm_synth):
    assert (tok.pad_id, tok.bos_id, tok.eos_id, tok.unk_id) == (0, 1, 2, 3), tok.kind
    assert (tok.mask_id, tok.cls_id, tok.sep_id) == (4, 5, 6), tok.kind
    assert [tok.id_to_piece(i) for i in range(T.NUM_SPECIAL)] == list(T.SPECIAL_TOKENS)
    tb = tok.token_bytes()
    assert tb.shape == (tok.vocab_size,) and tb.dtype == np.int32
    specials = np.delete(tb[:T.NUM_SPECIAL], T.UNK_ID) if tok.kind == "word" else tb[:7]
    assert (specials == 0).all(), tok.kind
  assert set(T.KINDS) == {"byte", "char", "word", "spm"}
  assert {"char", "word", "spm"} <= set(T._TRAINERS) and {"word", "spm"} <= set(T._EXTRA_LOADERS)


def test_save_load_same_identity_and_encodings(spm_synth, tmp_path):
  for tok in _all_kinds(spm_synth):
    d = str(tmp_path / tok.kind)
    tok.save(d)
    back = T.load_tokenizer(d)
    assert type(back) is type(tok) and back.identity() == tok.identity()
    assert back.vocab_size == tok.vocab_size
    for s in (SYNTH[:1000], UNICODE):
      assert back.encode(s).tolist() == tok.encode(s).tolist()
    assert (back.token_bytes() == tok.token_bytes()).all()
    assert not [f for f in os.listdir(d) if ".tmp" in f]
  state = json.loads((tmp_path / "spm" / T.TOKENIZER_FILE).read_text(encoding="utf-8"))
  assert state["kind"] == "spm" and state["model_sha256"] == spm_synth.model_sha256
  assert (tmp_path / "spm" / T.SPM_MODEL_FILE).read_bytes() == spm_synth.model_proto


def test_identity_differs_for_different_vocab(spm_synth):
  other_text = _synthetic(seed=1)
  pairs = [
      (T.CharTokenizer.train([SYNTH]), T.CharTokenizer.train([SYNTH + "Ж"])),
      (T.WordTokenizer.train([SYNTH]), T.WordTokenizer.train([other_text])),
      (T.WordTokenizer.train([SYNTH]), T.WordTokenizer.train([SYNTH], lowercase=True)),
      (spm_synth, T.SentencePieceTokenizer.train([other_text], vocab_size=500,
                                                 model_type=_model_type(spm_synth))),
  ]
  for a, b in pairs:
    assert a.identity() != b.identity(), a.kind
  assert T.ByteTokenizer().identity() == T.ByteTokenizer().identity()


def test_spm_load_refuses_replaced_model(spm_synth, tmp_path):
  spm_synth.save(str(tmp_path))
  other = T.SentencePieceTokenizer.train([_synthetic(seed=2)], vocab_size=500)
  (tmp_path / T.SPM_MODEL_FILE).write_bytes(other.model_proto)
  with pytest.raises(ValueError, match="model file was replaced"):
    T.load_tokenizer(str(tmp_path))
  (tmp_path / T.SPM_MODEL_FILE).unlink()
  with pytest.raises(FileNotFoundError, match="missing"):
    T.load_tokenizer(str(tmp_path))


# ---------------------------------------------------------------- get_tokenizer / paths


@pytest.mark.parametrize("kind", ["char", "word", "spm"])
def test_get_tokenizer_reuses_saved_and_refuses_other_kind(kind, tmp_path):
  calls = []

  def texts():
    calls.append(1)
    return iter([SYNTH])

  cfg = _spm_cfg(400, "bpe")
  first = T.get_tokenizer(kind, str(tmp_path), texts, cfg)
  assert calls == [1] and (tmp_path / T.TOKENIZER_FILE).exists()
  again = T.get_tokenizer(kind, str(tmp_path), texts, cfg)
  assert calls == [1], "retrained although a tokenizer was saved in the workdir"
  assert again.identity() == first.identity()
  other = "byte" if kind != "byte" else "char"
  with pytest.raises(ValueError, match=f"holds a '{kind}' tokenizer.*fresh --workdir"):
    T.get_tokenizer(other, str(tmp_path), texts, cfg)


def test_get_tokenizer_errors():
  with pytest.raises(ValueError, match="no texts"):
    T.get_tokenizer("word", None)
  with pytest.raises(ValueError, match="not one of"):
    T.get_tokenizer("wordpiece", None, lambda: [SYNTH])


def test_tokenizer_from_path(spm_synth, tmp_path):
  spm_synth.save(str(tmp_path / "run"))
  for p in ("run", f"run/{T.TOKENIZER_FILE}", f"run/{T.SPM_MODEL_FILE}"):
    assert T.tokenizer_from_path(str(tmp_path / p)).identity() == spm_synth.identity(), p
  with pytest.raises(FileNotFoundError, match="tokenizer_path"):
    T.tokenizer_from_path(str(tmp_path / "nope"))
  (tmp_path / "junk.model").write_bytes(b"not a model")
  with pytest.raises(ValueError, match="not a readable SentencePiece model"):
    T.tokenizer_from_path(str(tmp_path / "junk.model"))


def _train_raw_spm(**kwargs) -> bytes:
  w = io.BytesIO()
  spm.SentencePieceTrainer.train(
      sentence_iterator=iter(SYNTH.splitlines()), model_writer=w, vocab_size=300,
      num_threads=1, minloglevel=2, **kwargs,
  )
  return w.getvalue()


def test_bare_spm_model_must_use_our_special_ids(tmp_path):
  (tmp_path / "default.model").write_bytes(_train_raw_spm())  # spm defaults: unk=0, no pad
  with pytest.raises(ValueError, match=r"special ids.*pad_id=-1 \(need 0\)"):
    T.tokenizer_from_path(str(tmp_path / "default.model"))
  # Made the other way (user-defined symbols), a model with our ids is accepted.
  proto = _train_raw_spm(
      pad_id=0, bos_id=1, eos_id=2, unk_id=3, pad_piece="<pad>", bos_piece="<bos>",
      eos_piece="<eos>", unk_piece="<unk>", user_defined_symbols=["<mask>", "<cls>", "<sep>"],
  )
  (tmp_path / "ours.model").write_bytes(proto)
  tok = T.tokenizer_from_path(str(tmp_path / "ours.model"))
  assert tok.kind == "spm" and tok.vocab_size == 300


def test_get_tokenizer_from_tokenizer_path(spm_synth, tmp_path):
  spm_synth.save(str(tmp_path / "pretrained"))
  cfg = ml_collections.ConfigDict({"tokenizer_path": str(tmp_path / "pretrained")})

  def no_texts():
    raise AssertionError("must not train when data.tokenizer_path is set")

  tok = T.get_tokenizer("spm", str(tmp_path / "run"), no_texts, cfg)
  assert tok.identity() == spm_synth.identity()
  assert T.load_tokenizer(str(tmp_path / "run")).identity() == spm_synth.identity()
  assert T.get_tokenizer("spm", str(tmp_path / "run"), no_texts, cfg).identity() == tok.identity()
  with pytest.raises(ValueError, match="data.tokenizer_path.*holds a 'spm'"):
    T.get_tokenizer("word", str(tmp_path / "run2"), no_texts, cfg)
  T.WordTokenizer.train([SYNTH]).save(str(tmp_path / "words"))
  cfg.tokenizer_path = str(tmp_path / "words")
  with pytest.raises(ValueError, match="holds a 'spm' tokenizer"):
    T.get_tokenizer("word", str(tmp_path / "run"), no_texts, cfg)
  cfg.tokenizer_path = str(tmp_path / "other")
  T.SentencePieceTokenizer.train([_synthetic(seed=3)], vocab_size=400).save(cfg.tokenizer_path)
  with pytest.raises(ValueError, match="differs from data.tokenizer_path"):
    T.get_tokenizer("spm", str(tmp_path / "run"), no_texts, cfg)
