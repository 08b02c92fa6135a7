"""GPT (decoder-only causal LM), byte-level, on the embedded corpus.

  python -m jaxlm.main --config=configs/gpt.py --workdir=/tmp/gpt

Variants (comma-separated): `smoke` trains for seconds (tests, CI); `wikitext2` uses
WikiText-2 (valid.txt, last 10% of its lines held out) with the word tokenizer, the
corpus on which the four families are compared (see README "Model families").
Every Transformer switch (positions, attention, norms, ...) is a `--config.model.*` flag.
"""

from jaxlm.config import base_config
from jaxlm.recipes import apply_variants


def get_config(arg: str | None = None):
  c = base_config()
  c.model.family = "gpt"
  c.num_train_steps = 600
  c.eval_every_steps = 200
  c.checkpoint_every_steps = 200
  return apply_variants(c, arg)
