"""Expected cost of the PTB LSTM recipes on one GPU, from their FLOPs (no GPU at hand).

  python experiments/reproductions/gpu_estimate.py   # writes gpu_estimate.json beside it

For each `configs/ptb.py` LSTM variant: training FLOPs per token (`jaxlm.flops`, the count
tested against XLA), the tokens its schedule trains on, their product, and that work's time at
an H200's dense peak (a lower bound: no run reaches peak). Truncated BPTT at batch 20 is
latency-bound on a GPU: each window is `seq_len` dependent cell steps per layer, so the file
also gives the count of dependent steps the schedule runs. The CPU line scales the measured
`ptb_lstm_small_1epoch` speed (results/ptb_lstm_small_1epoch.json) by the FLOPs ratio.
"""

from __future__ import annotations

import json
import os
import statistics
import sys

import flax.linen as nn
import jax
import jax.numpy as jnp

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
sys.path[:0] = [REPO, os.path.join(REPO, "configs")]

import ptb  # noqa: E402  (configs/ptb.py)

from jaxlm import flops, models  # noqa: E402

# NVIDIA H200 SXM datasheet, dense (no sparsity): TF32 and BF16 tensor-core peaks, FLOP/s.
H200_PEAK = {"tf32": 494.7e12, "bf16": 989.4e12}
VOCAB = 10_000  # PTB's word vocabulary (configs/ptb.py builds it from the training split).
VARIANTS = ("lstm_small", "lstm_medium", "lstm_large")


def estimate(variant: str, cpu_tokens_per_s: float | None, small_flops: float | None) -> dict:
  c = ptb.get_config(variant)
  model = models.build_model(c.model, VOCAB, c.data.seq_len)
  ids = jnp.zeros((1, c.data.seq_len), jnp.int32)
  params = nn.unbox(jax.eval_shape(model.init, jax.random.key(0), ids)["params"])
  per_token = flops.flops_per_token(params, c, VOCAB)
  tokens = c.num_train_steps * c.data.batch_size * c.data.seq_len
  total = per_token * tokens
  row = {"variant": variant, "hidden": c.model.lstm_hidden_dim, "bptt": c.data.seq_len,
         "epochs": c.num_train_steps // c.optimizer.steps_per_epoch,
         "steps": c.num_train_steps, "params": int(sum(x.size for x in jax.tree.leaves(params))),
         "flops_per_token": per_token, "train_tokens": tokens, "train_flops": total,
         "dependent_cell_steps": c.num_train_steps * c.data.seq_len * c.model.num_layers,
         "h200_seconds_at_peak": {k: total / v for k, v in H200_PEAK.items()}}
  if cpu_tokens_per_s and small_flops:
    row["cpu_2core_hours_by_flops"] = tokens / (cpu_tokens_per_s * small_flops / per_token) / 3600
  return row


def main() -> None:
  measured = json.load(open(os.path.join(HERE, "results", "ptb_lstm_small_1epoch.json")))
  rates = [r["tokens_per_sec"] for r in measured["metrics"] if "tokens_per_sec" in r]
  cpu = statistics.median(rates)
  small = estimate("lstm_small", None, None)["flops_per_token"]
  rows = [estimate(v, cpu, small) for v in VARIANTS]
  out = {"h200_peak_flops": H200_PEAK, "vocab": VOCAB,
         "cpu_tokens_per_s_lstm_small": cpu, "cpu_source": "results/ptb_lstm_small_1epoch.json",
         "rows": rows}
  path = os.path.join(HERE, "gpu_estimate.json")
  with open(path, "w") as f:
    json.dump(out, f, indent=1)
  print("| variant | params | FLOPs/token | train tokens | train FLOPs | H200 s at TF32 peak "
        "| dependent cell steps | 2-core CPU hours (by FLOPs) |")
  print("|---|---|---|---|---|---|---|---|")
  for r in rows:
    print(f"| {r['variant']} | {r['params']:,} | {r['flops_per_token'] / 1e6:.1f}M | "
          f"{r['train_tokens'] / 1e6:.1f}M | {r['train_flops']:.2e} | "
          f"{r['h200_seconds_at_peak']['tf32']:.1f} | {r['dependent_cell_steps']:,} | "
          f"{r['cpu_2core_hours_by_flops']:.1f} |")
  print(f"wrote {path}")


if __name__ == "__main__":
  main()
