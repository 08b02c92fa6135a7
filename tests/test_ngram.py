"""Tests for the interpolated modified Kneser-Ney n-gram LM (jaxlm/ngram.py)."""

from __future__ import annotations

import math
from collections import Counter, defaultdict

import numpy as np
import pytest

from jaxlm.data.tokenizers import BOS_ID, EOS_ID, PAD_ID, UNK_ID
from jaxlm.ngram import KneserNeyLM, modified_kn_discounts

A, B, C = 7, 8, 9  # Ordinary tokens of the hand-computed example; vocab_size = 10.


def _reference_model(docs, order: int, vocab: int, bos_pad: int = 1):
  """Slow, literal dict-of-tuples implementation of the documented model: context -> p(.)."""
  raw = [Counter() for _ in range(order + 1)]
  for d in docs:
    s = [BOS_ID] * bos_pad + [int(t) for t in d] + [EOS_ID]
    for i in range(bos_pad, len(s)):
      for k in range(1, min(order, i + 1) + 1):  # No n-gram reaches before the padding.
        raw[k][tuple(s[i - k + 1 : i + 1])] += 1
  adj = [None] * (order + 1)
  adj[order] = dict(raw[order])
  for k in range(order - 1, 0, -1):
    left = defaultdict(set)
    for g in raw[k + 1]:
      left[g[1:]].add(g[0])
    adj[k] = {g: (c if g[0] == BOS_ID else len(left[g])) for g, c in raw[k].items()}
  by_ctx = [None] + [defaultdict(dict) for _ in range(order)]
  disc = [None]
  for k in range(1, order + 1):
    for g, c in adj[k].items():
      by_ctx[k][g[:-1]][g[-1]] = c
    n = Counter(adj[k].values())
    if n[1] and n[2] and n[3]:
      y = n[1] / (n[1] + 2 * n[2])
      d = (1 - 2 * y * n[2] / n[1], 2 - 3 * y * n[3] / n[2], 3 - 4 * y * n[4] / n[3])
      if not all(0 < x <= r for r, x in enumerate(d, 1)):
        d = (0.5, 1.0, 1.5)
    else:
      d = (0.5, 1.0, 1.5)
    disc.append(d)

  def prob(h: tuple, w: int) -> float:
    k = len(h) + 1
    if k > 1:
      lower = prob(h[1:], w)
    else:
      lower = 0.0 if w in (PAD_ID, BOS_ID) else 1 / (vocab - 2)
    counts = by_ctx[k].get(h)
    if not counts:
      return lower
    dk = disc[k]
    total = sum(counts.values())
    types = Counter(min(c, 3) for c in counts.values())
    gamma = (dk[0] * types[1] + dk[1] * types[2] + dk[2] * types[3]) / total
    c = counts.get(w, 0)
    return (c - dk[min(c, 3) - 1] if c else 0.0) / total + gamma * lower

  def distribution(context) -> np.ndarray:
    h = tuple(int(t) for t in context)[max(0, len(context) - order + 1) :] if order > 1 else ()
    return np.array([prob(h, w) for w in range(vocab)])

  return distribution, [d != (0.5, 1.0, 1.5) for d in disc[1:]]


def _hand_corpus() -> list[np.ndarray]:
  return [np.array([A, A, A, A, B, C]), np.array([A, B, A, B, A, C, A, B, B, C, B, C])]


def test_bigram_matches_hand_computation():
  lm = KneserNeyLM(2, 10).fit(_hand_corpus())
  # Padded docs: <bos> a a a a b c <eos> and <bos> a b a b a c a b b c b c <eos>.
  #
  # Bigram (highest order, raw) counts:
  #   <bos> a: 2 | a a: 3, a b: 4, a c: 1 | b a: 2, b b: 1, b c: 3 | c a: 1, c b: 1, c <eos>: 2
  # Count-of-counts: n1 = 4 (ac bb ca cb), n2 = 3 (<bos>a ba c<eos>), n3 = 2 (aa bc), n4 = 1 (ab)
  #   Y  = 4 / (4 + 2*3)          = 2/5
  #   D1 = 1 - 2 * 2/5 * 3/4      = 2/5
  #   D2 = 2 - 3 * 2/5 * 2/3      = 6/5
  #   D3+ = 3 - 4 * 2/5 * 1/2     = 11/5
  #
  # Unigram continuation counts N1+(. w), distinct left neighbours:
  #   a: {<bos>, a, b, c} = 4, b: {a, b, c} = 3, c: {a, b} = 2, <eos>: {c} = 1; total 10.
  # Count-of-counts n1 = n2 = n3 = n4 = 1:
  #   Y = 1/3, D1 = 1 - 2/3 = 1/3, D2 = 2 - 1 = 1, D3+ = 3 - 4/3 = 5/3
  # gamma() = (1/3 * 1 + 1 * 1 + 5/3 * 2) / 10 = 7/15; uniform floor 1/8 (10 ids minus PAD, BOS).
  #   p1(a)     = (4 - 5/3) / 10 + 7/15 * 1/8 = 28/120 + 7/120 = 35/120 = 7/24
  #   p1(b)     = (3 - 5/3) / 10 + 7/120      = 16/120 + 7/120 = 23/120
  #   p1(c)     = (2 - 1)   / 10 + 7/120      = 19/120
  #   p1(<eos>) = (1 - 1/3) / 10 + 7/120      = 15/120
  #   p1(unk) = p1(4) = p1(5) = p1(6) = 7/120 (sum: 35+23+19+15+4*7 = 120)
  #
  # Context b: c(b) = 2 + 1 + 3 = 6, N1 = 1 (bb), N2 = 1 (ba), N3+ = 1 (bc)
  #   gamma(b) = (2/5 + 6/5 + 11/5) / 6 = 19/30
  #   p(a | b)     = (2 - 6/5) / 6  + 19/30 * 7/24   = 96/720 + 133/720 = 229/720
  #   p(b | b)     = (1 - 2/5) / 6  + 19/30 * 23/120 = 360/3600 + 437/3600 = 797/3600
  #   p(c | b)     = (3 - 11/5) / 6 + 19/30 * 19/120 = 480/3600 + 361/3600 = 841/3600
  #   p(<eos> | b) = 19/30 * 15/120 = 19/240          (bigram unseen: all from the lower order)
  #   p(unk | b)   = 19/30 * 7/120  = 133/3600
  # Context <bos>: c = 2, N2 = 1 -> gamma = (6/5) / 2 = 3/5
  #   p(a | <bos>) = (2 - 6/5) / 2 + 3/5 * 7/24 = 2/5 + 7/40 = 23/40
  #   p(b | <bos>) = 3/5 * 23/120 = 23/200
  # Context unk: never seen -> backs off entirely: p(a | unk) = p1(a) = 7/24.
  assert lm.count_of_counts.tolist() == [[1, 1, 1, 1], [4, 3, 2, 1]]
  np.testing.assert_allclose(lm.discounts[1], [2 / 5, 6 / 5, 11 / 5], rtol=0, atol=1e-12)
  np.testing.assert_allclose(lm.discounts[0], [1 / 3, 1, 5 / 3], rtol=0, atol=1e-12)
  assert [lm.count([w]) for w in (A, B, C, EOS_ID, UNK_ID)] == [4, 3, 2, 1, 0]
  assert lm.count([A, B]) == 4 and lm.count([BOS_ID, A]) == 2 and lm.count([B, EOS_ID]) == 0
  assert lm.context_counts([B]) == {"total": 6, "n1": 1, "n2": 1, "n3_plus": 1}

  p1 = {A: 7 / 24, B: 23 / 120, C: 19 / 120, EOS_ID: 15 / 120, UNK_ID: 7 / 120, 4: 7 / 120}
  got1 = lm.distribution([])
  for w, p in p1.items():
    assert abs(got1[w] - p) < 1e-12
  expected_b = {
      A: 229 / 720, B: 797 / 3600, C: 841 / 3600, EOS_ID: 19 / 240, UNK_ID: 133 / 3600,
      5: 133 / 3600, PAD_ID: 0.0, BOS_ID: 0.0,
  }
  dist_b = lm.distribution([B])
  for w, p in expected_b.items():
    assert abs(dist_b[w] - p) < 1e-12, (w, dist_b[w], p)
    assert abs(math.exp(lm.log_prob([A, B], w)) - p) < 1e-12  # Only the last id is used.
  assert abs(math.exp(lm.log_prob([BOS_ID], A)) - 23 / 40) < 1e-12
  assert abs(math.exp(lm.log_prob([UNK_ID], A)) - 7 / 24) < 1e-12
  # score([b]) predicts b after <bos>, then <eos> after b.
  nll, num = lm.score(np.array([B]))
  assert num == 2
  assert abs(nll - -(math.log(23 / 200) + math.log(19 / 240))) < 1e-12


@pytest.mark.parametrize("full_pad", [False, True])
@pytest.mark.parametrize("zipf", [False, True])
def test_matches_reference_implementation(zipf, full_pad):
  rng = np.random.default_rng(1)
  vocab = 60 if zipf else 14
  if zipf:  # Skewed counts: most orders use the closed-form discounts.
    p = 1.0 / np.arange(1, vocab - 6)
    docs = [rng.choice(vocab - 7, size=rng.integers(0, 40), p=p / p.sum()) + 7 for _ in range(150)]
  else:  # Flat counts on a tiny vocabulary: low orders fall back.
    docs = [rng.integers(3, 12, size=rng.integers(0, 25)) for _ in range(60)]
  contexts = [[], [BOS_ID], [BOS_ID, BOS_ID, BOS_ID], [13, 5], [EOS_ID], [BOS_ID, int(docs[0][0])]]
  contexts += [list(d[i : i + 4]) for d in docs[:6] for i in range(0, max(len(d) - 4, 0), 3)]
  contexts += [list(rng.integers(0, vocab, size=rng.integers(1, 5))) for _ in range(15)]
  formula_used = []
  for order in (1, 2, 3, 4):
    pad = max(order - 1, 1) if full_pad else 1
    lm = KneserNeyLM(order, vocab, bos_pad=pad).fit(docs)
    reference, formula = _reference_model(docs, order, vocab, pad)
    assert [not f for f in lm.discount_fallback_used] == formula
    formula_used += formula
    for ctx in contexts:
      np.testing.assert_allclose(lm.distribution(ctx), reference(ctx), rtol=0, atol=1e-12)
  assert any(formula_used) and (zipf or not all(formula_used))


@pytest.mark.parametrize("order", [1, 2, 3, 4, 5])
def test_distributions_normalised(order):
  rng = np.random.default_rng(order)
  vocab = 40
  # Ids 30..39 never occur in training.
  docs = [rng.integers(3, 30, size=rng.integers(0, 40)) for _ in range(300)]
  lm = KneserNeyLM(order, vocab).fit(docs)
  contexts = [[], [BOS_ID] * 4, [BOS_ID, 5], [35, 36], [5, 39, 7], list(range(3, 12))]
  contexts += [list(d[i : i + order]) for d in docs[:20] for i in range(0, max(len(d) - order, 0))]
  contexts += [list(rng.integers(0, vocab, size=rng.integers(0, 6))) for _ in range(100)]
  for ctx in contexts:
    d = lm.distribution(ctx)
    assert abs(d.sum() - 1.0) < 1e-9, (ctx, d.sum())
    assert d[PAD_ID] == 0 and d[BOS_ID] == 0
    mask = np.ones(vocab, bool)
    mask[[PAD_ID, BOS_ID]] = False
    assert np.all(d[mask] > 0)
  for ctx in contexts[:40]:
    w = int(rng.integers(2, vocab))
    assert abs(math.exp(lm.log_prob(ctx, w)) - lm.distribution(ctx)[w]) < 1e-14
  # score() is the sum of log_prob with the documented padding.
  doc = docs[3]
  s = [BOS_ID] + doc.tolist() + [EOS_ID]
  want = -sum(lm.log_prob(s[max(0, i - order + 1) : i], s[i]) for i in range(1, len(s)))
  nll, num = lm.score(doc)
  assert num == len(doc) + 1 and abs(nll - want) < 1e-9


def _structured_docs(rng, num_docs: int) -> list[np.ndarray]:
  """Second-order Markov text: the next id is a fixed function of the last two, 10% noise."""
  vocab_lo, vocab_hi = 7, 47
  table = rng.integers(vocab_lo, vocab_hi, size=(vocab_hi, vocab_hi))
  docs = []
  for _ in range(num_docs):
    doc = list(rng.integers(vocab_lo, vocab_hi, size=2))
    for _ in range(int(rng.integers(20, 60))):
      nxt = table[doc[-2], doc[-1]] if rng.random() > 0.1 else rng.integers(vocab_lo, vocab_hi)
      doc.append(int(nxt))
    docs.append(np.array(doc))
  return docs


def test_higher_order_lowers_perplexity():
  docs = _structured_docs(np.random.default_rng(0), 500)
  train, test = docs[:400], docs[400:]
  ppl = {n: KneserNeyLM(n, 50).fit(train).evaluate(test)["ppl"] for n in (1, 2, 3, 4)}
  assert ppl[2] < ppl[1] and ppl[3] < ppl[2]
  assert ppl[3] < 0.3 * ppl[1], ppl
  assert ppl[4] < 1.2 * ppl[3], ppl  # Extra order must not hurt much on 2nd-order data.
  res = KneserNeyLM(3, 50).fit(train).evaluate(test)
  assert res["num_tokens"] == sum(len(d) + 1 for d in test)
  assert abs(res["ppl"] - math.exp(res["loss"])) < 1e-9


def test_save_load_round_trip(tmp_path):
  rng = np.random.default_rng(5)
  docs = [rng.integers(3, 25, size=rng.integers(0, 30)) for _ in range(100)]
  lm = KneserNeyLM(4, 30, discount_fallback=(0.4, 0.9, 1.3)).fit(docs)
  path = str(tmp_path / "kn4")  # No .npz suffix: the file is written exactly at `path`.
  lm.save(path)
  with np.load(path, allow_pickle=False) as z:  # Loadable without pickle.
    assert int(z["order"]) == 4
  lm2 = KneserNeyLM.load(path)
  assert (lm2.order, lm2.vocab_size, lm2.discount_fallback) == (4, 30, (0.4, 0.9, 1.3))
  np.testing.assert_array_equal(lm2.discounts, lm.discounts)
  assert lm2.discount_fallback_used == lm.discount_fallback_used
  assert lm2.num_ngrams == lm.num_ngrams
  for ctx in [[], [BOS_ID] * 3, [5, 6], [27, 28, 29], list(docs[0][:5]), [4, 9, 11]]:
    np.testing.assert_array_equal(lm2.distribution(ctx), lm.distribution(ctx))
  assert lm2.evaluate(docs[:20]) == lm.evaluate(docs[:20])


def test_unseen_and_unk_tokens_get_positive_probability():
  rng = np.random.default_rng(2)
  docs = [rng.integers(7, 20, size=20) for _ in range(50)]  # Neither UNK nor 20..29 occur.
  lm = KneserNeyLM(3, 30).fit(docs)
  for ctx in ([], [7, 8], [BOS_ID, BOS_ID], [25, 26], [UNK_ID]):
    for w in (UNK_ID, 25, EOS_ID):
      lp = lm.log_prob(ctx, w)
      assert math.isfinite(lp) and lp < 0
  # An unseen id in a test document gives a finite loss.
  nll, _ = lm.score(np.array([7, 25, UNK_ID, 8]))
  assert math.isfinite(nll)
  # PAD and BOS are never predicted.
  assert lm.log_prob([7], PAD_ID) == -math.inf and lm.log_prob([7], BOS_ID) == -math.inf
  # Once seen, UNK is an ordinary token.
  lm_unk = KneserNeyLM(3, 30).fit(docs + [np.array([7, UNK_ID, 8])] * 5)
  assert lm_unk.log_prob([BOS_ID, 7], UNK_ID) > lm.log_prob([BOS_ID, 7], UNK_ID)


def test_modified_discounts_follow_formula():
  # Order 1 (raw counts). One document; ids 7.. get counts 1,1,1,1,2,2,2,3,3,4,5,9 and <eos> 1:
  # n1 = 5, n2 = 3, n3 = 2, n4 = 1.
  #   Y = 5 / (5 + 6) = 5/11, D1 = 1 - 2 * 5/11 * 3/5 = 5/11,
  #   D2 = 2 - 3 * 5/11 * 2/3 = 12/11, D3+ = 3 - 4 * 5/11 * 1/2 = 23/11.
  counts = [1, 1, 1, 1, 2, 2, 2, 3, 3, 4, 5, 9]
  doc = np.repeat(np.arange(7, 7 + len(counts)), counts)
  np.random.default_rng(0).shuffle(doc)
  lm = KneserNeyLM(1, 7 + len(counts)).fit([doc])
  assert lm.count_of_counts.tolist() == [[5, 3, 2, 1]]
  np.testing.assert_allclose(lm.discounts[0], [5 / 11, 12 / 11, 23 / 11], rtol=0, atol=1e-12)
  assert lm.discount_fallback_used == [False]
  # Each order's discounts come from that order's own count-of-counts. With 193 word types and
  # 10k tokens every type has several distinct left neighbours, so the unigram continuation
  # counts have no singletons (n1 = 0) and order 1 falls back; orders 2 and 3 use the formula.
  rng = np.random.default_rng(3)
  zipf = 1.0 / np.arange(1, 194)
  docs = [rng.choice(193, size=rng.integers(5, 60), p=zipf / zipf.sum()) + 7 for _ in range(300)]
  lm3 = KneserNeyLM(3, 200).fit(docs)
  assert lm3.count_of_counts[0, 0] == 0 and lm3.discount_fallback_used == [True, False, False]
  np.testing.assert_array_equal(lm3.discounts[0], [0.5, 1.0, 1.5])
  for k in (1, 2):
    d, used = modified_kn_discounts(lm3.count_of_counts[k])
    assert not used
    n1, n2, n3, n4 = lm3.count_of_counts[k]
    y = n1 / (n1 + 2 * n2)
    want = [1 - 2 * y * n2 / n1, 2 - 3 * y * n3 / n2, 3 - 4 * y * n4 / n3]
    np.testing.assert_allclose(lm3.discounts[k], want, rtol=0, atol=1e-12)
    np.testing.assert_allclose(d, want, rtol=0, atol=1e-12)


def test_discount_fallbacks():
  # No doubletons: D2 is undefined, so the whole order falls back.
  assert modified_kn_discounts([4, 0, 1, 0]) == ((0.5, 1.0, 1.5), True)
  assert modified_kn_discounts([0, 0, 0, 0], (0.3, 0.6, 0.9)) == ((0.3, 0.6, 0.9), True)
  # Many triples relative to doubletons make D2 = 2 - 3Y n3/n2 negative.
  assert modified_kn_discounts([10, 1, 50, 1])[1]
  # n4 = 0 is fine: D3+ = 3.
  d, used = modified_kn_discounts([4, 3, 2, 0])
  assert not used and d[2] == 3.0
  lm = KneserNeyLM(2, 10).fit([np.array([7, 8, 9])])  # All counts 1.
  assert lm.discount_fallback_used == [True, True]
  assert abs(lm.distribution([8]).sum() - 1) < 1e-12


def test_input_validation_and_unfitted_model():
  lm = KneserNeyLM(3, 10)
  d = lm.distribution([4, 5])
  assert abs(d.sum() - 1) < 1e-12 and d[EOS_ID] == pytest.approx(1 / 8)
  with pytest.raises(ValueError):
    lm.fit([np.array([7, PAD_ID])])
  with pytest.raises(ValueError):
    lm.fit([np.array([7, 10])])
  with pytest.raises(ValueError):
    lm.log_prob([7], 10)
  with pytest.raises(TypeError):
    lm.fit([np.array([7.0])])
  with pytest.raises(ValueError):
    KneserNeyLM(0, 10)
  assert lm.fit([np.array([], np.int32), []]).count([EOS_ID]) == 1


def test_single_bos_padding_differs_from_repeated_bos_at_sentence_starts():
  """SRILM/KenLM's `<s> w`: the first word's highest order is the bigram. Repeating <s> to
  order-1 (the old default) discounts the same counts once per order: other probabilities."""
  docs = _structured_docs(np.random.default_rng(3), 200)
  single = KneserNeyLM(4, 50).fit(docs)
  full = KneserNeyLM(4, 50, bos_pad=3).fit(docs)
  first = docs[0][0]
  assert single.count([BOS_ID, first]) > 0 and single.count([BOS_ID, BOS_ID, first]) == 0
  assert full.count([BOS_ID, BOS_ID, BOS_ID, first]) > 0
  # The bigram <s> w is the whole story for a first word in the standard model.
  assert abs(single.log_prob([BOS_ID], first) - single.log_prob([5, 6, BOS_ID], first)) < 1e-12
  assert abs(single.log_prob([BOS_ID], first) - full.log_prob([BOS_ID] * 3, first)) > 1e-3
  # Mid-sentence n-grams (no BOS in reach) are counted identically.
  assert single.count(list(docs[0][5:9])) == full.count(list(docs[0][5:9]))
  with pytest.raises(ValueError, match="bos_pad"):
    KneserNeyLM(4, 50, bos_pad=4)
