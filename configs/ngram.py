"""Kneser-Ney n-gram LM (interpolated, modified), byte-level, on the embedded corpus.

  python -m jaxlm.main --config=configs/ngram.py --workdir=/tmp/ngram

Fits on the training split with the run's tokenizer, evaluates the validation split with
the neural families' loss/ppl/bpb definitions, saves `ngram.npz` in the workdir (a rerun
reuses it). Order: `--config.ngram.order=5`. Variants: `smoke`, `wikitext2`.
"""

from jaxlm.config import base_config
from jaxlm.recipes import apply_variants


def get_config(arg: str | None = None):
  c = base_config()
  c.model.family = "ngram"
  c.ngram.order = 5
  c = apply_variants(c, arg)
  if c.data.tokenizer == "word":
    c.ngram.order = 3  # Word-level data are sparse: higher orders add little.
  return c
