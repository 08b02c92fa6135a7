"""What one batched decode step costs on this machine, by rows and cache length.

  python experiments/serve_bench/decode_cost.py [--model=tiny|medium]
  # writes decode_cost.json/.md (tiny) or decode_cost_medium.json/.md

A serving benchmark model (run.py's MODELS: randomly initialised byte-level GPTs, RoPE,
context 128) decodes one token for S rows over a KV cache of C slots: the decoder call the
continuous-batching engine runs each step (`Generator._decoder(C)`, cache donated, as the
engine does). Reported: milliseconds per step and per generated token (step / S). Batching
can only raise throughput where a step of S rows costs less than S steps of one row.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(os.path.dirname(HERE)))


def step_ms(gen, rows: int, cache_len: int, repeats: int) -> float:
  import jax
  import jax.numpy as jnp

  dec = gen._decoder(cache_len)
  ids = jnp.zeros((rows, 1), jnp.int32)
  cache = gen.empty_cache(rows, cache_len)
  apply = jax.jit(lambda p, c, t: dec.apply({"params": gen._params(p), "cache": c}, t, t,
                                            jnp.ones_like(t), mutable=["cache"]),
                  donate_argnums=(1,))
  best = float("inf")
  with gen._context():
    for _ in range(3):  # Best of 3 rounds of `repeats` steps (the cache index stays < C).
      out, upd = apply(gen.params, cache, ids)
      cache = jax.tree.map(jnp.zeros_like, upd["cache"])
      jax.block_until_ready(out)
      t = time.perf_counter()
      for _ in range(repeats):
        out, upd = apply(gen.params, cache, ids)
        cache = upd["cache"]
      jax.block_until_ready(out)
      best = min(best, (time.perf_counter() - t) / repeats * 1e3)
      cache = jax.tree.map(jnp.zeros_like, cache)
  return best


def main() -> int:
  p = argparse.ArgumentParser()
  p.add_argument("--model", default="tiny", choices=("tiny", "medium"))
  p.add_argument("--rows", default="1,4,16")
  p.add_argument("--cache_lens", default="64,128,256")
  p.add_argument("--repeats", type=int, default=30)
  p.add_argument("--out", default=HERE)
  a = p.parse_args()
  import jax
  from run import random_generator  # The serving benchmark's model (run.py, this folder).
  gen = random_generator(a.model)
  load_before = os.getloadavg()
  rows_ = [int(x) for x in a.rows.split(",")]
  lens = [int(x) for x in a.cache_lens.split(",")]
  results = []
  for c in lens:
    for s in rows_:
      ms = step_ms(gen, s, c, min(a.repeats, c - 1))
      results.append({"rows": s, "cache_len": c, "ms_per_step": ms, "ms_per_token": ms / s})
      print(f"rows {s:3d}  cache {c:4d}: {ms:7.3f} ms/step  {ms / s:7.3f} ms/token", flush=True)
  out = {"results": results, "load_before": load_before, "load_after": os.getloadavg(),
         "cpus": os.cpu_count(), "machine": platform.processor() or platform.machine(),
         "jax": jax.__version__, "date": time.strftime("%Y-%m-%d")}
  name = "decode_cost" + ("" if a.model == "tiny" else f"_{a.model}")
  out["model"] = a.model
  with open(os.path.join(a.out, f"{name}.json"), "w") as f:
    json.dump(out, f, indent=1)
  lines = ["| rows | cache slots | ms per step | ms per token |", "|---|---|---|---|"]
  lines += [f"| {r['rows']} | {r['cache_len']} | {r['ms_per_step']:.3f} | "
            f"{r['ms_per_token']:.3f} |" for r in results]
  lines.append(f"\nLoad average before {load_before}, after {out['load_after']}; "
               f"{out['cpus']} CPUs.")
  with open(os.path.join(a.out, f"{name}.md"), "w") as f:
    f.write("\n".join(lines) + "\n")
  return 0


if __name__ == "__main__":
  sys.exit(main())
