"""Evaluation metrics: language modelling, classification and generation.

Everything here is plain numpy (jax arrays are accepted through `np.asarray`)
and returns Python floats / ints / lists, so results go straight into JSON
metric logs. Metrics over a split are computed from exact sums, never from a
mean of per-batch means, so a partial or padded last batch does not bias them.

Zero-division convention (same as scikit-learn's default, which warns and
returns 0): a precision, recall, F1 or accuracy whose denominator is zero is
reported as 0.0.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

# exp(x) overflows float64 just above 709.78; report an infinite perplexity
# rather than raising or returning a meaningless huge number.
_MAX_LOG_PPL = 700.0

# ----------------------------------------------------------------------------
# Language modelling
# ----------------------------------------------------------------------------


def lm_metrics(sum_nll: float, num_tokens: float, num_bytes: float | None = None,
               num_correct: float | None = None) -> dict[str, float]:
  """Loss (nats/token), perplexity and, given the byte count, bits per byte.

  The one place these are computed: every family's training eval, eval mode and the
  n-gram run report what this returns (with `num_correct`: also accuracy and tokens).

  Args:
    sum_nll: summed negative log-likelihood in nats over all scored tokens.
    num_tokens: number of scored tokens (padding excluded; a sum of 0/1 weights).
    num_bytes: UTF-8 bytes of the text those tokens stand for. Bits per byte
      is the tokenizer-independent number to compare models with different
      vocabularies; it is only reported when `num_bytes > 0`.
  """
  sum_nll = float(np.asarray(sum_nll))
  num_tokens = float(np.asarray(num_tokens))
  if num_tokens <= 0:
    raise ValueError(f"num_tokens must be positive, got {num_tokens}: nothing was scored. Fix: "
                     "check that the eval split is not empty.")
  loss = sum_nll / num_tokens
  out = {"loss": loss, "ppl": perplexity(loss)}
  if num_bytes is not None:
    num_bytes = float(np.asarray(num_bytes))
    if num_bytes > 0:
      out["bpb"] = sum_nll / (math.log(2) * num_bytes)
  if num_correct is not None:
    out["accuracy"] = float(np.asarray(num_correct)) / num_tokens
    out["tokens"] = num_tokens
  return out


def perplexity(loss: float) -> float:
  """exp(loss), as `inf` when that would overflow (a diverged run, not a crash)."""
  loss = float(loss)
  if math.isnan(loss):
    return math.nan
  return math.exp(loss) if loss <= _MAX_LOG_PPL else math.inf


class Accumulator:
  """Sums named (sum, weight) pairs across batches; `result()` gives sum/weight.

  Per-batch means cannot be averaged when batches differ in size (a partial
  last batch, padding); summing numerators and denominators separately keeps
  the split-level mean exact:

    acc = Accumulator()
    for batch in eval_batches:
      acc.add(nll=(nll_sum, num_tokens), acc=(num_correct, num_tokens))
    acc.result()  # {'nll': ..., 'acc': ...}

  Values may be scalars or arrays (they are summed); sums use float64.
  """

  def __init__(self) -> None:
    self._sums: dict[str, float] = {}
    self._weights: dict[str, float] = {}

  def add(self, **quantities: tuple[Any, Any]) -> None:
    for name, pair in quantities.items():
      try:
        value, weight = pair
      except (TypeError, ValueError):
        raise TypeError(f"{name}: expected a (sum, weight) pair, got {pair!r}") from None
      self._sums[name] = self._sums.get(name, 0.0) + _total(value)
      self._weights[name] = self._weights.get(name, 0.0) + _total(weight)

  def result(self) -> dict[str, float]:
    """Weighted mean per name; NaN for a name whose total weight is zero."""
    return {
        name: (self._sums[name] / w if w != 0 else math.nan)
        for name, w in self._weights.items()
    }

  def sums(self) -> dict[str, float]:
    return dict(self._sums)

  def weights(self) -> dict[str, float]:
    return dict(self._weights)

  def reset(self) -> None:
    self._sums.clear()
    self._weights.clear()


MeanAccumulator = Accumulator


def _total(x: Any) -> float:
  return float(np.sum(np.asarray(x, dtype=np.float64)))


def masked_accuracy(
    logits_or_preds: Any, targets: Any, weights: Any | None = None
) -> tuple[float, float]:
  """(number correct, total weight) for e.g. MLM accuracy on masked positions.

  `logits_or_preds` is either logits with one more (last) axis than `targets`,
  reduced with argmax, or predicted ids shaped like `targets`. `weights` (same
  shape as `targets`, default all ones) is the loss mask: padding and unmasked
  positions carry 0. Returns sums so they can go into an `Accumulator`.
  """
  x = np.asarray(logits_or_preds)
  targets = np.asarray(targets)
  if x.ndim == targets.ndim + 1:
    if x.dtype.kind not in "iub":
      x = x.astype(np.float32)  # bfloat16 and friends: argmax on a native dtype.
    preds = np.argmax(x, axis=-1)
  elif x.shape == targets.shape:
    preds = x
  else:
    raise ValueError(
        f"logits_or_preds shape {x.shape} does not fit targets shape {targets.shape}"
    )
  if preds.shape != targets.shape:
    raise ValueError(f"predictions {preds.shape} vs targets {targets.shape}")
  if weights is None:
    w = np.ones(targets.shape, np.float64)
  else:
    w = np.broadcast_to(np.asarray(weights, dtype=np.float64), targets.shape)
  correct = (preds == targets).astype(np.float64) * w
  return float(correct.sum()), float(w.sum())


# ----------------------------------------------------------------------------
# Classification
# ----------------------------------------------------------------------------


def _flat_ints(x: Any, name: str) -> np.ndarray:
  a = np.asarray(x).reshape(-1)
  if a.size and a.dtype.kind not in "iub":
    if not np.all(np.equal(np.mod(a, 1), 0)):
      raise ValueError(f"{name} must hold integer class ids")
  return a.astype(np.int64)


def _select(labels: Any, preds: Any, mask: Any | None) -> tuple[np.ndarray, np.ndarray]:
  y = _flat_ints(labels, "labels")
  p = _flat_ints(preds, "preds")
  if y.shape != p.shape:
    raise ValueError(f"labels ({y.size}) and preds ({p.size}) differ in length")
  if mask is not None:
    m = np.asarray(mask).reshape(-1).astype(bool)
    if m.shape != y.shape:
      raise ValueError(f"mask ({m.size}) and labels ({y.size}) differ in length")
    y, p = y[m], p[m]
  return y, p


def confusion_matrix(
    labels: Any, preds: Any, num_classes: int, mask: Any | None = None
) -> np.ndarray:
  """Counts [C, C] int64: rows are true classes, columns predicted classes.

  `mask` (optional, same length) drops padded examples of a fixed-size batch.
  Ids outside [0, num_classes) are an error, not silently dropped.
  """
  y, p = _select(labels, preds, mask)
  for name, a in (("labels", y), ("preds", p)):
    if a.size and (a.min() < 0 or a.max() >= num_classes):
      raise ValueError(f"{name} outside [0, {num_classes}): {a.min()}..{a.max()}")
  counts = np.bincount(y * num_classes + p, minlength=num_classes * num_classes)
  return counts.reshape(num_classes, num_classes).astype(np.int64)


def _div(num: np.ndarray | float, den: np.ndarray | float) -> np.ndarray:
  """num / den with 0.0 where den == 0 (the zero-division convention)."""
  num = np.asarray(num, np.float64)
  den = np.asarray(den, np.float64)
  return np.divide(num, den, out=np.zeros(np.broadcast(num, den).shape), where=den != 0)


def classification_report(
    labels: Any,
    preds: Any,
    num_classes: int,
    class_names: Sequence[str] | None = None,
    mask: Any | None = None,
) -> dict[str, Any]:
  """Accuracy, per-class and averaged precision / recall / F1 as a JSON-ready dict.

  Keys: `accuracy`, `num_examples`, `class_names`, `per_class` (name ->
  precision, recall, f1, support), `macro_*`, `micro_*`, `weighted_f1`,
  `confusion_matrix` (nested list, rows = true class), and for two classes
  `precision`, `recall`, `f1` of the positive class (label 1).

  Macro averages run over the classes that occur in labels or predictions
  (scikit-learn's default label set), so a class absent from a small eval
  split does not pull the average down with a meaningless 0. Micro averages
  equal accuracy for single-label data. Zero denominators give 0.0.
  """
  if class_names is None:
    class_names = [str(i) for i in range(num_classes)]
  class_names = [str(n) for n in class_names]
  if len(class_names) != num_classes:
    raise ValueError(f"{len(class_names)} class names for {num_classes} classes")
  if len(set(class_names)) != num_classes:
    raise ValueError(f"class names must be unique: {class_names}")

  cm = confusion_matrix(labels, preds, num_classes, mask=mask)
  tp = np.diag(cm).astype(np.float64)
  support = cm.sum(axis=1)
  predicted = cm.sum(axis=0)
  fp = predicted - tp
  fn = support - tp
  precision = _div(tp, predicted)
  recall = _div(tp, support)
  # 2tp / (2tp + fp + fn) is the harmonic mean of P and R where both are
  # defined, and 0.0 (not NaN) where they are not.
  f1 = _div(2 * tp, 2 * tp + fp + fn)
  n = int(cm.sum())
  present = (support + predicted) > 0

  def mean_present(v: np.ndarray) -> float:
    return float(v[present].mean()) if present.any() else 0.0

  micro_p = float(_div(tp.sum(), predicted.sum()))
  micro_r = float(_div(tp.sum(), support.sum()))
  report: dict[str, Any] = {
      "accuracy": float(_div(tp.sum(), n)),
      "num_examples": n,
      "class_names": list(class_names),
      "per_class": {
          name: {
              "precision": float(precision[i]),
              "recall": float(recall[i]),
              "f1": float(f1[i]),
              "support": int(support[i]),
          }
          for i, name in enumerate(class_names)
      },
      "macro_precision": mean_present(precision),
      "macro_recall": mean_present(recall),
      "macro_f1": mean_present(f1),
      "micro_precision": micro_p,
      "micro_recall": micro_r,
      "micro_f1": float(_div(2 * micro_p * micro_r, micro_p + micro_r)),
      "weighted_f1": float(_div((f1 * support).sum(), support.sum())),
      "confusion_matrix": cm.tolist(),
  }
  if num_classes == 2:
    report["precision"] = float(precision[1])
    report["recall"] = float(recall[1])
    report["f1"] = float(f1[1])
  return report


def format_classification_report(report: Mapping[str, Any], digits: int = 4) -> str:
  """A fixed-width table of a `classification_report` dict, for logs and stdout."""
  names = list(report["class_names"])
  width = max([len(n) for n in names] + [len("weighted avg"), 6])
  head = f"{'':>{width}} {'precision':>10} {'recall':>10} {'f1':>10} {'support':>10}"
  lines = [head, ""]

  def row(name: str, p: float | str, r: float | str, f: float, s: int | str) -> str:
    cells = [c if isinstance(c, str) else f"{c:.{digits}f}" for c in (p, r, f)]
    return f"{name:>{width}} {cells[0]:>10} {cells[1]:>10} {cells[2]:>10} {s!s:>10}"

  for name in names:
    c = report["per_class"][name]
    lines.append(row(name, c["precision"], c["recall"], c["f1"], c["support"]))
  n = report["num_examples"]
  lines += [
      "",
      row("accuracy", "", "", report["accuracy"], n),
      row(
          "macro avg", report["macro_precision"], report["macro_recall"], report["macro_f1"], n
      ),
      row(
          "micro avg", report["micro_precision"], report["micro_recall"], report["micro_f1"], n
      ),
      row("weighted avg", "", "", report["weighted_f1"], n),
  ]
  if "f1" in report:
    lines.append(
        row(f"positive={names[1]}", report["precision"], report["recall"], report["f1"], "")
    )
  lines.append("")
  lines.append("confusion matrix (rows = true, columns = predicted):")
  cm = report["confusion_matrix"]
  cell = max([len(str(v)) for r in cm for v in r] + [len(n) for n in names], default=1)
  lines.append(" " * (width + 1) + " ".join(f"{n:>{cell}}" for n in names))
  for name, r in zip(names, cm, strict=True):
    lines.append(f"{name:>{width}} " + " ".join(f"{v:>{cell}}" for v in r))
  return "\n".join(line.rstrip() for line in lines)


# ----------------------------------------------------------------------------
# Generation
# ----------------------------------------------------------------------------


def _reference_streams(
    hypotheses: Sequence[str], references: Sequence[str] | Sequence[Sequence[str]]
) -> list[list[str | None]]:
  """Per-hypothesis references -> sacrebleu's layout (one stream per ref index).

  `references[i]` is either one string or a list of strings for hypothesis i;
  hypotheses may have different numbers of references (sacrebleu skips None).
  """
  if isinstance(hypotheses, str) or isinstance(references, str):
    raise TypeError("hypotheses and references must be lists, not a single string")
  if len(references) != len(hypotheses):
    raise ValueError(f"{len(hypotheses)} hypotheses but {len(references)} references")
  if not hypotheses:
    raise ValueError("no hypotheses to score")
  per_hyp = [[r] if isinstance(r, str) else list(r) for r in references]
  if any(not refs for refs in per_hyp):
    raise ValueError("every hypothesis needs at least one reference")
  k = max(len(refs) for refs in per_hyp)
  return [[refs[j] if j < len(refs) else None for refs in per_hyp] for j in range(k)]


def bleu(
    hypotheses: Sequence[str],
    references: Sequence[str] | Sequence[Sequence[str]],
    tokenize: str = "13a",
) -> float:
  """Corpus BLEU (0..100) with sacrebleu's defaults; `references[i]` belongs to hyp i.

  Corpus-level, not a mean of sentence BLEU: that is the number papers report.
  """
  import sacrebleu  # Deferred: only generation evals need it.

  streams = _reference_streams(hypotheses, references)
  return float(sacrebleu.corpus_bleu(list(hypotheses), streams, tokenize=tokenize).score)


def chrf(
    hypotheses: Sequence[str],
    references: Sequence[str] | Sequence[Sequence[str]],
    word_order: int = 0,
) -> float:
  """Corpus chrF (0..100), or chrF++ with `word_order=2`; references as in `bleu`."""
  import sacrebleu

  streams = _reference_streams(hypotheses, references)
  return float(sacrebleu.corpus_chrf(list(hypotheses), streams, word_order=word_order).score)


def generation_metrics(
    hypotheses: Sequence[str], references: Sequence[str] | Sequence[Sequence[str]]
) -> dict[str, float]:
  """Corpus BLEU and chrF in one dict."""
  return {"bleu": bleu(hypotheses, references), "chrf": chrf(hypotheses, references)}
