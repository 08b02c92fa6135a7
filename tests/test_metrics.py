"""Metrics against hand-computed values and against sacrebleu / scikit-learn."""

import json
import math

import numpy as np
import pytest
import sacrebleu

from jaxlm import metrics

# A 3-class example, worked by hand.
#   labels: 0 0 0 | 1 1 1 | 2 2 2 2 2
#   preds:  0 0 1 | 1 1 2 | 2 2 2 0 1
# Confusion matrix (rows = true, columns = predicted):
#        0  1  2     support
#   0 [  2  1  0 ]   3
#   1 [  0  2  1 ]   3
#   2 [  1  1  3 ]   5
#   predicted: 3  4  4, tp = 2 2 3, n = 11
# precision = tp / predicted = 2/3, 1/2, 3/4
# recall    = tp / support   = 2/3, 2/3, 3/5
# f1 = 2tp / (2tp + fp + fn): 4/6 = 2/3, 4/(4+2+1) = 4/7, 6/(6+1+2) = 2/3
# accuracy = micro P = micro R = micro F1 = 7/11
# macro P = (2/3 + 1/2 + 3/4) / 3 = 23/36
# macro R = (2/3 + 2/3 + 3/5) / 3 = 29/45
# macro F1 = (2/3 + 4/7 + 2/3) / 3 = 40/63
# weighted F1 = (3 * 2/3 + 3 * 4/7 + 5 * 2/3) / 11 = 148/231
LABELS = [0, 0, 0, 1, 1, 1, 2, 2, 2, 2, 2]
PREDS = [0, 0, 1, 1, 1, 2, 2, 2, 2, 0, 1]


def test_confusion_matrix_by_hand():
  cm = metrics.confusion_matrix(LABELS, PREDS, 3)
  np.testing.assert_array_equal(cm, [[2, 1, 0], [0, 2, 1], [1, 1, 3]])
  assert cm.dtype == np.int64


def test_confusion_matrix_mask_and_range():
  cm = metrics.confusion_matrix([0, 1, 1, 0], [0, 1, 0, 0], 2, mask=[1, 1, 1, 0])
  np.testing.assert_array_equal(cm, [[1, 0], [1, 1]])
  with pytest.raises(ValueError, match="outside"):
    metrics.confusion_matrix([0, 3], [0, 1], 3)
  with pytest.raises(ValueError, match="differ"):
    metrics.confusion_matrix([0, 1], [0], 3)


def test_classification_report_by_hand():
  r = metrics.classification_report(np.array(LABELS), PREDS, 3, class_names=["a", "b", "c"])
  approx = pytest.approx
  assert r["accuracy"] == approx(7 / 11)
  assert r["num_examples"] == 11
  pc = r["per_class"]
  assert [pc[n]["precision"] for n in "abc"] == approx([2 / 3, 1 / 2, 3 / 4])
  assert [pc[n]["recall"] for n in "abc"] == approx([2 / 3, 2 / 3, 3 / 5])
  assert [pc[n]["f1"] for n in "abc"] == approx([2 / 3, 4 / 7, 2 / 3])
  assert [pc[n]["support"] for n in "abc"] == [3, 3, 5]
  assert r["macro_precision"] == approx(23 / 36)
  assert r["macro_recall"] == approx(29 / 45)
  assert r["macro_f1"] == approx(40 / 63)
  for k in ("micro_precision", "micro_recall", "micro_f1"):
    assert r[k] == approx(7 / 11)
  assert r["weighted_f1"] == approx(148 / 231)
  assert r["confusion_matrix"] == [[2, 1, 0], [0, 2, 1], [1, 1, 3]]
  assert "f1" not in r  # Positive-class keys only for binary tasks.
  json.dumps(r)  # Plain Python types throughout.
  text = metrics.format_classification_report(r)
  assert "weighted avg" in text and "0.6349" in text  # macro F1 = 40/63.


def test_binary_keys():
  # labels 1 1 1 0 0, preds 1 0 1 1 0: tp=2, fp=1, fn=1 for class 1.
  r = metrics.classification_report([1, 1, 1, 0, 0], [1, 0, 1, 1, 0], 2, ["neg", "pos"])
  assert r["precision"] == pytest.approx(2 / 3)
  assert r["recall"] == pytest.approx(2 / 3)
  assert r["f1"] == pytest.approx(2 / 3)
  assert r["accuracy"] == pytest.approx(3 / 5)
  assert "positive=pos" in metrics.format_classification_report(r)


def test_zero_division_is_zero():
  # Never predicts class 1; class 2 occurs nowhere.
  r = metrics.classification_report([0, 0, 1, 1], [0, 0, 0, 0], 3)
  pc = r["per_class"]
  assert pc["0"]["precision"] == pytest.approx(0.5)
  assert pc["0"]["recall"] == 1.0
  assert pc["1"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 2}
  assert pc["2"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 0}
  # Macro averages over classes present in labels or preds (0 and 1), not class 2.
  assert r["macro_precision"] == pytest.approx(0.25)
  assert r["macro_recall"] == pytest.approx(0.5)
  assert r["macro_f1"] == pytest.approx((2 / 3) / 2)
  # Nothing at all: everything is 0, nothing is NaN.
  empty = metrics.classification_report([], [], 2)
  assert empty["accuracy"] == 0.0 and empty["f1"] == 0.0 and empty["macro_f1"] == 0.0
  assert not any(isinstance(v, float) and math.isnan(v) for v in empty.values())


def test_against_sklearn():
  skm = pytest.importorskip("sklearn.metrics")
  rng = np.random.default_rng(0)
  y = rng.integers(0, 4, 200)
  p = np.where(rng.random(200) < 0.6, y, rng.integers(0, 4, 200))
  p[p == 3] = 2  # Class 3 never predicted: exercises zero division.
  r = metrics.classification_report(y, p, 4)
  np.testing.assert_array_equal(r["confusion_matrix"], skm.confusion_matrix(y, p, labels=range(4)))
  assert r["accuracy"] == pytest.approx(skm.accuracy_score(y, p))
  for avg in ("macro", "micro", "weighted"):
    prec, rec, f1, _ = skm.precision_recall_fscore_support(y, p, average=avg, zero_division=0)
    assert r[f"{avg}_f1"] == pytest.approx(f1)
    if avg != "weighted":
      assert r[f"{avg}_precision"] == pytest.approx(prec)
      assert r[f"{avg}_recall"] == pytest.approx(rec)
  prec, rec, f1, sup = skm.precision_recall_fscore_support(
      y, p, labels=range(4), average=None, zero_division=0
  )
  for i in range(4):
    c = r["per_class"][str(i)]
    assert (c["precision"], c["recall"], c["f1"]) == pytest.approx((prec[i], rec[i], f1[i]))
    assert c["support"] == sup[i]


HYPS = ["the cat sat on the mat .", "a quick brown fox jumps", "hello world , again"]
REFS = ["the cat sat on a mat .", "the quick brown fox jumped", "hello world again"]


def test_bleu_chrf_match_sacrebleu():
  assert metrics.bleu(HYPS, REFS) == pytest.approx(sacrebleu.corpus_bleu(HYPS, [REFS]).score)
  assert metrics.chrf(HYPS, REFS) == pytest.approx(sacrebleu.corpus_chrf(HYPS, [REFS]).score)
  assert metrics.bleu(HYPS, REFS, tokenize="char") == pytest.approx(
      sacrebleu.corpus_bleu(HYPS, [REFS], tokenize="char").score
  )
  assert metrics.bleu(HYPS, HYPS) == pytest.approx(100.0)
  assert metrics.chrf(HYPS, HYPS) == pytest.approx(100.0)
  g = metrics.generation_metrics(HYPS, REFS)
  assert set(g) == {"bleu", "chrf"} and 0 < g["bleu"] < 100


def test_bleu_multiple_references_per_hypothesis():
  alt = ["the cat sat on the mat .", "a quick brown fox jumps"]
  per_hyp = [[REFS[0], alt[0]], [REFS[1], alt[1]], [REFS[2]]]  # Variable count.
  streams = [REFS, alt + [None]]
  assert metrics.bleu(HYPS, per_hyp) == pytest.approx(sacrebleu.corpus_bleu(HYPS, streams).score)
  assert metrics.chrf(HYPS, per_hyp) == pytest.approx(sacrebleu.corpus_chrf(HYPS, streams).score)
  with pytest.raises(ValueError):
    metrics.bleu(HYPS, REFS[:2])


def test_lm_metrics_by_hand():
  # 10 tokens, mean NLL 2 nats; 25 bytes -> 20 / (25 ln 2) bits per byte.
  m = metrics.lm_metrics(20.0, 10, 25)
  assert m["loss"] == pytest.approx(2.0)
  assert m["ppl"] == pytest.approx(math.exp(2.0))
  assert m["bpb"] == pytest.approx(20.0 / (25 * math.log(2)))
  assert "bpb" not in metrics.lm_metrics(20.0, 10, None)
  assert "bpb" not in metrics.lm_metrics(20.0, 10, 0)
  # Byte-level model: one token per byte, so bpb = loss / ln 2.
  m = metrics.lm_metrics(np.float32(6.931471805599453), 10, 10)
  assert m["bpb"] == pytest.approx(1.0, rel=1e-6)
  assert metrics.lm_metrics(1e6, 10)["ppl"] == math.inf  # Overflow-safe.
  with pytest.raises(ValueError):
    metrics.lm_metrics(1.0, 0)


def test_accumulator_exact_with_partial_padded_batch():
  rng = np.random.default_rng(0)
  nll = rng.random(70) * 5
  # Batches of 32 tokens; the last holds 6 real tokens and 26 padding slots.
  padded = np.concatenate([nll, np.full(26, 99.0)])
  mask = np.concatenate([np.ones(70), np.zeros(26)])
  acc = metrics.Accumulator()
  batch_means = []
  for i in range(0, 96, 32):
    x, w = padded[i : i + 32], mask[i : i + 32]
    acc.add(nll=((x * w).sum(), w.sum()), tokens=(w.sum(), 1))
    batch_means.append((x * w).sum() / w.sum())
  res = acc.result()
  assert res["nll"] == pytest.approx(nll.mean(), rel=1e-12)
  assert res["tokens"] == pytest.approx(70 / 3)
  assert not np.isclose(np.mean(batch_means), nll.mean())  # The naive way is biased.
  assert acc.sums()["nll"] == pytest.approx(nll.sum())
  assert metrics.MeanAccumulator is metrics.Accumulator
  acc.add(empty=(0.0, 0.0))
  assert math.isnan(acc.result()["empty"])
  acc.reset()
  assert acc.result() == {}
  with pytest.raises(TypeError):
    acc.add(nll=1.0)


def test_masked_accuracy():
  logits = np.zeros((2, 3, 4), np.float32)
  preds = np.array([[1, 2, 3], [0, 0, 1]])
  np.put_along_axis(logits, preds[..., None], 1.0, axis=-1)
  targets = np.array([[1, 2, 0], [0, 3, 1]])
  weights = np.array([[1, 1, 1], [1, 0, 0]])
  # Weighted positions: (0,0) ok, (0,1) ok, (0,2) wrong, (1,0) ok.
  assert metrics.masked_accuracy(logits, targets, weights) == (3.0, 4.0)
  assert metrics.masked_accuracy(preds, targets, weights) == (3.0, 4.0)
  assert metrics.masked_accuracy(preds, targets) == (4.0, 6.0)
  with pytest.raises(ValueError):
    metrics.masked_accuracy(np.zeros((2, 2)), targets)


# -------------------------------------- the LM loss's fast forms (jaxlm#16) equal the plain ones


def _logits_with_ties(seed: int = 0):
  rng = np.random.default_rng(seed)
  logits = rng.normal(size=(3, 7, 50)).astype(np.float32)
  logits[0, 0, [4, 9, 30]] = 9.0  # Three-way tie at the max: argmax is the first, 4.
  logits[1, 2, :] = 0.0  # A flat row: argmax is 0.
  logits[2, 3, [1, 2]] = 7.0
  return logits


def test_first_argmax_equals_jnp_argmax_with_ties():
  import jax.numpy as jnp

  from jaxlm.objectives import first_argmax

  logits = _logits_with_ties()
  got = np.asarray(first_argmax(jnp.asarray(logits)))
  np.testing.assert_array_equal(got, np.argmax(logits, -1))
  assert got[0, 0] == 4 and got[1, 2] == 0 and got[2, 3] == 1
  # Negative control: the last index of the maximum differs on the tied rows.
  last = logits.shape[-1] - 1 - np.argmax(logits[..., ::-1], -1)
  assert not np.array_equal(got, last)


def test_cross_entropy_sums_equal_optax_and_argmax_values_and_gradients():
  import jax
  import jax.numpy as jnp
  import optax

  from jaxlm.objectives import cross_entropy_sums

  logits = jnp.asarray(_logits_with_ties())
  targets = jnp.asarray(np.random.default_rng(1).integers(0, 50, (3, 7)))
  targets = targets.at[0, 0].set(4).at[1, 2].set(0).at[2, 3].set(2)  # Ties: right, right, wrong.
  weights = jnp.asarray(np.random.default_rng(2).integers(0, 2, (3, 7)).astype(np.float32))

  def reference(lg):
    nll = optax.softmax_cross_entropy_with_integer_labels(lg, targets)
    return jnp.sum(nll * weights), jnp.sum((jnp.argmax(lg, -1) == targets) * weights)

  got = cross_entropy_sums(logits, targets, weights)
  loss, correct = reference(logits)
  np.testing.assert_allclose(got["loss_sum"], loss, rtol=1e-6)
  assert float(got["correct_sum"]) == float(correct) > 0
  g = jax.grad(lambda lg: cross_entropy_sums(lg, targets, weights)["loss_sum"])(logits)
  np.testing.assert_allclose(g, jax.grad(lambda lg: reference(lg)[0])(logits), atol=1e-6)
  # Negative control: another target set changes the count.
  assert float(cross_entropy_sums(logits, (targets + 1) % 50, weights)["correct_sum"]) != \
      float(correct)


def test_padded_vocab_mask_is_the_where_form_in_values_and_gradients():
  import jax
  import jax.numpy as jnp

  from jaxlm.models import mask_padded_vocab
  from jaxlm.objectives import cross_entropy_sums

  logits = jnp.asarray(np.random.default_rng(3).normal(size=(2, 5, 16)).astype(np.float32))
  targets = jnp.asarray(np.random.default_rng(4).integers(0, 10, (2, 5)))
  weights = jnp.ones((2, 5))
  where = lambda lg: jnp.where(jnp.arange(16) < 10, lg, -1e9)
  loss = lambda mask: lambda lg: cross_entropy_sums(mask(lg), targets, weights)["loss_sum"]
  masked = mask_padded_vocab(logits, 10)
  np.testing.assert_array_equal(masked[..., :10], logits[..., :10])
  assert float(jnp.max(masked[..., 10:])) < -1e8
  np.testing.assert_allclose(loss(lambda lg: mask_padded_vocab(lg, 10))(logits),
                             loss(where)(logits), rtol=1e-7)
  g_add = jax.grad(loss(lambda lg: mask_padded_vocab(lg, 10)))(logits)
  np.testing.assert_allclose(g_add, jax.grad(loss(where))(logits), atol=1e-7)
  assert float(jnp.max(jnp.abs(g_add[..., 10:]))) == 0.0  # Padding columns learn nothing.
  assert mask_padded_vocab(logits, 16) is logits  # Nothing padded: unchanged.
  # Negative control: without the mask the loss differs.
  assert abs(float(loss(lambda lg: lg)(logits)) - float(loss(where)(logits))) > 1e-3
