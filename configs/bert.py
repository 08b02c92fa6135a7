"""BERT-style bidirectional encoder trained with masked LM, byte-level, on the embedded corpus.

  python -m jaxlm.main --config=configs/bert.py --workdir=/tmp/bert

15% of the tokens are selected (80% -> <mask>, 10% -> random, 10% kept; `config.mlm.*`);
the loss, perplexity, bits per byte and `eval_mlm_accuracy` are over the selected tokens
only (a pseudo-perplexity, not comparable with a causal LM's). Type embeddings for
alternating packed documents: `--config.model.type_vocab_size=2`.
Variants: `smoke`, `wikitext2` (as in configs/gpt.py).
"""

from jaxlm.config import base_config
from jaxlm.recipes import apply_variants


def get_config(arg: str | None = None):
  c = base_config()
  c.model.family = "bert"
  c.model.causal = False
  c.model.position = "learned"
  c.model.type_vocab_size = 2
  c.optimizer.learning_rate = 1e-3
  c.num_train_steps = 600
  c.eval_every_steps = 200
  c.checkpoint_every_steps = 200
  c.sample.num_tokens = 0  # An encoder does not generate.
  return apply_variants(c, arg)
