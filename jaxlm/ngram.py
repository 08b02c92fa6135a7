"""Count-based n-gram LM with interpolated modified Kneser-Ney smoothing (Chen & Goodman 1998).

A strong, cheap baseline for the neural models: it fits millions of tokens in seconds on a CPU
and reports loss in nats/token (EOS included). Token ids follow
`jaxlm.data.tokenizers` (PAD=0, BOS=1, EOS=2, UNK=3).

Choices, all following Chen & Goodman (1998) and KenLM (Heafield et al. 2013) unless noted:

* Padding. Each document is `[BOS] * bos_pad + doc + [EOS]`; every doc token and the EOS
  are predicted, BOS padding is only context, and no n-gram reaches before the padding.
  `bos_pad=1` (default) is SRILM's and KenLM's `<s> doc </s>`. `bos_pad=order-1` repeats `<s>`
  so every position has full-order n-grams, which smooths sentence starts more than the
  standard model (PTB valid KN5: 153.6 vs 148.5). A query context is used as given (its
  longest suffix of at most `order - 1` ids): for "start of document" pass a BOS id.
* Predictable vocabulary. PAD and BOS are never predicted: they get probability 0 and the
  uniform floor is `1 / (vocab_size - 2)` over the other ids (EOS, UNK and the other specials
  included), so every distribution sums to 1 over the predictable ids. UNK is an ordinary
  token; an id never seen in training gets mass only through the uniform floor.
* Counts. The highest order uses raw counts; a lower order k-gram uses its continuation count
  N1+(. g), the number of distinct ids seen just left of it. Exception (as in KenLM): a lower
  order k-gram that starts with BOS keeps its raw count, because its only left extension is
  more padding, so its continuation count would be a meaningless 1.
* Smoothing. For a context h seen at order k, with adjusted counts c(h w) and c(h) = sum_w:
    p_k(w | h) = max(c(h w) - D_k(c(h w)), 0) / c(h) + gamma(h) p_{k-1}(w | h'),
    gamma(h) = (D1 N1(h .) + D2 N2(h .) + D3+ N3+(h .)) / c(h),
  where h' drops the first id of h and p_0 is the uniform floor. A context unseen at order k
  backs off entirely: p_k(w | h) = p_{k-1}(w | h').
* Discounts, per order from the count-of-counts n_r of that order's adjusted counts:
  Y = n1 / (n1 + 2 n2), D1 = 1 - 2Y n2/n1, D2 = 2 - 3Y n3/n2, D3+ = 3 - 4Y n4/n3.
  Fallback (KenLM's --discount_fallback): if n1, n2 or n3 is 0 (a ratio is undefined) or any
  D_r falls outside (0, r], the whole order uses `discount_fallback` (default 0.5, 1, 1.5).
  Requiring D_r > 0 keeps gamma(h) > 0 for every seen context, so no id ever gets probability
  0; requiring D_r <= r keeps max(c - D, 0) = c - D, so distributions sum to exactly 1.

Storage is a trie of packed int64 keys: the k-grams of the padded training stream get ids
0..m-1 in the order of their keys `id(first k-1 ids) * vocab_size + last id` (a 1-gram's id is
the token id). Queries are vectorised `np.searchsorted` lookups, so scoring a corpus costs a
few numpy passes.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence

import numpy as np
from etils import epath

from jaxlm.data.tokenizers import BOS_ID, EOS_ID, PAD_ID

DEFAULT_DISCOUNT_FALLBACK = (0.5, 1.0, 1.5)
_FORMAT_VERSION = 1
_EVAL_CHUNK_TOKENS = 1 << 20  # Bounds the memory of `evaluate` on large corpora.


def modified_kn_discounts(
    count_of_counts: Sequence[int],
    fallback: Sequence[float] = DEFAULT_DISCOUNT_FALLBACK,
) -> tuple[tuple[float, float, float], bool]:
  """(D1, D2, D3+) from count-of-counts (n1, n2, n3, n4); True if the fallback was used.

  Chen & Goodman (1998) eq. 26. The fallback replaces all three discounts of the order when
  the closed form is undefined (n1, n2 or n3 is 0) or gives some D_r outside (0, r], as
  happens on tiny, duplicated or synthetic data.
  """
  n1, n2, n3, n4 = (int(x) for x in count_of_counts)
  if n1 > 0 and n2 > 0 and n3 > 0:
    y = n1 / (n1 + 2 * n2)
    d = (1 - 2 * y * n2 / n1, 2 - 3 * y * n3 / n2, 3 - 4 * y * n4 / n3)
    if all(0 < d_r <= r for r, d_r in enumerate(d, start=1)):
      return d, False
  return (float(fallback[0]), float(fallback[1]), float(fallback[2])), True


class KneserNeyLM:
  """Interpolated modified Kneser-Ney n-gram LM over int token ids in [0, vocab_size).

  Usage: `lm = KneserNeyLM(5, tok.vocab_size).fit(docs); lm.evaluate(test_docs)["ppl"]`.
  An unfitted model predicts the uniform floor.
  """

  def __init__(
      self,
      order: int,
      vocab_size: int,
      discount_fallback: Sequence[float] = DEFAULT_DISCOUNT_FALLBACK,
      bos_pad: int = 1,
  ):
    if order < 1:
      raise ValueError(f"order must be >= 1, got {order}.")
    if vocab_size <= max(PAD_ID, BOS_ID, EOS_ID):
      raise ValueError(f"vocab_size={vocab_size} must include PAD, BOS and EOS.")
    fallback = tuple(float(d) for d in discount_fallback)
    if len(fallback) != 3 or not all(0 < d <= r for r, d in enumerate(fallback, start=1)):
      raise ValueError(f"discount_fallback must be (D1, D2, D3+) with 0 < D_r <= r: {fallback}")
    if not 1 <= bos_pad <= max(order - 1, 1):
      raise ValueError(f"bos_pad must be in [1, order-1={max(order - 1, 1)}], got {bos_pad}.")
    self.bos_pad = int(bos_pad)
    self.order = int(order)
    self.vocab_size = int(vocab_size)
    self.discount_fallback = fallback
    self._uniform = np.full(self.vocab_size, 1.0 / (self.vocab_size - 2))
    self._uniform[[PAD_ID, BOS_ID]] = 0.0
    empty = np.zeros(0, np.int64)
    self._finalize(
        keys=[None, None] + [empty] * (self.order - 1),
        counts=[None, np.zeros(self.vocab_size, np.int64)] + [empty] * (self.order - 1),
    )

  # ----------------------------------------------------------------------------------------
  # Fitting.

  def fit(self, sequences: Iterable[np.ndarray]) -> KneserNeyLM:
    """Counts all orders on `sequences` (documents of ids), replacing any previous fit."""
    n, vocab = self.order, self.vocab_size
    toks, pos = self._pad(sequences)
    # ids[j][i]: trie id of the j-gram ending at position i (-1 where it would cross the doc
    # start); ids[1] is the token itself.
    ids: list = [None, toks]
    keys: list = [None, None]
    for j in range(2, n + 1):
      idx = np.flatnonzero(pos >= j - 1)
      packed = self._pack(ids[j - 1][idx - 1], toks[idx], len(keys[j - 1]) if j > 2 else vocab)
      uniq, inv = np.unique(packed, return_inverse=True)
      cur = np.full(len(toks), -1, np.int64)
      cur[idx] = inv.reshape(-1)
      ids.append(cur)
      keys.append(uniq)
    pred_all = np.flatnonzero(pos >= self.bos_pad)  # Predicted positions: doc tokens and EOS.
    counts: list = [None]
    for k in range(1, n + 1):
      pred = pred_all[pos[pred_all] >= k - 1]  # Where a k-gram exists (not before the padding).
      grams = ids[k][pred]
      size = vocab if k == 1 else len(keys[k])
      raw = np.bincount(grams, minlength=size)
      if k == n:
        counts.append(raw)
        continue
      # Continuation count: number of distinct (k+1)-grams that end in this k-gram.
      ext = pred[ids[k + 1][pred] >= 0]
      _, first = np.unique(ids[k + 1][ext], return_index=True)
      adjusted = np.bincount(ids[k][ext][first], minlength=size)
      if k >= 2:
        bos_initial = grams[toks[pred - k + 1] == BOS_ID]
        adjusted[bos_initial] = raw[bos_initial]
      counts.append(adjusted)
    self._finalize(keys, counts)
    return self

  def _pack(self, prefix_ids: np.ndarray, last: np.ndarray, num_prefixes: int) -> np.ndarray:
    """Trie key of (prefix, last id); checks that it fits in int64."""
    if num_prefixes * self.vocab_size >= 2**62:
      raise OverflowError("Too many distinct n-grams to pack into int64 keys.")
    return prefix_ids * self.vocab_size + last

  def _finalize(self, keys: list, counts: list, discounts: np.ndarray | None = None) -> None:
    """Derives discounts, per-context statistics and per-gram discounted terms from counts."""
    n, vocab = self.order, self.vocab_size
    self._keys = keys
    self._counts = [None] + [np.asarray(c, np.int64) for c in counts[1:]]
    self.discounts = np.zeros((n, 3))
    self.discount_fallback_used = [False] * n
    self.count_of_counts = np.zeros((n, 4), np.int64)
    self._ctx_total: list = [None]
    self._ctx_types: list = [None]
    self._gamma: list = [None]
    self._alpha: list = [None]
    for k in range(1, n + 1):
      c = self._counts[k]
      self.count_of_counts[k - 1] = [np.count_nonzero(c == r) for r in range(1, 5)]
      if discounts is None:
        d, used = modified_kn_discounts(self.count_of_counts[k - 1], self.discount_fallback)
        self.discount_fallback_used[k - 1] = used
      else:
        d = tuple(float(x) for x in discounts[k - 1])
      self.discounts[k - 1] = d
      grams = np.flatnonzero(c)
      cg = c[grams]
      if k == 1:
        ctx, num_ctx = np.zeros(len(grams), np.int64), 1
      else:
        ctx, num_ctx = keys[k][grams] // vocab, (vocab if k == 2 else len(keys[k - 1]))
      total = np.bincount(ctx, weights=cg, minlength=num_ctx)
      types = np.stack(
          [
              np.bincount(ctx[cg == 1], minlength=num_ctx),
              np.bincount(ctx[cg == 2], minlength=num_ctx),
              np.bincount(ctx[cg >= 3], minlength=num_ctx),
          ]
      ).astype(np.int32)
      seen = total > 0
      gamma = np.zeros(num_ctx)
      gamma[seen] = (types[:, seen].T @ np.asarray(d)) / total[seen]
      disc = np.where(cg == 1, d[0], np.where(cg == 2, d[1], d[2]))
      alpha = np.zeros(len(c))
      alpha[grams] = (cg - disc) / total[ctx]
      self._ctx_total.append(total)
      self._ctx_types.append(types)
      self._gamma.append(gamma)
      self._alpha.append(alpha)

  # ----------------------------------------------------------------------------------------
  # Queries.

  def log_prob(self, context: Sequence[int], token: int) -> float:
    """Natural log p(token | longest suffix of `context` up to order-1 ids); -inf for PAD/BOS."""
    ctx = self._context(context)
    seq = np.append(ctx, self._check_ids([token]))
    ids = self._lookup_windows(seq, np.arange(len(seq)))
    p = self._interpolate(ids, np.array([len(seq) - 1]), seq[-1:])[0]
    return math.log(p) if p > 0 else -math.inf

  def distribution(self, context: Sequence[int]) -> np.ndarray:
    """p(. | context) as a float64 [vocab_size] array; 0 at PAD and BOS, sums to 1."""
    ctx = self._context(context)
    m, vocab = len(ctx), self.vocab_size
    ids = self._lookup_windows(ctx, np.arange(m))
    p = self._uniform.copy()
    for k in range(1, m + 2):
      c = 0 if k == 1 else int(ids[k - 1][m - 1])
      if c < 0 or self._gamma[k][c] == 0:
        continue  # Context unseen at this order: back off entirely.
      if k == 1:
        alpha = self._alpha[1]
      else:
        keys = self._keys[k]
        lo, hi = np.searchsorted(keys, [c * vocab, (c + 1) * vocab])
        alpha = np.zeros(vocab)
        alpha[keys[lo:hi] - c * vocab] = self._alpha[k][lo:hi]
      p = alpha + self._gamma[k][c] * p
    return p

  def score(self, sequence: np.ndarray | Sequence[int]) -> tuple[float, int]:
    """(total NLL in nats, number of predicted tokens) of one document, EOS included."""
    p = self._token_probs([sequence])
    return self._nll(p), len(p)

  def evaluate(self, sequences: Iterable[np.ndarray]) -> dict:
    """Corpus loss in nats/token (EOS included), perplexity and token count."""
    nll, num, batch, batch_len = 0.0, 0, [], 0
    for seq in sequences:
      batch.append(seq)
      batch_len += len(seq) + 1
      if batch_len >= _EVAL_CHUNK_TOKENS:
        p = self._token_probs(batch)
        nll, num, batch, batch_len = nll + self._nll(p), num + len(p), [], 0
    if batch:
      p = self._token_probs(batch)
      nll, num = nll + self._nll(p), num + len(p)
    loss = nll / num if num else float("nan")
    return {"loss": loss, "ppl": math.exp(loss) if num else float("nan"), "num_tokens": num}

  def count(self, ngram: Sequence[int]) -> int:
    """Adjusted count of an n-gram as used at order len(ngram) (raw or continuation)."""
    seq = self._check_ids(ngram)
    k = len(seq)
    if not 1 <= k <= self.order:
      raise ValueError(f"n-gram length must be in [1, {self.order}], got {k}.")
    g = int(self._lookup_windows(seq, np.arange(k))[k][k - 1])
    return int(self._counts[k][g]) if g >= 0 else 0

  def context_counts(self, context: Sequence[int]) -> dict:
    """c(h), N1(h .), N2(h .), N3+(h .) of context h at order len(h) + 1 (zeros if unseen)."""
    ctx = self._check_ids(context)
    m = len(ctx)
    if m >= self.order:
      raise ValueError(f"context length must be < order={self.order}, got {m}.")
    c = 0 if m == 0 else int(self._lookup_windows(ctx, np.arange(m))[m][m - 1])
    if c < 0:
      return {"total": 0, "n1": 0, "n2": 0, "n3_plus": 0}
    n1, n2, n3 = (int(x) for x in self._ctx_types[m + 1][:, c])
    return {"total": int(self._ctx_total[m + 1][c]), "n1": n1, "n2": n2, "n3_plus": n3}

  @property
  def num_ngrams(self) -> list[int]:
    """Number of distinct k-grams with a nonzero count, for k = 1..order."""
    return [int(np.count_nonzero(self._counts[k])) for k in range(1, self.order + 1)]

  def _context(self, context: Sequence[int]) -> np.ndarray:
    ctx = self._check_ids(context)
    return ctx[max(0, len(ctx) - (self.order - 1)) :]

  def _check_ids(self, ids) -> np.ndarray:
    arr = np.asarray(ids)
    if arr.size and not np.issubdtype(arr.dtype, np.integer):
      raise TypeError(f"Token ids must be integers, got dtype {arr.dtype}.")
    arr = arr.astype(np.int64).reshape(-1)
    if arr.size and (arr.min() < 0 or arr.max() >= self.vocab_size):
      raise ValueError(f"Token ids must be in [0, {self.vocab_size}).")
    return arr

  def _pad(self, sequences: Iterable) -> tuple[np.ndarray, np.ndarray]:
    """Concatenated `[BOS]*bos_pad + doc + [EOS]` streams and each position's in-doc index."""
    n = self.bos_pad + 1
    docs = [self._check_ids(s) for s in sequences]
    for d in docs:
      if np.any((d == PAD_ID) | (d == BOS_ID)):
        raise ValueError("Documents must not contain PAD or BOS ids (they are never predicted).")
    lens = np.array([len(d) for d in docs], np.int64)
    padded = lens + n
    starts = np.cumsum(padded) - padded
    toks = np.full(int(padded.sum()), BOS_ID, np.int64)
    if len(docs):
      cat = np.concatenate(docs)
      within = np.arange(len(cat)) - np.repeat(np.cumsum(lens) - lens, lens)
      toks[np.repeat(starts, lens) + (n - 1) + within] = cat
      toks[starts + (n - 1) + lens] = EOS_ID
    pos = np.arange(len(toks)) - np.repeat(starts, padded)
    return toks, pos

  def _lookup_windows(self, toks: np.ndarray, pos: np.ndarray) -> list:
    """Trie ids of the j-grams ending at each position, j = 1..order; -1 if unseen/invalid."""
    ids: list = [None, toks]
    for j in range(2, self.order + 1):
      cur = np.full(len(toks), -1, np.int64)
      idx = np.flatnonzero(pos >= j - 1)
      prev = ids[j - 1][idx - 1]
      idx, prev = idx[prev >= 0], prev[prev >= 0]
      keys = self._keys[j]
      if len(idx) and len(keys):
        packed = prev * self.vocab_size + toks[idx]
        loc = np.minimum(np.searchsorted(keys, packed), len(keys) - 1)
        found = keys[loc] == packed
        cur[idx[found]] = loc[found]
      ids.append(cur)
    return ids

  def _interpolate(self, ids: list, pred: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """p(target | context) at positions `pred`, the context being the ids just before them."""
    p = self._uniform[targets]
    prev = np.maximum(pred - 1, 0)
    for k in range(1, self.order + 1):
      if k == 1:
        gamma = np.full(len(pred), self._gamma[1][0])
      else:
        ctx = np.where(pred >= 1, ids[k - 1][prev], -1)
        gamma = np.where(ctx >= 0, self._gamma[k][np.maximum(ctx, 0)], 0.0)
      gram = ids[k][pred]
      alpha = np.where(gram >= 0, self._alpha[k][np.maximum(gram, 0)], 0.0)
      p = np.where(gamma > 0, alpha + gamma * p, p)
    return p

  def _token_probs(self, sequences: Iterable) -> np.ndarray:
    toks, pos = self._pad(sequences)
    ids = self._lookup_windows(toks, pos)
    pred = np.flatnonzero(pos >= self.bos_pad)
    return self._interpolate(ids, pred, toks[pred])

  @staticmethod
  def _nll(p: np.ndarray) -> float:
    with np.errstate(divide="ignore"):
      return float(-np.log(p).sum())

  # ----------------------------------------------------------------------------------------
  # Persistence: a plain .npz of integer/float arrays, loaded with allow_pickle=False.

  def save(self, path) -> None:
    """Writes counts, trie keys and discounts to `path` (.npz, no pickle), exactly `path`
    (a path, local or `gs://` through etils.epath, or a binary file object)."""
    arrays = {
        "format_version": np.array(_FORMAT_VERSION),
        "order": np.array(self.order),
        "bos_pad": np.array(self.bos_pad),
        "vocab_size": np.array(self.vocab_size),
        "discounts": self.discounts,
        "discount_fallback": np.array(self.discount_fallback),
        "discount_fallback_used": np.array(self.discount_fallback_used),
    }
    for j in range(2, self.order + 1):
      arrays[f"keys_{j}"] = self._keys[j]
    for k in range(1, self.order + 1):
      arrays[f"counts_{k}"] = self._counts[k]
    if hasattr(path, "write"):
      np.savez(path, **arrays)
      return
    with epath.Path(path).open("wb") as f:
      np.savez(f, **arrays)

  @classmethod
  def load(cls, path: str) -> KneserNeyLM:
    """Restores a model written by `save`; probabilities are bit-identical."""
    with epath.Path(path).open("rb") as f, np.load(f, allow_pickle=False) as z:
      version = int(z["format_version"])
      if version != _FORMAT_VERSION:
        raise ValueError(f"{path}: unsupported n-gram format version {version}.")
      order = int(z["order"])
      bos_pad = int(z["bos_pad"]) if "bos_pad" in z else order - 1  # Files from before bos_pad.
      lm = cls(order, int(z["vocab_size"]), tuple(z["discount_fallback"]), bos_pad)
      keys = [None, None] + [z[f"keys_{j}"] for j in range(2, order + 1)]
      counts = [None] + [z[f"counts_{k}"] for k in range(1, order + 1)]
      lm._finalize(keys, counts, discounts=z["discounts"])
      lm.discount_fallback_used = [bool(b) for b in z["discount_fallback_used"]]
    return lm

  def __repr__(self) -> str:
    return (
        f"KneserNeyLM(order={self.order}, vocab_size={self.vocab_size}, bos_pad={self.bos_pad},"
        f" ngrams={self.num_ngrams})"
    )
