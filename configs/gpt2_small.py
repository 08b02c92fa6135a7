"""GPT-2 small (124M: 12 layers, 12 heads, 768 wide, seq 1024) for accelerators.

Check that it fits before renting hardware (ahead-of-time compile on fake CPU devices,
memory per device; vocabulary 50257 padded to 50304):

  python -m jaxlm.lab.bench --config=configs/gpt2_small.py --aot --mesh=256,1,1 --vocab_size=50257

Train on a GPU/TPU host (bf16 compute, fp32 master weights, scanned + rematerialized layers):

  python -m jaxlm.main --config=configs/gpt2_small.py --workdir=/tmp/gpt2 \
      --config.data.tokenizer=spm --config.data.vocab_size=32000
"""

from jaxlm.config import base_config


def get_config(arg: str | None = None):
  c = base_config()
  c.data.batch_size = 256  # 262k tokens per step.
  c.data.seq_len = 1024
  c.model.num_layers = 12
  c.model.num_heads = 12
  c.model.emb_dim = 768
  c.model.mlp_dim = 3072
  c.model.vocab_multiple = 128
  c.model.dtype = "bfloat16"
  c.model.scan_layers = True
  c.model.remat = "dots_saveable"
  c.optimizer.learning_rate = 6e-4
  c.optimizer.warmup_steps = 2000
  c.num_train_steps = 100_000
  c.eval_every_steps = 1000
  c.eval_steps = 100
  c.checkpoint_every_steps = 2000
  if arg == "smoke":  # The same code path, sized for a CPU test.
    c.data.batch_size, c.data.seq_len = 8, 32
    c.model.num_layers, c.model.num_heads, c.model.emb_dim, c.model.mlp_dim = 2, 2, 32, 64
  return c
