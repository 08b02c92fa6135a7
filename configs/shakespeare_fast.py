"""Fast tiny-shakespeare chars: validation loss <= 1.88 in under half nanoGPT's recipe's time.

  python -m jaxlm.lab.bench --config=configs/shakespeare_fast.py --mode=time_to_loss \
      --target_loss=1.88 --config.data.path=../shared/data/tinyshakespeare/input.txt
  python -m jaxlm.main --config=configs/shakespeare_fast.py --workdir=/tmp/shk_fast

nanoGPT's CPU model shape (4 layers, 4 heads, 128 wide, block 64) and data split
(first 90% train, last 10% validation). What changes: Muon (`optimizer.name='muon'`,
peak 0.02) on the blocks' matrices with AdamW at a 6x higher peak (6e-3) for embeddings,
norms and biases, decayed over 500 steps of 16 rows (0.5M tokens; nanoGPT trains 1.5M),
squared-ReLU MLPs and one fused q/k/v matmul (both cheaper per step on CPU), and both
cores used through two CPU devices. Batch 16 rather than 32: per token, the smaller batch
costs less CPU and learns more per token at this size. Measured (quiet machine, 2 cores):
1.853 on the whole validation split at step 500, 24.6 s wall including compile and
evaluations (experiments/bench/README.md: every variant tried, with its curve).
`:adamw` is the previous recipe (AdamW 3e-3, 1,000 steps: 1.873 at step 900 in 31.3 s),
`:b32` the one before it (batch 32, GELU, 700 steps).
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
  c.model.mlp = "relu2"
  c.model.fused_qkv = True
  c.optimizer.b2 = 0.99
  c.optimizer.weight_decay = 0.1
  c.data.batch_size = 16
  c.optimizer.name = "muon"
  c.optimizer.muon_learning_rate = 0.02
  c.optimizer.learning_rate = 6e-3  # AdamW's part: embeddings, norms, biases.
  c.optimizer.warmup_steps = 100
  c.optimizer.end_lr_factor = 0.1
  c.num_train_steps = 500
  c.log_every_steps = 100
  c.eval_every_steps = 100
  c.eval_steps = 10
  c.checkpoint_every_steps = 500
  c.sample.num_tokens = 0
  c.cpu_devices = 2  # Data parallel over both cores of a 2-core CPU (ignored on accelerators).
  if arg in ("adamw", "b32"):
    c.optimizer.name, c.optimizer.learning_rate = "adamw", 3e-3
    c.num_train_steps = c.checkpoint_every_steps = 1000
  if arg == "b32":
    c.model.mlp, c.model.fused_qkv = "gelu", False
    c.data.batch_size = 32
    c.optimizer.warmup_steps = 50
    c.num_train_steps = c.checkpoint_every_steps = 700
  elif arg not in (None, "", "adamw"):
    raise ValueError(f"configs/shakespeare_fast.py:{arg}: unknown variant; use '', 'adamw' or "
                     "'b32'.")
  return c
