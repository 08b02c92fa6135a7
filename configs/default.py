"""Default: a small byte-level GPT on the embedded corpus (no download, a few minutes on CPU).

Measured on a quiet 2-core CPU: 3 min 20 s in all, ~14,000 tokens/s; validation loss
5.54 -> 2.66 (step 200) -> 2.32 (400) -> 2.07 nats/byte (600; 3.00 bits per byte).

  python -m jaxlm.main --config=configs/default.py --workdir=/tmp/jaxlm

Variants: `configs/default.py:smoke` trains for a few seconds (tests, CI).
"""

from jaxlm.config import base_config


def get_config(arg: str | None = None):
  c = base_config()
  c.num_train_steps = 600
  c.optimizer.learning_rate = 2e-3
  c.cpu_devices = 2  # Both cores of a laptop CPU, data parallel (ignored on accelerators).
  c.eval_every_steps = 200
  c.checkpoint_every_steps = 200
  if arg == "smoke":
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
    c.sample.num_tokens = 16
  return c
