"""The `ngram` family from the CLI: fit Kneser-Ney on the training split, evaluate, save.

  python -m jaxlm.main --config=configs/ngram.py --workdir=/tmp/ngram

Same tokenizer (`get_tokenizer`, saved in the workdir), same splits and the same
metric definitions as the neural families: loss in nats per predicted token (every
document token and its EOS), perplexity exp(loss), bits per byte = summed nats /
(ln 2 * UTF-8 bytes of the source text the predicted tokens cover, each document's
bytes plus one for its newline: `Tokenizer.encode_document`). One
difference by design: each document is scored from a BOS context, where the
packed neural eval sees the previous document's tail.

The model is saved as `<workdir>/ngram.npz` (+ `ngram.json`); a rerun in the same
workdir loads it instead of refitting (resume), after checking order and tokenizer.
"""

from __future__ import annotations

import io
import json
import time

import numpy as np
from absl import logging

from jaxlm import config as config_lib
from jaxlm import metrics as metrics_lib
from jaxlm import workdir as wd_lib
from jaxlm.checkpoint import CheckpointError
from jaxlm.data import augment, sources
from jaxlm.data import tokenizers as tok_lib
from jaxlm.metric_writer import MetricWriter
from jaxlm.ngram import KneserNeyLM

MODEL_FILE, META_FILE = "ngram.npz", "ngram.json"


def tokenized_docs(data: sources.DataSource, split: str, tokenizer: tok_lib.Tokenizer,
                   with_bytes: bool = False):
  """Documents of a split as id arrays (no EOS: the n-gram model appends its own).

  `with_bytes`: (ids, source bytes of the document and its EOS) pairs, for `evaluate`.
  """
  for text in data.texts(split):
    if with_bytes:
      ids, nbytes = tokenizer.encode_document(text)
      yield ids[:-1], int(nbytes.sum())
    else:
      yield np.asarray(tokenizer.encode(text), np.int32)


def evaluate(lm: KneserNeyLM, docs) -> dict[str, float]:
  """Loss (nats/token), ppl and bits per byte over `docs` ((ids, bytes) pairs from
  `tokenized_docs(..., with_bytes=True)`), EOS predicted after each."""
  docs = list(docs)
  ev = lm.evaluate([ids for ids, _ in docs])
  num = ev["num_tokens"]
  nbytes = sum(n for _, n in docs)
  out = metrics_lib.lm_metrics(ev["loss"] * num, num, max(nbytes, 1))
  return {"loss": out["loss"], "ppl": out["ppl"], "tokens": float(num), "bpb": out["bpb"]}


def _load_or_fit(config, workdir: str, tok: tok_lib.Tokenizer,
                 data: sources.DataSource) -> KneserNeyLM:
  d, order = config.data, int(config.ngram.order)
  path, meta_path = wd_lib.path(workdir) / MODEL_FILE, wd_lib.path(workdir) / META_FILE
  meta = {"order": order, "tokenizer": tok.identity(), "train_split": d.train_split}
  if path.exists():
    saved = wd_lib.read_json(meta_path) if meta_path.exists() else {}
    if {k: saved.get(k) for k in meta} != json.loads(json.dumps(meta)):
      raise CheckpointError(f"{path} was fitted with {saved or 'unknown settings'}, this run asks "
                            f"for {meta}. Fix: restore those settings or use a fresh --workdir.")
    logging.info("Resumed: loaded the fitted %d-gram model from %s", order, path)
    return KneserNeyLM.load(path)
  t0 = time.time()
  lm = KneserNeyLM(order, tok.vocab_size).fit(tokenized_docs(data, d.train_split, tok))
  logging.info("Fitted %r in %.1fs", lm, time.time() - t0)
  buf = io.BytesIO()
  lm.save(buf)
  wd_lib.write_bytes(path, buf.getvalue())  # Atomic: a killed run leaves no half-written model.
  wd_lib.write_json(meta_path, meta, indent=None)
  return lm


def train_and_evaluate(config, workdir: str) -> dict:
  """Fits (or loads) the n-gram model in `workdir`, evaluates it, writes metrics.jsonl."""
  config_lib.validate(config, 1)
  wd_lib.ensure_writable(workdir)  # Bad path / read-only / full: one line naming it, no work.
  d = config.data
  data = sources.DataSource(d)  # Opened once: tokenizer, fit and evaluation read it.
  tok = tok_lib.get_tokenizer(d.tokenizer, workdir, lambda: data.texts(d.train_split), d)
  lm = _load_or_fit(config, workdir, tok, data)
  wd_lib.write_config(workdir, config)  # Atomically, once the fitted model is accepted.
  augment.record(d, workdir)  # <workdir>/canaries.json, if canaries were inserted.
  # The model's size as the neural runs log theirs (the sweep report reads this line).
  logging.info("Parameters: %s total (stored n-gram entries, orders 1-%d: %s); vocab %d (%s)",
               f"{sum(lm.num_ngrams):,}", lm.order, lm.num_ngrams, tok.vocab_size, tok.kind)
  ev = evaluate(lm, tokenized_docs(data, d.eval_split, tok, with_bytes=True))
  row = {f"eval_{k}": v for k, v in ev.items()}
  writer = MetricWriter(workdir, resume_step=-1)  # Re-evaluated each run: one step-0 row.
  writer.write(0, row)
  writer.close()
  logging.info("eval (%d-gram, %s tokenizer, vocab %d): loss %.4f  ppl %.2f  bpb %.4f",
               lm.order, tok.kind, tok.vocab_size, ev["loss"], ev["ppl"], ev["bpb"])
  return {"step": 0, **row}
