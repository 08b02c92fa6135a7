"""Fast tiny-shakespeare characters: validation loss <= 1.88 in well under nanoGPT's 165 s.

  python -m jaxlm.bench --config=configs/shakespeare_fast.py --mode=time_to_loss \
      --target_loss=1.88 --config.data.path=../shared/data/tinyshakespeare/input.txt
  python -m jaxlm.main --config=configs/shakespeare_fast.py --workdir=/tmp/shk_fast

nanoGPT's CPU model shape (4 layers, 4 heads, 128 wide, block 64) and data split
(first 90% train, last 10% validation); what changes is the schedule: a 3x higher
peak learning rate with a short warmup, decayed over fewer steps, and a larger batch
that keeps the matmuls busier per step. Variants: `:b12` keeps nanoGPT's batch of 12.
"""

from jaxlm.config import base_config


def get_config(arg: str | None = None):
  c = base_config()
  c.data.name = ""
  c.data.path = "../shared/data/tinyshakespeare/input.txt"
  c.data.doc_unit = "paragraph"
  c.data.val_split = "tail"
  c.data.val_fraction = 0.1
  c.data.tokenizer = "char"
  c.data.seq_len = 64
  c.model.num_layers, c.model.num_heads, c.model.emb_dim, c.model.mlp_dim = 4, 4, 128, 512
  c.optimizer.b2 = 0.99
  c.optimizer.weight_decay = 0.1
  c.data.batch_size = 32
  c.optimizer.learning_rate = 3e-3
  c.optimizer.warmup_steps = 50
  c.optimizer.end_lr_factor = 0.1
  c.num_train_steps = 700
  c.log_every_steps = 100
  c.eval_every_steps = 100
  c.eval_steps = 10
  c.checkpoint_every_steps = 700
  c.sample.num_tokens = 0
  c.cpu_devices = 2  # Data parallel over both cores of a 2-core CPU (ignored on accelerators).
  if arg == "b12":
    c.data.batch_size = 12
    c.optimizer.learning_rate = 2e-3
    c.num_train_steps = 1500
    c.eval_every_steps = 100
    c.checkpoint_every_steps = 1500
  return c
