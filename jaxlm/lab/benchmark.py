"""Measurements behind `python -m jaxlm.lab.bench` (importable, no flags): see `jaxlm.lab.bench`."""

from __future__ import annotations

import json
import os
import resource
import tempfile
import time

from jaxlm import flops

FLOPS_FORMULA = flops.FORMULA  # Real matmuls only, per family: see jaxlm/flops.py.


def measure_peak_flops(n: int = 2048, reps: int = 8) -> float:
  """FLOP/s of the fastest of `reps` jitted n x n fp32 matmuls (what this host can do)."""
  import jax
  import jax.numpy as jnp

  a = jax.random.normal(jax.random.key(0), (n, n), jnp.float32)
  b = jax.random.normal(jax.random.key(1), (n, n), jnp.float32)
  f = jax.jit(lambda a, b: a @ b)
  f(a, b).block_until_ready()
  best = float("inf")
  for _ in range(reps):
    t = time.perf_counter()
    f(a, b).block_until_ready()
    best = min(best, time.perf_counter() - t)
  return 2.0 * n ** 3 / best


def host_memory_mb() -> float:
  """Peak resident memory of this process (ru_maxrss is in KiB on Linux)."""
  return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def device_memory_mb(device) -> float | None:
  stats = device.memory_stats() if hasattr(device, "memory_stats") else None
  if not stats:
    return None  # CPU devices report none.
  return stats.get("peak_bytes_in_use", stats.get("bytes_in_use", 0)) / 2 ** 20


def compiled_memory(compiled) -> dict:
  """Bytes per device XLA planned for the step: arguments, outputs, temporaries."""
  m = compiled.memory_analysis()
  if m is None:
    return {}
  out = {k: int(getattr(m, f"{k}_size_in_bytes", 0)) for k in
         ("argument", "output", "alias", "temp", "generated_code")}
  out["total"] = out["argument"] + out["output"] - out["alias"] + out["temp"]
  return out


def xla_flops(compiled) -> float | None:
  try:
    cost = compiled.cost_analysis()
    cost = cost[0] if isinstance(cost, list | tuple) else cost
    return float(cost.get("flops", 0.0)) or None
  except Exception:  # Not every backend implements it.
    return None


def _device_batches(run, n: int) -> list:
  """The first `n` real training batches, already on device (reused cyclically)."""
  import jax

  from jaxlm.data import pipeline
  it = iter(pipeline.train_dataset(run.config.data, run.tokenizer, run.config.seed,
                                   jax.process_index(), jax.process_count(),
                                   source=run.data))
  return [run.to_global(next(it)) for _ in range(n)]


def op_profile(fn, args_fn, steps: int, top: int = 15, hlo_text: str | None = None) -> dict:
  """Per-op time of `steps` calls from a jax.profiler trace, summed by XLA op kind, or with
  `hlo_text` (the compiled program) by instruction, each with its shape and source op.

  Thread time on the CPU backend's worker threads (two threads overlap, so the total
  can exceed the wall time); e.g. `ynn_fusion` / `dot` are matmuls, the rest
  elementwise fusions, copies and transposes.
  """
  import collections
  import glob
  import re

  import jax
  from jax.profiler import ProfileData

  with tempfile.TemporaryDirectory() as tmp:
    jax.profiler.start_trace(tmp)
    out = None
    for _ in range(steps):
      out = fn(*args_fn())
    jax.block_until_ready(out)
    jax.profiler.stop_trace()
    data = ProfileData.from_file(sorted(glob.glob(f"{tmp}/**/*.xplane.pb", recursive=True))[-1])
  total, count = collections.Counter(), collections.Counter()
  for plane in data.planes:
    for line in plane.lines:
      if line.name.startswith(("python", "tf_XLAPjRt")):
        continue
      for ev in line.events:  # XLA ops only: no Python frames, executor or pool bookkeeping.
        if ev.name.startswith(("$", "ThunkExecutor", "end: ", "SlinkyThreadPool", "Pjit")):
          continue
        kind = ev.name if hlo_text else re.sub(r"\.\d+$", "", ev.name)
        total[kind] += ev.duration_ns
        count[kind] += 1
  all_ms = sum(total.values()) / 1e6 / steps
  about = _instructions(hlo_text) if hlo_text else {}
  return {"op_time_per_step_ms": all_ms, "by": "instruction" if hlo_text else "kind", "ops": [
      {"op": k, "ms_per_step": v / 1e6 / steps, "share": v / 1e6 / steps / max(all_ms, 1e-9),
       "calls_per_step": count[k] / steps, **about.get(k, {})}
      for k, v in total.most_common(top)]}


def _instructions(hlo_text: str) -> dict:
  """{instruction name: {shape, source}} from a compiled HLO module's text."""
  import re

  out = {}
  for line in hlo_text.splitlines():
    m = re.match(r"\s*(?:ROOT )?%?([\w.\-]+) = (\S+) ", line)
    if m:
      src = re.search(r'op_name="([^"]*)"', line)
      out[m.group(1)] = {"shape": m.group(2), "source": src.group(1) if src else ""}
  return out


def throughput(config, workdir: str, steps: int, warmup: int, peak: float,
               devices=None, profile_steps: int = 0, profile_by: str = "kind") -> dict:
  import flax.linen as nn
  import jax
  import numpy as np

  from jaxlm import train

  t0 = time.perf_counter()
  run = train.Run(config, workdir, devices)
  state = run.init_state()
  batches = _device_batches(run, min(max(steps, 1), 16))
  setup_s = time.perf_counter() - t0
  d = config.data
  tokens_per_step = d.batch_size * d.seq_len
  with jax.set_mesh(run.mesh), nn.logical_axis_rules(run.rules):
    t0 = time.perf_counter()
    compiled = run.jit_train_step().lower(state, batches[0]).compile()
    compile_s = time.perf_counter() - t0
    for i in range(warmup):
      state, m = compiled(state, batches[i % len(batches)])
    jax.block_until_ready(m if warmup else state)
    times = []
    for i in range(steps):  # One at a time: each step's own wall time.
      t = time.perf_counter()
      state, m = compiled(state, batches[i % len(batches)])
      jax.block_until_ready(m)
      times.append(time.perf_counter() - t)
    t = time.perf_counter()  # As the training loop dispatches them: one step in flight.
    for i in range(steps):
      prev = m
      state, m = compiled(state, batches[i % len(batches)])
      jax.block_until_ready(prev)
    jax.block_until_ready(m)
    loop_s = (time.perf_counter() - t) / max(steps, 1)
    final_loss = float(m["train_loss"])
    prof = None
    if profile_steps:
      holder = {"state": state, "i": 0}

      def next_args():
        holder["i"] += 1
        return holder["state"], batches[holder["i"] % len(batches)]

      def run_step(st, b):
        holder["state"], met = compiled(st, b)
        return met
      prof = op_profile(run_step, next_args, profile_steps, top=15 if profile_by == "kind" else 40,
                        hlo_text=compiled.as_text() if profile_by == "instruction" else None)
  step_s = float(np.median(times))
  n_dev = run.mesh.size
  peak_total = run.total_peak_flops(peak)  # On CPU, `peak` is the host's (measured there).
  tps = tokens_per_step / step_s
  flops_s = tps * run.flops_per_token
  return {
      "mode": "throughput", "params": run.num_params, "non_embedding_params": run.num_non_embedding,
      "vocab_size": run.tokenizer.vocab_size, "padded_vocab": run.model.cfg.padded_vocab,
      "devices": n_dev, "platform": jax.devices()[0].platform,
      "batch_size": d.batch_size, "seq_len": d.seq_len, "tokens_per_step": tokens_per_step,
      "dtype": config.model.dtype, "setup_s": setup_s, "compile_s": compile_s, "steps": steps,
      "step_time_median_s": step_s, "step_time_min_s": float(np.min(times)),
      "step_time_p90_s": float(np.percentile(times, 90)), "loop_step_time_s": loop_s,
      "tokens_per_s": tps, "loop_tokens_per_s": tokens_per_step / loop_s,
      "flops_per_token": run.flops_per_token, "flops_formula": FLOPS_FORMULA,
      "xla_flops_per_step": xla_flops(compiled), "achieved_flops_per_s": flops_s,
      "peak_flops_per_device": peak, "peak_flops_total": peak_total,
      "mfu": flops_s / peak_total,
      "loop_mfu": tokens_per_step / loop_s * run.flops_per_token / peak_total,
      "compiled_memory_bytes": compiled_memory(compiled),
      "peak_host_memory_mb": host_memory_mb(),
      "peak_device_memory_mb": device_memory_mb(jax.devices()[0]),
      "final_train_loss": final_loss, "op_profile": prof,
  }


def time_to_loss(config, workdir: str, target: float, max_seconds: float,
                 devices=None, quick_stride: int = 4, quick_margin: float = 0.015) -> dict:
  """Trains until the whole validation split's loss is <= target; wall time incl. compile.

  The training loop is `train.train_loop` itself (so the speed measured is the CLI's), with
  hooks: every eval_every_steps, a cheap estimate on every `quick_stride`-th batch of the
  split (spread over it, so unbiased; its first batches are easier text); within
  `quick_margin` of the target, the whole split decides. Evaluation time is part of the wall
  time; the loop stops (and checkpoints) once the target is reached or `max_seconds` pass.
  """
  from jaxlm import train

  t_start = time.perf_counter()
  run = train.Run(config, workdir, devices)

  class Hooks(train.LoopHooks):
    def __init__(self, run):
      super().__init__(run)
      self.history: list[dict] = []
      self.reached: dict | None = None

    def evaluate(self, step: int, params, eval_step_fn, cache: dict) -> dict:
      ev = {"quick_loss": train.evaluate(run, params, eval_step_fn, cache=cache,
                                         stride=quick_stride)["loss"]}
      # The whole split near the target, and at the last step (the real final loss).
      if ev["quick_loss"] <= target + quick_margin or step == config.num_train_steps:
        ev["loss"] = train.evaluate(run, params, eval_step_fn, cache=cache)["loss"]
      return ev

    def describe(self, ev: dict) -> str:
      return "  ".join(f"{k} {v:.4f}" for k, v in ev.items())

    def after_eval(self, step: int, state, ev: dict, data_state: dict) -> bool:
      row = {"step": step, "elapsed_s": time.perf_counter() - t_start,
             "quick_eval_loss": ev["quick_loss"],
             **({"eval_loss": ev["loss"]} if "loss" in ev else {})}
      self.history.append(row)
      print(json.dumps(row), flush=True)
      if row.get("eval_loss", float("inf")) <= target:
        self.reached = row
        return True
      return time.perf_counter() - t_start > max_seconds

    def finish(self, state, result: dict) -> dict:
      return result

  hooks = Hooks(run)
  result = train.train_loop(run, workdir, hooks)
  history, reached = hooks.history, hooks.reached
  last = history[-1] if history else {}
  step = int(result["step"])
  return {
      "mode": "time_to_loss", "target_loss": target, "reached": reached is not None,
      "wall_time_s": (reached or last).get("elapsed_s"), "steps": step,
      "eval_loss": (reached or last).get("eval_loss"), "params": run.num_params,
      "tokens_per_step": config.data.batch_size * config.data.seq_len,
      "tokens_seen": step * config.data.batch_size * config.data.seq_len,
      "history": history, "peak_host_memory_mb": host_memory_mb(),
  }


def print_table(result: dict) -> None:
  rows = [(k, v) for k, v in result.items() if k not in ("history", "op_profile")]
  width = max(len(k) for k, _ in rows)
  for k, v in rows:
    if isinstance(v, float):
      v = f"{v:.4g}" if abs(v) < 1e4 else f"{v:,.0f}"
    elif isinstance(v, dict):
      v = ", ".join(f"{a}={b / 2 ** 20:.1f}MiB" if "bytes" in k else f"{a}={b}"
                    for a, b in v.items())
    print(f"{k:<{width}}  {v}")
  prof = result.get("op_profile")
  if prof:
    print(f"op time per step (all threads): {prof['op_time_per_step_ms']:.1f} ms")
    for o in prof["ops"]:
      where = f"  {o['shape']}  {o['source'][-80:]}" if "shape" in o else ""
      print(f"  {o['ms_per_step']:8.2f} ms  {100 * o['share']:5.1f}%  x{o['calls_per_step']:<6.1f}"
            f" {o['op']}{where}")


def environment() -> dict:
  import jax
  return {"jax": jax.__version__, "xla_flags": os.environ.get("XLA_FLAGS", ""),
          "loadavg": os.getloadavg(), "cpu_count": os.cpu_count(),
          "time": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
