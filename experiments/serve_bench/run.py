"""Load benchmark: N concurrent clients against `jaxlm.serve` on 127.0.0.1, continuous
batching vs one-at-a-time serving, in the same run.

  python experiments/serve_bench/run.py [--model=medium|tiny] [--clients=1,4,16,64]
      [--requests_per_client=2] [--max_tokens=32] [--slots=16] [--time_budget_s=120]
      [--workdir=W]

Each level starts a fresh server process per mode (`--slots=S` and `--slots=0`, the old
serial server), warms it up, then N client threads each send `requests_per_client`
streaming `POST /v1/completions` requests back to back (stopping early at the time
budget). Reported per level and mode: generated tokens/s over the wall time, p50/p99
request latency, p50/p99 time to first token. Without `--workdir` the server holds a
randomly initialised byte-level GPT of `--model`'s size (the decode path is what is
measured): `medium`, 6 layers x 512 (19M parameters: a decode step reads every weight, as
serving a real model does), or `tiny`, 2 layers x 128 (0.4M parameters, in the CPU's cache:
a step's cost is each row's KV cache, which batching does not share). Writes
results_<model>.json (with the host's load average) and results_<model>.md next to this file
(results_workdir.* with `--workdir`).
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import subprocess
import sys
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))


MODELS = {  # Random byte-level GPTs (RoPE, context 128).
    "tiny": {"num_layers": 2, "num_heads": 4, "emb_dim": 128, "mlp_dim": 512},
    "medium": {"num_layers": 6, "num_heads": 8, "emb_dim": 512, "mlp_dim": 2048},
}


def random_generator(model: str = "tiny"):
  """The benchmark's model: a random byte-level GPT of size `model` (see MODELS)."""
  import flax.linen as nn
  import jax
  import jax.numpy as jnp

  from jaxlm.data.tokenizers import ByteTokenizer
  from jaxlm.generate import Generator
  from jaxlm.layers.transformer import TransformerConfig
  from jaxlm.models import TransformerLM
  tok = ByteTokenizer()
  cfg = TransformerConfig(vocab_size=tok.vocab_size, max_len=128, position="rope",
                          **MODELS[model])
  net = TransformerLM(cfg)
  params = nn.meta.unbox(net.init(jax.random.key(0), jnp.zeros((1, 4), jnp.int32))["params"])
  return Generator(net, params, tok, max_context=128)


def serve_random(slots: int, max_queue: int, model: str) -> None:
  """Server process: a random GPT of size `model` behind jaxlm.serve (prints its port)."""
  from jaxlm.serve import Service, make_server
  srv = make_server(Service(random_generator(model), max_new_tokens=128, slots=slots,
                            max_queue=max_queue, warmup=True),
                    "127.0.0.1", 0)
  print(f"serving on http://127.0.0.1:{srv.server_port}", flush=True)
  srv.serve_forever()


def start_server(slots: int, max_queue: int, workdir: str | None, model: str):
  env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=1",
             PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""))
  if workdir:
    cmd = [sys.executable, "-m", "jaxlm.serve", f"--workdir={workdir}", "--port=0",
           f"--slots={slots}", f"--max_queue={max_queue}", "--warmup"]
  else:
    cmd = [sys.executable, __file__, f"--serve_slots={slots}", f"--max_queue={max_queue}",
           f"--model={model}"]
  proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, text=True)
  line = proc.stdout.readline()
  if "serving" not in line:
    proc.kill()
    raise RuntimeError(f"server did not start: {line!r}")
  return proc, int(line.rsplit(":", 1)[1])


def one_request(port: int, i: int, max_tokens: int) -> dict:
  body = json.dumps({"prompt": f"Request {i}: the model says", "max_tokens": max_tokens,
                     "temperature": 0.8, "seed": i, "stream": True,
                     "stream_options": {"include_usage": True}})
  t0 = time.time()
  conn = http.client.HTTPConnection("127.0.0.1", port, timeout=600)
  conn.request("POST", "/v1/completions", body, {"Content-Type": "application/json"})
  resp = conn.getresponse()
  if resp.status != 200:
    return {"status": resp.status, "latency": time.time() - t0}
  ttft, tokens = None, 0
  for raw in resp:
    line = raw.decode().strip()
    if not line.startswith("data: ") or line == "data: [DONE]":
      continue
    chunk = json.loads(line[6:])
    if chunk.get("usage"):
      tokens = chunk["usage"]["completion_tokens"]
    elif chunk["choices"][0]["text"] and ttft is None:
      ttft = time.time() - t0
  conn.close()
  done = time.time() - t0
  return {"status": 200, "latency": done, "ttft": ttft if ttft is not None else done,
          "tokens": tokens}


def pct(xs, q):
  xs = sorted(xs)
  return xs[min(len(xs) - 1, int(round(q / 100 * (len(xs) - 1))))] if xs else float("nan")


def run_level(port, clients, per_client, max_tokens, budget) -> dict:
  results, lock, t_end = [], threading.Lock(), time.time() + budget

  def client(c):
    for k in range(per_client):
      if time.time() > t_end:
        return
      r = one_request(port, c * 1000 + k, max_tokens)
      with lock:
        results.append(r)

  t0 = time.time()
  threads = [threading.Thread(target=client, args=(c,)) for c in range(clients)]
  for t in threads:
    t.start()
  for t in threads:
    t.join()
  wall = time.time() - t0
  ok = [r for r in results if r["status"] == 200]
  toks = sum(r["tokens"] for r in ok)
  return {"clients": clients, "requests": len(results), "ok": len(ok), "wall_s": wall,
          "tokens": toks, "tokens_per_s": toks / wall,
          "p50_latency_s": pct([r["latency"] for r in ok], 50),
          "p99_latency_s": pct([r["latency"] for r in ok], 99),
          "p50_ttft_s": pct([r["ttft"] for r in ok], 50),
          "p99_ttft_s": pct([r["ttft"] for r in ok], 99)}


def table(out: dict) -> str:
  rows = ["| clients | mode | requests | tokens/s | p50 latency s | p99 latency s | p50 TTFT s |"
          " p99 TTFT s | speed-up vs serial |", "|---|---|---|---|---|---|---|---|---|"]
  serial = {r["clients"]: r for r in out["serial"]}
  for mode in ("batched", "serial"):
    for r in out[mode]:
      base = serial[r["clients"]]["tokens_per_s"]
      rows.append(f"| {r['clients']} | {mode} | {r['ok']}/{r['requests']} | "
                  f"{r['tokens_per_s']:.1f} | {r['p50_latency_s']:.2f} | "
                  f"{r['p99_latency_s']:.2f} | {r['p50_ttft_s']:.2f} | {r['p99_ttft_s']:.2f} | "
                  f"{r['tokens_per_s'] / base:.2f}x |")
  return "\n".join(rows)


def main() -> int:
  p = argparse.ArgumentParser()
  p.add_argument("--model", default="medium", choices=sorted(MODELS))
  p.add_argument("--clients", default="1,4,16,64")
  p.add_argument("--requests_per_client", type=int, default=2)
  p.add_argument("--max_tokens", type=int, default=32)
  p.add_argument("--slots", type=int, default=16)
  p.add_argument("--max_queue", type=int, default=128)
  p.add_argument("--time_budget_s", type=float, default=120.0)
  p.add_argument("--workdir", default=None)
  p.add_argument("--serve_slots", type=int, default=None, help=argparse.SUPPRESS)
  p.add_argument("--out", default=HERE)
  a = p.parse_args()
  if a.serve_slots is not None:
    serve_random(a.serve_slots, a.max_queue, a.model)
    return 0
  levels = [int(x) for x in a.clients.split(",")]
  out = {"config": vars(a), "loadavg_before": os.getloadavg(), "cpus": os.cpu_count(),
         "batched": [], "serial": []}
  for mode, slots in (("batched", a.slots), ("serial", 0)):
    proc, port = start_server(slots, a.max_queue, a.workdir, a.model)
    try:
      for n in levels:
        run_level(port, min(n, 4), 1, a.max_tokens, a.time_budget_s)  # Warm-up: compile.
        r = run_level(port, n, a.requests_per_client, a.max_tokens, a.time_budget_s)
        r["loadavg"] = os.getloadavg()
        out[mode].append(r)
        print(mode, json.dumps(r), flush=True)
    finally:
      proc.kill()
      proc.wait()
  out["loadavg_after"] = os.getloadavg()
  name = "results_" + ("workdir" if a.workdir else a.model)
  with open(os.path.join(a.out, f"{name}.json"), "w") as f:
    json.dump(out, f, indent=1)
  md = table(out)
  with open(os.path.join(a.out, f"{name}.md"), "w") as f:
    f.write(md + f"\n\nLoad average (1, 5, 15 min) before: {out['loadavg_before']}, after: "
            f"{out['loadavg_after']}; {out['cpus']} CPUs.\n")
  print(md)
  return 0


if __name__ == "__main__":
  sys.exit(main())
