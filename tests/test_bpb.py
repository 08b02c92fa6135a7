"""Bits per byte is per UTF-8 byte of the source text, for every tokenizer and family.

bpb = summed nats over the evaluated targets / (ln 2 * the UTF-8 bytes of the source
text those targets cover). Each token covers its own text and the whitespace before
it; a document's `<eos>` covers its newline (and any trailing whitespace), so a
document of n bytes is n + 1 bytes. The byte counts below are worked out by hand from
the corpus, and checked against what the CLI code path writes to metrics.jsonl.
"""

import json
import math
import os

import jax
import numpy as np
import pytest
from conftest import tiny_config

from jaxlm.data import tokenizers as T

# A word corpus with what the old per-vocabulary count got wrong: an out-of-vocabulary
# word (`zebra`, 5 bytes, not "<unk> " = 6), a non-ASCII word, leading spaces, a run of
# spaces, trailing spaces. One document a line (doc_unit=line).
CORPUS_LINES = ["the cat sat", "  the dog  sat", "the cat zebra", "naïve dog sat "]
# Words seen twice or more are in the vocabulary (word_min_count=2): the cat sat dog.
# Source bytes, line by line (+1 each for its newline, which its <eos> covers):
#   "the cat sat"      11 + 1 = 12
#   "  the dog  sat"   14 + 1 = 15
#   "the cat zebra"    13 + 1 = 14
#   "naïve dog sat "   15 + 1 = 16   (ï is 2 bytes; the trailing space goes to the <eos>)
CORPUS_BYTES = 57


def test_word_bytes_by_hand():
  tok = T.WordTokenizer(["the", "cat", "sat"])
  text = "  the cat\n\nzebra  sat \n"
  ids, nbytes = tok.encode_document(text)
  unk, eos = T.UNK_ID, T.EOS_ID
  # "  the" 5, " cat" 4, "\n" 1, "\n" 1, "zebra" 5, "  sat" 5, " \n" 2, document <eos> 1.
  assert ids.tolist() == [7, 8, eos, eos, unk, 9, eos, eos]
  assert nbytes.tolist() == [5, 4, 1, 1, 5, 5, 2, 1]
  assert nbytes.sum() == len(text.encode()) + 1
  # Negative control: the vocabulary's count (word + 1, "<unk> " = 6, <eos> 0) is wrong here.
  assert tok.token_bytes()[ids].sum() != nbytes.sum()


@pytest.mark.parametrize("kind", ["byte", "char", "word", "word_lower", "word_no_eos", "spm"])
def test_document_bytes_sum_to_source_bytes(kind):
  texts = ["Héllo  wörld,\n\n  the ▁ cat sat.  ", "日本語 text\twith\ttabs\n", "x"]
  if kind == "byte":
    tok = T.ByteTokenizer()
  elif kind == "char":
    tok = T.CharTokenizer.train(["Hello world the cat"])  # Unknown chars: their real bytes.
  elif kind.startswith("word"):
    tok = T.WordTokenizer.train(["the cat sat hello"], lowercase=kind == "word_lower",
                                eos_per_line=kind != "word_no_eos")
  else:
    tok = T.SentencePieceTokenizer.train(texts * 30, vocab_size=290)
  for text in texts:
    ids, nbytes = tok.encode_document(text)
    assert ids[:-1].tolist() == tok.encode(text).tolist() and ids[-1] == T.EOS_ID
    assert len(nbytes) == len(ids) and (nbytes >= 0).all()
    assert nbytes.sum() == len(text.encode("utf-8")) + 1, (kind, text)


def _write_corpus(tmp_path) -> str:
  """The corpus is the train file and, whole, the validation file (data.eval_path)."""
  path = tmp_path / "corpus.txt"
  path.write_text("\n".join(CORPUS_LINES) + "\n", encoding="utf-8")
  return str(path)


def _word_config(c):
  c.data.doc_unit = "line"
  c.data.tokenizer = "word"
  c.data.word_min_count = 2
  c.data.shuffle = False
  return c


def _last_eval(workdir: str) -> dict:
  rows = [json.loads(line) for line in open(os.path.join(workdir, "metrics.jsonl"))]
  return [r for r in rows if "eval_bpb" in r][-1]


def test_ngram_run_bpb_by_hand(tmp_path, data_dir):
  from jaxlm import ngram_run
  from jaxlm.config import base_config

  c = _word_config(base_config())
  c.model.family = "ngram"
  c.data.path = c.data.eval_path = _write_corpus(tmp_path)
  c.data.data_dir = data_dir
  c.ngram.order = 2
  wd = str(tmp_path / "ngram")
  ngram_run.train_and_evaluate(c, wd)
  row = _last_eval(wd)
  # 12 words + 4 <eos> predicted, over all 57 bytes.
  assert row["eval_tokens"] == 16
  nats = row["eval_loss"] * row["eval_tokens"]
  assert row["eval_bpb"] == pytest.approx(nats / (math.log(2) * CORPUS_BYTES), rel=1e-9)


def test_trainer_eval_bpb_by_hand(tmp_path, data_dir):
  from jaxlm import train

  c = _word_config(tiny_config(_write_corpus(tmp_path), data_dir))
  c.data.eval_path = c.data.path
  c.data.batch_size, c.data.seq_len = 8, 8
  c.num_train_steps, c.eval_every_steps, c.checkpoint_every_steps = 1, 1, 1
  c.eval_steps = -1
  wd = str(tmp_path / "gpt")
  train.train_and_evaluate(c, wd, jax.devices()[:1])
  row = _last_eval(wd)
  # Packed, every token but the stream's first ("the", 3 bytes) is a target once.
  assert row["eval_tokens"] == 16 - 1
  nats = row["eval_loss"] * row["eval_tokens"]
  assert row["eval_bpb"] == pytest.approx(nats / (math.log(2) * (CORPUS_BYTES - 3)), rel=1e-5)


def test_eval_batches_carry_source_bytes(tmp_path, data_dir):
  from jaxlm.data import pipeline

  c = _word_config(tiny_config(_write_corpus(tmp_path), data_dir))
  c.data.eval_path = c.data.path
  tok = T.get_tokenizer("word", None, lambda: CORPUS_LINES, c.data)
  batches = pipeline.eval_batches(c.data, tok)
  total = sum(int(np.sum(pipeline.target_bytes(b) * (b["tokens"][:, 1:] != 0)))
              for b in batches)
  assert total == CORPUS_BYTES - 3
  # Masked LM scores tokens[:, :-1]: then the stream's first token counts, its last not.
  assert pipeline.target_bytes(batches[0], "masked_lm").shape == batches[0]["tokens"][:, 1:].shape
  with pytest.raises(KeyError, match="bytes"):
    pipeline.target_bytes({"tokens": batches[0]["tokens"]})
