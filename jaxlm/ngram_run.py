"""The `ngram` family from the CLI: fit Kneser-Ney on the training split, evaluate, save.

  python -m jaxlm.main --config=configs/ngram.py --workdir=/tmp/ngram

Same tokenizer (`get_tokenizer`, saved in the workdir), same splits and the same
metric definitions as the neural families: loss in nats per predicted token (every
document token and its EOS), perplexity exp(loss), bits per byte = summed nats /
(ln 2 * UTF-8 bytes of the predicted tokens, `tokenizer.token_bytes()`). One
difference by design: each document is scored from a BOS context, where the
packed neural eval sees the previous document's tail.

The model is saved as `<workdir>/ngram.npz` (+ `ngram.json`); a rerun in the same
workdir loads it instead of refitting (resume), after checking order and tokenizer.
"""

from __future__ import annotations

import json
import math
import os
import time

import numpy as np
from absl import logging

from jaxlm import config as config_lib
from jaxlm.checkpoint import CheckpointError, flat_config
from jaxlm.data import augment, sources
from jaxlm.data import tokenizers as tok_lib
from jaxlm.metric_writer import MetricWriter
from jaxlm.ngram import KneserNeyLM

MODEL_FILE, META_FILE = "ngram.npz", "ngram.json"


def tokenized_docs(d, split: str, tokenizer: tok_lib.Tokenizer):
  """Documents of a split as id arrays (no EOS: the n-gram model appends its own)."""
  for text in sources.iter_texts(d, split):
    yield np.asarray(tokenizer.encode(text), np.int32)


def evaluate(lm: KneserNeyLM, docs, token_bytes: np.ndarray) -> dict[str, float]:
  """Loss (nats/token), ppl and bits per byte over `docs`, EOS predicted after each."""
  docs = list(docs)
  ev = lm.evaluate(docs)
  num = ev["num_tokens"]
  nbytes = sum(int(token_bytes[doc].sum()) + int(token_bytes[tok_lib.EOS_ID]) for doc in docs)
  return {"loss": ev["loss"], "ppl": ev["ppl"], "tokens": float(num),
          "bpb": ev["loss"] * num / (math.log(2) * max(nbytes, 1))}


def _load_or_fit(config, workdir: str, tok: tok_lib.Tokenizer) -> KneserNeyLM:
  d, order = config.data, int(config.ngram.order)
  path, meta_path = os.path.join(workdir, MODEL_FILE), os.path.join(workdir, META_FILE)
  meta = {"order": order, "tokenizer": tok.identity(), "train_split": d.train_split}
  if os.path.exists(path):
    saved = {}
    if os.path.exists(meta_path):
      with open(meta_path) as f:
        saved = json.load(f)
    if {k: saved.get(k) for k in meta} != json.loads(json.dumps(meta)):
      raise CheckpointError(f"{path} was fitted with {saved or 'unknown settings'}, this run asks "
                            f"for {meta}. Fix: restore those settings or use a fresh --workdir.")
    logging.info("Resumed: loaded the fitted %d-gram model from %s", order, path)
    return KneserNeyLM.load(path)
  t0 = time.time()
  lm = KneserNeyLM(order, tok.vocab_size).fit(tokenized_docs(d, d.train_split, tok))
  logging.info("Fitted %r in %.1fs", lm, time.time() - t0)
  tmp = path + ".tmp"
  lm.save(tmp)
  os.replace(tmp, path)  # Atomic: a killed run leaves no half-written model.
  with open(meta_path, "w") as f:
    json.dump(meta, f)
  return lm


def train_and_evaluate(config, workdir: str) -> dict:
  """Fits (or loads) the n-gram model in `workdir`, evaluates it, writes metrics.jsonl."""
  config_lib.validate(config, 1)
  os.makedirs(workdir, exist_ok=True)
  d = config.data
  with open(os.path.join(workdir, "config.json"), "w") as f:
    json.dump(flat_config(config), f, indent=1)
  augment.record(d, workdir)  # bias hook: <workdir>/canaries.json, if any.
  tok = tok_lib.get_tokenizer(d.tokenizer, workdir, lambda: sources.iter_texts(d, d.train_split),
                              d)
  lm = _load_or_fit(config, workdir, tok)
  # The model's size as the neural runs log theirs (the sweep report reads this line).
  logging.info("Parameters: %s total (stored n-gram entries, orders 1-%d: %s); vocab %d (%s)",
               f"{sum(lm.num_ngrams):,}", lm.order, lm.num_ngrams, tok.vocab_size, tok.kind)
  ev = evaluate(lm, tokenized_docs(d, d.eval_split, tok), np.asarray(tok.token_bytes()))
  row = {f"eval_{k}": v for k, v in ev.items()}
  writer = MetricWriter(workdir)
  writer.write(0, row)
  writer.close()
  logging.info("eval (%d-gram, %s tokenizer, vocab %d): loss %.4f  ppl %.2f  bpb %.4f",
               lm.order, tok.kind, tok.vocab_size, ev["loss"], ev["ppl"], ev["bpb"])
  return {"step": 0, **row}
