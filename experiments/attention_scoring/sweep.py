"""Attention scoring (scaled dot product vs bilinear h_t^T W_a h_s) x MHA / GQA / MQA.

  python -m jaxlm.lab.sweep experiments/attention_scoring --parallel=2
"""

import os

from jaxlm.lab.sweep import Sweep

TINY = {
    "data.seq_len": 64,
    "data.batch_size": 16,
    "model.num_layers": 2,
    "model.num_heads": 4,
    "model.emb_dim": 64,
    "model.mlp_dim": 256,
    "model.position": "rope",
    "num_train_steps": 250,
    "optimizer.warmup_steps": 25,
    "eval_every_steps": 50,
    "eval_steps": 20,
    "checkpoint_every_steps": 250,
    "log_every_steps": 25,
    "sample.num_tokens": 0,
}
# The corpus: $JAXLM_SHARED_DATA (default ../shared/data, from the repository root).
DATA = os.path.join(os.environ.get("JAXLM_SHARED_DATA", "../shared/data"),
                    "tinyshakespeare", "input.txt")


def get_sweep():
  return Sweep(
      config="configs/shakespeare_char.py",
      overrides={"data.path": DATA, **TINY},
      # num_kv_heads: 4 = MHA (one K/V head per query head), 2 = GQA, 1 = MQA.
      grid={"model.attention": ["dot", "bilinear"], "model.num_kv_heads": [4, 2, 1]},
      seeds=1,
      metric="eval_loss",
      description="Score function and K/V sharing on tiny-shakespeare (char), 4 query heads.",
  )
