"""Exact and MinHash/LSH near-duplicate removal."""

import numpy as np
import pytest

from jaxlm.data import dedup


def _edit(doc: str, rng: np.random.Generator, changes: int) -> str:
  words = doc.split()
  for p in rng.choice(len(words), changes, replace=False):
    words[p] = f"edit{p}"
  return " ".join(words)


def _corpus(seed: int = 0):
  """200 distinct docs, 20 near-copies (3 of 300 words changed), 10 rewrites (15 changed)."""
  rng = np.random.default_rng(seed)
  vocab = [f"w{i}" for i in range(3000)]
  docs = [" ".join(rng.choice(vocab, 300)) for _ in range(200)]
  copy_src = rng.choice(200, 20, replace=False)
  rewrite_src = rng.choice(200, 10, replace=False)
  copies = [_edit(docs[s], rng, 3) for s in copy_src]
  rewrites = [_edit(docs[s], rng, 15) for s in rewrite_src]
  return docs, copies, copy_src, rewrites, rewrite_src


def test_exact_duplicates_keeps_first_and_is_byte_exact():
  docs = ["a", "b", "a", "A", "a ", "b", ""]
  assert dedup.exact_duplicates(docs) == [True, True, False, True, True, False, True]
  assert dedup.exact_duplicate_of(docs) == [-1, -1, 0, -1, -1, 1, -1]
  assert dedup.exact_duplicates(iter(["x", "x"])) == [True, False]


def test_shingles_and_exact_jaccard():
  assert dedup.shingle_hashes("", 5).size == 0
  assert dedup.shingle_hashes("one two", 5).size == 1  # Short text: one shingle of all words.
  assert dedup.shingle_hashes("a b c d e f", 5).size == 2
  # Word shingles ignore case and punctuation.
  assert dedup.jaccard("The cat, sat on the mat.", "the cat sat on THE mat", 3) == 1.0
  assert dedup.jaccard("a b c d e f g h", "a b c d e f g x", 5) == pytest.approx(3 / 5)
  assert dedup.jaccard("abcdef", "abcdeg", 3, unit="char") == pytest.approx(3 / 5)
  with pytest.raises(ValueError, match="unit"):
    dedup.shingle_hashes("x", 5, unit="byte")


def test_signatures_deterministic_by_seed():
  docs = ["the quick brown fox jumps over the lazy dog", "lorem ipsum dolor sit amet", ""]
  s0 = dedup.minhash_signatures(docs, num_perm=64, seed=0)
  assert s0.shape == (3, 64) and s0.dtype == np.uint32
  np.testing.assert_array_equal(s0, dedup.minhash_signatures(docs, num_perm=64, seed=0))
  assert not np.array_equal(s0, dedup.minhash_signatures(docs, num_perm=64, seed=1))
  assert (s0[2] == np.iinfo(np.uint32).max).all()  # Empty document.
  # Pinned values: a change here means stored signatures or dedup results would change, and
  # hashes must never depend on the process (no salted hash()).
  pin = dedup.minhash_signatures(["hello world", "HELLO, world!"], num_perm=4, seed=0)
  assert pin.tolist() == [[2712386518, 2169745340, 883848686, 4133148793]] * 2
  pin = dedup.minhash_signatures(["hello world"], num_perm=4, seed=0, unit="char")
  assert pin.tolist() == [[556282560, 338278186, 218341801, 623358344]]


def test_signatures_independent_of_blocking(monkeypatch):
  docs, copies, *_ = _corpus()
  docs = docs[:30] + copies[:5] + ["", "short"]
  full = dedup.minhash_signatures(docs, num_perm=32, unit="char")
  monkeypatch.setattr(dedup, "_MAX_BLOCK", 32 * 7)  # Forces documents split across blocks.
  np.testing.assert_array_equal(full, dedup.minhash_signatures(docs, num_perm=32, unit="char"))


def test_signature_agreement_estimates_jaccard():
  rng = np.random.default_rng(1)
  vocab = [f"w{i}" for i in range(500)]
  a = " ".join(rng.choice(vocab, 400))
  b = _edit(a, rng, 20)
  sig = dedup.minhash_signatures([a, b], num_perm=256)
  est = (sig[0] == sig[1]).mean()
  assert est == pytest.approx(dedup.jaccard(a, b), abs=0.08)


def test_lsh_params_formula():
  assert dedup.lsh_params(0.8, 128) == (21, 6)
  assert dedup.lsh_params(0.5, 128) == (42, 3)
  assert dedup.lsh_params(1.0, 128) == (1, 128)
  for t in (0.5, 0.7, 0.8, 0.9):
    b, r = dedup.lsh_params(t, 128)
    assert b * r <= 128
    assert dedup.candidate_probability(t, b, r) >= 0.995
  with pytest.raises(ValueError):
    dedup.lsh_params(0.0)


def test_near_duplicates_removes_planted_copies_only():
  docs, copies, copy_src, rewrites, rewrite_src = _corpus()
  assert min(dedup.jaccard(docs[s], c) for s, c in zip(copy_src, copies, strict=True)) > 0.9
  assert max(dedup.jaccard(docs[s], r) for s, r in zip(rewrite_src, rewrites, strict=True)) < 0.7
  corpus = docs + copies + rewrites
  dup_of = dedup.near_duplicate_of(corpus, threshold=0.8)
  assert dup_of[:200] == [-1] * 200  # No distinct document removed.
  assert dup_of[200:220] == [int(s) for s in copy_src]  # Every copy removed, source found.
  assert dup_of[220:] == [-1] * 10  # Heavier rewrites kept.
  keep = dedup.near_duplicates(corpus, threshold=0.8)
  assert sum(keep) == 210 and keep == [d < 0 for d in dup_of]


def test_near_duplicates_first_of_cluster_and_chains():
  base = " ".join(f"w{i}" for i in range(200))
  same = [base, base, base + " tail", "unrelated text entirely different words here"]
  assert dedup.near_duplicates(same) == [True, False, False, True]
  assert dedup.near_duplicates([]) == []
  assert dedup.near_duplicates(["", ""]) == [True, False]
