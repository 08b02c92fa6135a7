"""Variants shared by the family recipes (configs/gpt.py, bert.py, lstm.py, ngram.py).

`arg` is a comma-separated list: `smoke` (seconds on a laptop: tests, CI) and
`wikitext2` (word-level WikiText-2 from `$JAXLM_SHARED_DATA` or ../shared/data: its
valid.txt, one document per line, the last 10% of lines held out for validation;
the same split and tokenizer for every family, so their perplexities compare).
"""

from __future__ import annotations

import os


def apply_variants(c, arg: str | None):
  """Applies the comma-separated variants in `arg` to config `c`; unknown names fail."""
  names = [a for a in (arg or "").split(",") if a]
  for name in names:
    if name not in VARIANTS:
      raise ValueError(f"Unknown recipe variant {name!r}; known: {sorted(VARIANTS)}.")
  for name in sorted(names, key=lambda n: n != "wikitext2"):  # Data first, then size.
    VARIANTS[name](c)
  return c


def wikitext2(c) -> None:
  root = os.environ.get("JAXLM_SHARED_DATA", "../shared/data")
  d = c.data
  d.name = ""
  d.path = os.path.join(root, "wikitext-2", "valid.txt")
  d.doc_unit = "line"
  d.val_split = "tail"
  d.val_fraction = 0.1
  d.tokenizer = "word"
  d.batch_size = 32
  d.seq_len = 64
  c.sample.prompt = "The"


def smoke(c) -> None:
  c.num_train_steps = 20
  c.log_every_steps = 5
  c.eval_every_steps = 10
  c.eval_steps = 4
  c.checkpoint_every_steps = 10
  c.data.batch_size = 8
  c.data.seq_len = 32
  c.model.num_layers = 2
  c.model.emb_dim = 32
  c.model.mlp_dim = 64
  c.optimizer.warmup_steps = 5
  c.sample.num_tokens = min(c.sample.num_tokens, 16)
  c.ngram.order = 3


VARIANTS = {"smoke": smoke, "wikitext2": wikitext2}
