"""Decode speed: tokens/s for batch 1 and 16, KV-cached vs uncached (recompute everything).

  python experiments/generate_bench/bench.py --out=experiments/generate_bench/results.json

The model is the default config's shape (4 layers, width 128, 4 heads, MLP 512, byte
vocabulary padded to 384, learned positions) with random weights: speed does not
depend on the weight values. `--workdir` benchmarks a trained run instead. Each
measurement is the best of `--repeats` timed runs after one compiling run; greedy, no
stop strings, so every row generates exactly `--new_tokens` tokens.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from jaxlm import inference
from jaxlm.data.tokenizers import ByteTokenizer
from jaxlm.generate import Generator
from jaxlm.layers.transformer import TransformerConfig
from jaxlm.models import TransformerLM


def load(args):
  if args.workdir:
    m = inference.load_for_inference(args.workdir)
    return m.model, m.params, m.tokenizer, m.mesh, m.rules
  tok = ByteTokenizer()
  cfg = TransformerConfig(vocab_size=tok.vocab_size, num_layers=4, num_heads=4, emb_dim=128,
                          mlp_dim=512, max_len=args.prompt_tokens + args.new_tokens)
  model = TransformerLM(cfg)
  params = nn.meta.unbox(model.init(jax.random.key(0), jnp.zeros((1, 8), jnp.int32))["params"])
  return model, params, tok, None, ()


def measure(gen: Generator, batch: int, args) -> dict:
  rng = np.random.default_rng(0)
  prompts = [list(rng.integers(7, 263, args.prompt_tokens)) for _ in range(batch)]
  kw = dict(max_new_tokens=args.new_tokens, temperature=0.0)
  t = time.perf_counter()
  gen.generate_ids(prompts, **kw)  # Compiles.
  compile_s = time.perf_counter() - t
  best = float("inf")
  for _ in range(args.repeats):
    t = time.perf_counter()
    outs = gen.generate_ids(prompts, **kw)
    best = min(best, time.perf_counter() - t)
  tokens = sum(len(o.ids) for o in outs)
  return {"batch": batch, "cached": gen.cached, "new_tokens": tokens, "seconds": round(best, 4),
          "tokens_per_sec": round(tokens / best, 1), "first_call_seconds": round(compile_s, 2)}


def main() -> None:
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--workdir", default="")
  p.add_argument("--prompt_tokens", type=int, default=32)
  p.add_argument("--new_tokens", type=int, default=128)
  p.add_argument("--batches", default="1,16")
  p.add_argument("--repeats", type=int, default=2)
  p.add_argument("--modes", default="cached,uncached")
  p.add_argument("--out", default="")
  args = p.parse_args()
  model, params, tok, mesh, rules = load(args)
  rows = []
  load_before = open("/proc/loadavg").read().split()[:3] if os.path.exists("/proc/loadavg") \
      else []
  for cached in (m == "cached" for m in args.modes.split(",")):
    gen = Generator(model, params, tok, mesh, rules, cached=cached)
    for b in (int(x) for x in args.batches.split(",")):
      rows.append(measure(gen, b, args))
      print(json.dumps(rows[-1]), flush=True)
  result = {
      "device": f"{jax.devices()[0].platform} x{jax.device_count()} ({os.cpu_count()} cores)",
      "jax": jax.__version__, "model": str(model.cfg), "prompt_tokens": args.prompt_tokens,
      "loadavg_before": load_before,
      "loadavg_after": open("/proc/loadavg").read().split()[:3], "rows": rows,
  }
  for b in sorted({r["batch"] for r in rows}):
    c = [r["tokens_per_sec"] for r in rows if r["batch"] == b and r["cached"]]
    u = [r["tokens_per_sec"] for r in rows if r["batch"] == b and not r["cached"]]
    if c and u:
      result[f"speedup_batch_{b}"] = round(c[0] / u[0], 2)
  if args.out:
    with open(args.out, "w") as f:
      json.dump(result, f, indent=1)
  print(json.dumps({k: v for k, v in result.items() if k.startswith("speedup")}))


if __name__ == "__main__":
  main()
