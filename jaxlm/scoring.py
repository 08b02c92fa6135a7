"""Sentence scores from any trained workdir: causal log-likelihood and masked pseudo-likelihood.

Shared by the bias (`jaxlm.bias`, CrowS-Pairs) and privacy (`jaxlm.privacy`, canary
exposure) measurements. A `Scorer` wraps one trained model:

* `causal(seqs)`: the whole sequence's log-likelihood in nats, as training sees a
  document: the context starts at `<eos>` (the previous document's end in the packed
  stream) and every token plus the closing `<eos>` is predicted. Causal families (gpt,
  lstm) and the n-gram (`KneserNeyLM.score`, from its BOS context) support it.
* `masked(seqs, positions)`: the pseudo-log-likelihood (Salazar et al. 2020; Nangia et
  al. 2020) of the listed positions: each is replaced by `<mask>` in turn and the
  log-probability of the original token summed. The masked family (bert) supports it.

Neural models come from `inference.load_for_inference` (params only, in their mesh
shardings); the n-gram from its own `ngram.npz`. Rows are padded to the model's
`data.seq_len`, so one shape is compiled; a sequence that does not fit is reported
by the caller (`fits`), never cut.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from jaxlm import workdir as wd_lib
from jaxlm.data import tokenizers as tok_lib

# ids_BL, targets_BL (int32 numpy) -> log p(target | row) at every position, [B, L] float.
TokenLogprobFn = Callable[[np.ndarray, np.ndarray], np.ndarray]


class ScoringError(ValueError):
  """A workdir or input that cannot be scored; the message names the fix."""


def cli_main(compute: Callable[[], dict], format_table: Callable[[dict], str]) -> None:
  """The measurement CLIs' (`jaxlm.bias`, `jaxlm.exposure`) body: `compute()` a result with a
  `path`, print its table and where it was saved; a bad workdir or input exits 1 with the
  message (which names the fix), no traceback."""
  import sys

  from absl import logging

  try:
    out = compute()
  except (ScoringError, wd_lib.CheckpointError) as e:
    logging.error("%s", e)
    print(f"error: {e}", file=sys.stderr)
    sys.exit(1)
  print(format_table(out))
  print(f"Saved to {out['path']}")


class Scorer:
  """Scores token-id sequences with one model; `kind` is 'causal' or 'masked'."""

  def __init__(self, kind: str, tokenizer: tok_lib.Tokenizer, max_len: int,
               token_logprobs: TokenLogprobFn | None = None, ngram=None, batch_size: int = 64,
               step: int | None = None, family: str = ""):
    if kind not in ("causal", "masked"):
      raise ValueError(f"kind {kind!r} is not 'causal' or 'masked'.")
    self.kind, self.tokenizer, self.max_len = kind, tokenizer, max_len
    self.token_logprobs, self.ngram, self.batch_size = token_logprobs, ngram, batch_size
    self.step, self.family = step, family

  def fits(self, ids: np.ndarray) -> bool:
    """Whether a sequence can be scored whole (the n-gram has no length limit)."""
    if self.ngram is not None:
      return True
    return len(ids) + (1 if self.kind == "causal" else 0) <= self.max_len

  def _rows(self, ids_rows: list[np.ndarray], target_rows: list[np.ndarray]) -> np.ndarray:
    """Log-probs [N, max_len] of the rows, run in fixed-size batches (zero-padded)."""
    out = np.zeros((len(ids_rows), self.max_len), np.float64)
    for start in range(0, len(ids_rows), self.batch_size):
      chunk = range(start, min(start + self.batch_size, len(ids_rows)))
      ids_BL = np.zeros((self.batch_size, self.max_len), np.int32)
      tgt_BL = np.zeros((self.batch_size, self.max_len), np.int32)
      for r, i in enumerate(chunk):
        ids_BL[r, :len(ids_rows[i])] = ids_rows[i]
        tgt_BL[r, :len(target_rows[i])] = target_rows[i]
      lp = np.asarray(self.token_logprobs(ids_BL, tgt_BL), np.float64)
      out[start:start + len(chunk)] = lp[:len(chunk)]
    return out

  def causal(self, seqs: Sequence[np.ndarray]) -> np.ndarray:
    """Log-likelihood (nats) of each sequence and its closing `<eos>`, from an `<eos>` context."""
    if self.kind != "causal":
      raise ScoringError(f"a {self.family or 'masked'} model has no causal likelihood. Fix: use "
                         "`masked` (pseudo-log-likelihood) for masked LMs.")
    seqs = [np.asarray(s, np.int32) for s in seqs]
    if self.ngram is not None:
      return np.array([-self.ngram.score(s)[0] for s in seqs])
    eos = self.tokenizer.eos_id
    for s in seqs:
      if not self.fits(s):
        raise ScoringError(f"a sequence of {len(s)} tokens does not fit {self.max_len}. Fix: "
                           "skip it (check `fits`) or use a model with a longer data.seq_len.")
    lp = self._rows([np.concatenate([[eos], s]) for s in seqs],
                    [np.concatenate([s, [eos]]) for s in seqs])
    return np.array([lp[i, :len(s) + 1].sum() for i, s in enumerate(seqs)])

  def masked(self, seqs: Sequence[np.ndarray], positions: Sequence[Sequence[int]]) -> np.ndarray:
    """Pseudo-log-likelihood: sum over `positions` of log p(token | the rest, it masked)."""
    if self.kind != "masked":
      raise ScoringError(f"a {self.family or 'causal'} model is not a masked LM. Fix: use "
                         "`causal` (the sequence log-likelihood).")
    rows, targets, where = [], [], []
    for i, (s, pos) in enumerate(zip(seqs, positions, strict=True)):
      s = np.asarray(s, np.int32)
      if not self.fits(s):
        raise ScoringError(f"a sequence of {len(s)} tokens does not fit {self.max_len}. Fix: "
                           "skip it (check `fits`).")
      for p in pos:
        row = s.copy()
        row[p] = self.tokenizer.mask_id
        rows.append(row)
        targets.append(s)
        where.append((i, p))
    lp = self._rows(rows, targets) if rows else np.zeros((0, self.max_len))
    out = np.zeros(len(seqs))
    for r, (i, p) in enumerate(where):
      out[i] += lp[r, p]
    return out


def _neural_logprob_fn(im) -> TokenLogprobFn:
  """A jitted log p(target | row) for a loaded model (bert rows attend to non-pad tokens)."""
  import flax.linen as nn

  from jaxlm import sharding

  masked = im.config.model.family == "bert"
  type_ids = bool(im.config.model.type_vocab_size)

  @jax.jit
  def fn(params, ids_BL, tgt_BL):
    kw = {}
    if masked:
      seg_BL = (ids_BL != tok_lib.PAD_ID).astype(jnp.int32)
      if type_ids:
        kw["type_ids_BL"] = jnp.zeros_like(ids_BL)
      logits_BLV = im.model.apply({"params": params}, ids_BL, None, seg_BL, **kw)
    else:
      logits_BLV = im.model.apply({"params": params}, ids_BL)
    logp_BLV = jax.nn.log_softmax(logits_BLV.astype(jnp.float32), axis=-1)
    return jnp.take_along_axis(logp_BLV, tgt_BL[..., None], axis=-1)[..., 0]

  spec = sharding.batch_sharding(im.mesh, im.rules).spec
  batch = jax.sharding.NamedSharding(im.mesh, jax.sharding.PartitionSpec(*spec[:2]))

  def call(ids_BL: np.ndarray, tgt_BL: np.ndarray) -> np.ndarray:
    with jax.set_mesh(im.mesh), nn.logical_axis_rules(im.rules):
      out = fn(im.params, jax.device_put(ids_BL, batch), jax.device_put(tgt_BL, batch))
      return np.asarray(jax.device_get(out))

  return call


def load_scorer(workdir: str, step: int | None = None, batch_size: int = 64) -> Scorer:
  """A Scorer for the trained model in `workdir` (gpt, bert, lstm or ngram)."""
  from jaxlm import inference, ngram_run
  from jaxlm.ngram import KneserNeyLM

  workdir = str(wd_lib.path(os.path.expanduser(workdir)))  # Local: absolute; gs://: as is.
  config = inference.load_config(workdir)
  family = config.model.family
  if family == "ngram":
    path = wd_lib.path(workdir) / ngram_run.MODEL_FILE
    if not path.exists():
      raise ScoringError(f"No {ngram_run.MODEL_FILE} in {workdir}. Fix: train the n-gram run "
                         "first (python -m jaxlm.main --config=configs/ngram.py --workdir=W).")
    tok = tok_lib.load_tokenizer(workdir)
    return Scorer("causal", tok, 0, ngram=KneserNeyLM.load(path), step=0, family=family)
  im = inference.load_for_inference(workdir, step)
  n = im.mesh.size
  batch_size = -(-batch_size // n) * n  # A multiple of the devices the batch is split over.
  kind = "masked" if family == "bert" else "causal"
  fn = _neural_logprob_fn(im)
  return Scorer(kind, im.tokenizer, int(im.config.data.seq_len), functools.partial(fn),
                batch_size=batch_size, step=im.step, family=family)
