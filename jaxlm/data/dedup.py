"""Exact and near-duplicate document removal (MinHash + LSH banding).

Duplicated documents make a model memorise them and inflate eval scores when
they straddle splits. Exact duplicates are found by a content hash of the
UTF-8 bytes. Near duplicates (same text with a few edits, boilerplate with a
changed date) by MinHash: each document becomes the set of its shingle
hashes, `num_perm` hash functions keep their minimum, and the fraction of
equal minima estimates the Jaccard similarity of two shingle sets. LSH
banding proposes candidate pairs without comparing all pairs; each candidate
is then verified on the estimated Jaccard. Every hash is stable (blake2b and
fixed-width integer arithmetic, never Python's salted `hash()`), so results
depend only on the documents and `seed`.

Keep-masks keep the first document of each group in input order.
"""

from __future__ import annotations

import hashlib
import math
import re
from collections.abc import Iterable, Sequence

import numpy as np

UNITS = ("word", "char")
_WORD_RE = re.compile(r"\w+")
_U64 = np.uint64
_SHINGLE_MULT = _U64(0x100000001B3)  # FNV-64 prime: order-sensitive combination of tokens.
_BAND_MULT = _U64(0x9E3779B97F4A7C15)
_MAX_BLOCK = 1 << 22  # Shingles x permutations hashed at once (32 MiB of uint64).
_EMPTY = np.iinfo(np.uint32).max


# --- exact duplicates -----------------------------------------------------------------------


def content_hash(doc: str) -> bytes:
  """128-bit blake2b of the exact UTF-8 bytes (no case or whitespace folding)."""
  return hashlib.blake2b(doc.encode("utf-8", "surrogatepass"), digest_size=16).digest()


def exact_duplicate_of(docs: Iterable[str]) -> list[int]:
  """For each document the index of its first identical copy, or -1 if it is the first."""
  first: dict[bytes, int] = {}
  out = []
  for i, doc in enumerate(docs):
    j = first.setdefault(content_hash(doc), i)
    out.append(-1 if j == i else j)
  return out


def exact_duplicates(docs: Iterable[str]) -> list[bool]:
  """Keep-mask: True for the first occurrence of each exact byte string."""
  return [j < 0 for j in exact_duplicate_of(docs)]


# --- shingles and MinHash -------------------------------------------------------------------


def _mix64(x: np.ndarray) -> np.ndarray:
  """splitmix64 finaliser: spreads structured 64-bit values over all bits."""
  x = x ^ (x >> _U64(30))
  x *= _U64(0xBF58476D1CE4E5B9)
  x ^= x >> _U64(27)
  x *= _U64(0x94D049BB133111EB)
  x ^= x >> _U64(31)
  return x


class _WordHashes(dict):
  """word -> stable 64-bit blake2b hash, computed on first lookup."""

  def __missing__(self, word: str) -> int:
    digest = hashlib.blake2b(word.encode("utf-8", "surrogatepass"), digest_size=8).digest()
    h = self[word] = int.from_bytes(digest, "little")
    return h


def _tokens(text: str, unit: str, cache: _WordHashes | None = None) -> np.ndarray:
  """Lower-cased word hashes (`\\w+` runs) or code points with whitespace runs as one space."""
  if unit == "word":
    cache = _WordHashes() if cache is None else cache
    words = _WORD_RE.findall(text.lower())
    return np.fromiter([cache[w] for w in words], _U64, count=len(words))
  if unit == "char":
    s = " ".join(text.lower().split())
    cps = np.frombuffer(s.encode("utf-32-le", "surrogatepass"), np.uint32).astype(_U64)
    return _mix64(cps + _U64(0x632BE59BD9B4E019))
  raise ValueError(f"Shingle unit {unit!r} is not one of {UNITS}.")


def shingle_hashes(
    text: str, shingle_size: int = 5, unit: str = "word", _cache: _WordHashes | None = None
) -> np.ndarray:
  """Sorted unique uint64 hashes of the text's shingles (runs of `shingle_size` tokens).

  A text shorter than one shingle gives a single shingle of all its tokens, so
  short documents still compare; an empty text gives no shingles.
  """
  if shingle_size < 1:
    raise ValueError(f"shingle_size must be >= 1, got {shingle_size}.")
  t = _tokens(text, unit, _cache)
  if t.size == 0:
    return t
  k = min(shingle_size, t.size)
  m = t.size - k + 1
  h = t[:m].copy()
  for j in range(1, k):
    h *= _SHINGLE_MULT
    h += t[j : j + m]
  return np.unique(_mix64(h))


def jaccard(a: str, b: str, shingle_size: int = 5, unit: str = "word") -> float:
  """Exact Jaccard similarity of two texts' shingle sets (1.0 for two empty texts)."""
  sa, sb = shingle_hashes(a, shingle_size, unit), shingle_hashes(b, shingle_size, unit)
  union = np.union1d(sa, sb).size
  return np.intersect1d(sa, sb, assume_unique=True).size / union if union else 1.0


def _permutations(num_perm: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
  rng = np.random.Generator(np.random.PCG64(seed))
  a = rng.bit_generator.random_raw(num_perm).astype(_U64) | _U64(1)
  b = rng.bit_generator.random_raw(num_perm).astype(_U64)
  return a, b


def minhash_signatures(
    docs: Sequence[str],
    num_perm: int = 128,
    shingle_size: int = 5,
    seed: int = 0,
    unit: str = "word",
) -> np.ndarray:
  """uint32 MinHash signatures, shape [len(docs), num_perm].

  Hash function k is multiply-shift, `(a_k * x + b_k) mod 2**64 >> 32`, over
  mixed shingle hashes `x`, with odd `a_k` and `b_k` drawn from PCG64(seed).
  Shingles of many documents are hashed in one numpy block and reduced per
  document with `minimum.reduceat`. Empty documents get all-0xFFFFFFFF rows.
  """
  if num_perm < 1:
    raise ValueError(f"num_perm must be >= 1, got {num_perm}.")
  docs = list(docs)
  a, b = _permutations(num_perm, seed)
  sig = np.full((len(docs), num_perm), _EMPTY, np.uint32)
  rows = max(1, _MAX_BLOCK // num_perm)
  cache = _WordHashes()
  parts: list[np.ndarray] = []
  owners: list[int] = []
  filled = 0
  buf = np.empty((num_perm, 0), _U64)  # Reused across blocks: [num_perm, shingles] layout.

  def flush():
    nonlocal parts, owners, filled, buf
    if not parts:
      return
    x = np.concatenate(parts)
    if buf.shape[1] < x.size:
      buf = np.empty((num_perm, x.size), _U64)
    hv = buf[:, : x.size]
    np.multiply.outer(a, x, out=hv)
    hv += b[:, None]
    # min(v >> 32) == min(v) >> 32, so shift only the minima.
    starts = np.cumsum([0] + [p.size for p in parts[:-1]])
    mins = (np.minimum.reduceat(hv, starts, axis=1) >> _U64(32)).astype(np.uint32).T
    idx = np.asarray(owners)  # Unique within a block: a document is split across blocks.
    sig[idx] = np.minimum(sig[idx], mins)
    parts, owners, filled = [], [], 0

  for i, doc in enumerate(docs):
    sh = shingle_hashes(doc, shingle_size, unit, cache)
    while sh.size:
      take = min(sh.size, rows - filled)
      parts.append(sh[:take])
      owners.append(i)
      filled += take
      sh = sh[take:]
      if filled >= rows:
        flush()
  flush()
  return sig


# --- LSH ------------------------------------------------------------------------------------


def candidate_probability(similarity: float, bands: int, rows: int) -> float:
  """P(two documents with this Jaccard share >= 1 band) = 1 - (1 - s**rows)**bands."""
  return 1.0 - (1.0 - similarity**rows) ** bands


def lsh_params(threshold: float, num_perm: int = 128, recall: float = 0.995) -> tuple[int, int]:
  """(bands, rows) for LSH: the largest `rows` (fewest spurious candidates) whose

  candidate probability at the threshold, `1 - (1 - t**rows)**(num_perm // rows)`,
  is still >= `recall`. Candidates are verified afterwards, so erring towards
  more candidates only costs time while missing one loses a duplicate.
  For t=0.8, num_perm=128 this gives 21 bands of 6 rows.
  """
  if not 0.0 < threshold <= 1.0:
    raise ValueError(f"threshold must be in (0, 1], got {threshold}.")
  best = (num_perm, 1)
  for r in range(1, num_perm + 1):
    b = num_perm // r
    if candidate_probability(threshold, b, r) >= recall:
      best = (b, r)
  return best


def _band_keys(sig: np.ndarray, bands: int, rows: int) -> np.ndarray:
  """uint64 key per (document, band): an order-sensitive combination of its rows."""
  keys = np.zeros((sig.shape[0], bands), _U64)
  s = sig[:, : bands * rows].astype(_U64).reshape(sig.shape[0], bands, rows)
  for j in range(rows):
    keys *= _BAND_MULT
    keys += s[:, :, j]
  return keys


def duplicate_of_signatures(signatures: np.ndarray, threshold: float = 0.8) -> list[int]:
  """For each row the index of an earlier kept row it near-duplicates, or -1 (kept).

  Rows are visited in order; a row is a duplicate if some earlier *kept* row
  shares an LSH band with it and agrees on >= threshold of the signature.
  Only kept rows enter the buckets, so a large group of copies costs one
  comparison per copy, and chains A~B~C without A~C do not drop C.
  """
  sig = np.asarray(signatures)
  n, num_perm = sig.shape
  bands, rows = lsh_params(threshold, num_perm)
  need = math.ceil(threshold * num_perm - 1e-9)
  keys = _band_keys(sig, bands, rows).tolist()
  buckets: list[dict[int, list[int]]] = [{} for _ in range(bands)]
  dup_of = [-1] * n
  for i in range(n):
    row = keys[i]
    cands: set[int] = set()
    for bucket, key in zip(buckets, row, strict=True):
      hit = bucket.get(key)
      if hit:
        cands.update(hit)
    if cands:
      c = np.array(sorted(cands))
      agree = np.count_nonzero(sig[c] == sig[i], axis=1)
      good = np.flatnonzero(agree >= need)
      if good.size:
        dup_of[i] = int(c[good[0]])
        continue
    for bucket, key in zip(buckets, row, strict=True):
      bucket.setdefault(key, []).append(i)
  return dup_of


def near_duplicate_of(
    docs: Sequence[str],
    threshold: float = 0.8,
    num_perm: int = 128,
    shingle_size: int = 5,
    seed: int = 0,
    unit: str = "word",
) -> list[int]:
  """For each document the index of the earlier kept document it near-duplicates, or -1."""
  sig = minhash_signatures(docs, num_perm, shingle_size, seed, unit)
  return duplicate_of_signatures(sig, threshold)


def near_duplicates(
    docs: Sequence[str],
    threshold: float = 0.8,
    num_perm: int = 128,
    shingle_size: int = 5,
    seed: int = 0,
    unit: str = "word",
) -> list[bool]:
  """Keep-mask: False where the estimated Jaccard with an earlier kept document >= threshold."""
  return [j < 0 for j in near_duplicate_of(docs, threshold, num_perm, shingle_size, seed, unit)]
