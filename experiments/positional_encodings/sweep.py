"""Positional encodings: none / learned / sinusoidal / RoPE / ALiBi, also evaluated at 2x length.

  python -m jaxlm.lab.sweep experiments/positional_encodings --parallel=2
"""

import os

from jaxlm.lab.sweep import Sweep

# A small character-level GPT on tiny-shakespeare: a few minutes of CPU for the whole sweep.
TINY = {
    "data.seq_len": 64,
    "data.batch_size": 16,
    "model.num_layers": 2,
    "model.num_heads": 4,
    "model.emb_dim": 64,
    "model.mlp_dim": 256,
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
      grid={"model.position": ["none", "learned", "sinusoidal", "rope", "alibi"]},
      seeds=2,
      metric="eval_loss",
      # The training length and 2x (length extrapolation), both with `jaxlm.restore` on the
      # whole validation split, so eval_loss@64 and eval_loss@128 score the same text
      # (the final `eval_loss` covers only the split's first eval_steps=20 batches).
      extra_eval_seq_lens=(64, 128),
      description="Position schemes on tiny-shakespeare (char), trained at 64 tokens, "
                  "evaluated at 64 and at 128 (2x).",
  )
