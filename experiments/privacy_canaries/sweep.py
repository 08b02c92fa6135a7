"""Canaries in PTB (inserted 1, 4 and 16 times): exposure without DP, with DP-SGD at two
noise levels, and with exact-duplicate removal.

  python -m jaxlm.lab.sweep experiments/privacy_canaries --parallel=2
  python experiments/privacy_canaries/report.py   # exposure of every run + the table

Word-level GPT on ../shared/data/ptb (train / valid), one document per line; three
canaries "the random number is d d d d d d d d d" (|R| = 10^9). Small (2 cores): 2 layers
of 64, 1,800 steps of 16 x 64 words (1.8M words, about 2 epochs of PTB's 0.93M); validation
on the first 40 batches (41k words) of ptb.valid.txt.
"""

from jaxlm.lab.sweep import Sweep

BASE = {
    "data.path": "../shared/data/ptb/ptb.train.txt",
    "data.eval_path": "../shared/data/ptb/ptb.valid.txt",
    "data.doc_unit": "line",
    "data.canaries.counts": (1, 4, 16),
    "data.batch_size": 16,
    "num_train_steps": 1800,
    "eval_every_steps": 600,
    "eval_steps": 40,
    "checkpoint_every_steps": 600,
    "log_every_steps": 100,
    "optimizer.warmup_steps": 50,
    "optimizer.learning_rate": 2e-3,
    "model.num_layers": 2,
    "model.num_heads": 2,
    "model.emb_dim": 64,
    "model.mlp_dim": 256,
    "model.dropout": 0.0,
    "sample.num_tokens": 0,
}
DP = {"optimizer.dp.enabled": True, "optimizer.dp.l2_clip": 1.0}


def get_sweep():
  return Sweep(
      config="configs/wikitext2_word.py",
      overrides=BASE,
      variants={
          "no_dp": {},
          "dp_sigma0.5": {**DP, "optimizer.dp.noise_multiplier": 0.5},
          "dp_sigma1.0": {**DP, "optimizer.dp.noise_multiplier": 1.0},
          "dedup": {"data.clean.enabled": True},  # Exact duplicates (and canary copies) go.
      },
      seeds=1,
      metric="eval_ppl",
      columns=("eval_loss", "dp_epsilon"),
      description="Canary exposure vs DP-SGD and deduplication; exposure from report.py.",
  )
