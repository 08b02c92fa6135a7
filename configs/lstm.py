"""Multi-layer LSTM LM, byte-level, on the embedded corpus.

  python -m jaxlm.main --config=configs/lstm.py --workdir=/tmp/lstm

Embedding -> 2 LSTM layers -> tied output projection, dropout between layers. The
state is carried across consecutive windows (truncated BPTT, `model.carry_state`):
each batch row is a contiguous data lane and the state lives in the checkpoint.
Evaluation carries the state along contiguous lanes of the eval windows too.
Variants: `smoke`, `wikitext2` (as in configs/gpt.py).
"""

from jaxlm.config import base_config
from jaxlm.recipes import apply_variants


def get_config(arg: str | None = None):
  c = base_config()
  c.model.family = "lstm"
  c.model.num_layers = 2
  c.model.emb_dim = 256
  c.model.dropout = 0.1
  c.model.carry_state = True
  c.optimizer.learning_rate = 1e-2  # Adam on an LSTM wants a larger step than a Transformer.
  c.optimizer.weight_decay = 0.0
  c.num_train_steps = 600
  c.eval_every_steps = 200
  c.checkpoint_every_steps = 200
  return apply_variants(c, arg)
