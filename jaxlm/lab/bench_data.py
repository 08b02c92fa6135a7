"""`python -m jaxlm.lab.bench_data --config=configs/default.py`: is the input pipeline fast enough?

Measures, on this machine, the training input pipeline (tfds source -> grain
shuffle -> tokenize -> pack -> batch, on the host, one thread, no prefetch)
in tokens per second for each tokenizer asked for (byte and SentencePiece by
default; the SentencePiece model is trained on the training split with
`config.data.vocab_size`, or taken from `--workdir` if saved there), and the
training step's consumption (jitted `train_step` on the config's model with
that tokenizer's vocabulary, tokens per second). The pipeline keeps up when
its rate is a multiple of the step's; the target is 5x. Results are printed
and written as JSON (`--out`).
"""

from __future__ import annotations

import copy
import json
import os
import platform
import tempfile
import time

import jax
import numpy as np
from absl import app, flags, logging
from ml_collections import config_flags

from jaxlm.data import pipeline, sources
from jaxlm.data import tokenizers as tok_lib

TARGET_RATIO = 5.0


def pipeline_rate(d, tokenizer: tok_lib.Tokenizer, seconds: float, seed: int = 0) -> dict:
  """Batches/s and tokens/s of `train_dataset` (after one warm-up batch)."""
  it = iter(pipeline.train_dataset(d, tokenizer, seed))
  next(it)
  n, t0 = 0, time.perf_counter()
  while time.perf_counter() - t0 < seconds:
    next(it)
    n += 1
  dt = time.perf_counter() - t0
  tokens = n * d.batch_size * d.seq_len
  return {"batches": n, "seconds": dt, "tokens_per_sec": tokens / dt}


def step_rate(config, tok_dir: str, seconds: float) -> dict:
  """Tokens/s the jitted train step consumes on a fixed batch (compile excluded).

  `tok_dir` holds the saved tokenizer, which `train.Run` loads as a run would.
  """
  import flax.linen as nn

  from jaxlm import train  # Heavy import, only when measuring the step.

  run = train.Run(config, tok_dir)
  tokenizer, d = run.tokenizer, config.data
  state = run.init_state()
  step = run.jit_train_step()
  rng = np.random.default_rng(0)
  shape = (d.batch_size, d.seq_len + 1)
  batch = {"tokens": rng.integers(tok_lib.NUM_SPECIAL, tokenizer.vocab_size, shape, np.int32),
           "segment_ids": np.ones(shape, np.int32),
           "positions": np.broadcast_to(np.arange(shape[1], dtype=np.int32), shape).copy()}
  with jax.set_mesh(run.mesh), nn.logical_axis_rules(run.rules):
    batch = run.to_global(batch)
    state, m = step(state, batch)  # Compile.
    jax.block_until_ready(m)
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
      state, m = step(state, batch)
      jax.block_until_ready(m)  # One step at a time, as the loop's metrics fetch does.
      n += 1
    dt = time.perf_counter() - t0
  return {"steps": n, "seconds": dt, "tokens_per_sec": n * d.batch_size * d.seq_len / dt,
          "vocab_size": tokenizer.vocab_size, "num_params": run.num_params}


def bench(config, kinds=("byte", "spm"), seconds: float = 10.0, workdir: str | None = None,
          measure_step: bool = True) -> dict:
  d = config.data
  workdir = workdir or tempfile.mkdtemp(prefix="bench_data_")
  results: dict = {"config": {"data.name": d.name, "data.path": d.path,
                              "batch_size": d.batch_size, "seq_len": d.seq_len,
                              "model": f"{config.model.num_layers}L x {config.model.emb_dim}"},
                   "host": {"cpus": os.cpu_count(), "loadavg_start": os.getloadavg(),
                            "python": platform.python_version(), "jax": jax.__version__,
                            "device": str(jax.devices()[0].platform)},
                   "tokenizers": {}}
  for kind in kinds:
    dk = copy.deepcopy(d)
    dk.tokenizer = kind
    tok_dir = os.path.join(workdir, kind)
    t0 = time.perf_counter()
    tok = tok_lib.get_tokenizer(kind, tok_dir, lambda dk=dk: sources.iter_texts(dk, dk.train_split),
                                dk)
    build_s = time.perf_counter() - t0
    row = {"vocab_size": tok.vocab_size, "tokenizer_build_seconds": build_s,
           "pipeline": pipeline_rate(dk, tok, seconds, config.seed)}
    if measure_step:
      ck = copy.deepcopy(config)
      ck.data.tokenizer = kind
      row["train_step"] = step_rate(ck, tok_dir, seconds)
      row["ratio"] = row["pipeline"]["tokens_per_sec"] / row["train_step"]["tokens_per_sec"]
      row["meets_target"] = row["ratio"] >= TARGET_RATIO
    results["tokenizers"][kind] = row
    logging.info("%s: %s", kind, row)
  results["host"]["loadavg_end"] = os.getloadavg()
  return results


def format_results(r: dict) -> str:
  lines = [f"config: {r['config']}", f"host: {r['host']}"]
  for kind, row in r["tokenizers"].items():
    line = (f"{kind:>5} (vocab {row['vocab_size']:,}): pipeline "
            f"{row['pipeline']['tokens_per_sec']:,.0f} tok/s")
    if "train_step" in row:
      line += (f", train step {row['train_step']['tokens_per_sec']:,.0f} tok/s, ratio "
               f"{row['ratio']:.1f}x (target >= {TARGET_RATIO:.0f}x: "
               f"{'met' if row['meets_target'] else 'NOT met'})")
    lines.append(line)
  return "\n".join(lines)


FLAGS = flags.FLAGS


def main(argv) -> None:
  del argv
  r = bench(FLAGS.config, tuple(FLAGS.tokenizers), FLAGS.seconds, FLAGS.workdir,
            not FLAGS.skip_step)
  print(format_results(r))
  if FLAGS.out:
    os.makedirs(os.path.dirname(os.path.abspath(FLAGS.out)), exist_ok=True)
    with open(FLAGS.out, "w") as f:
      json.dump(r, f, indent=1)
    print(f"Written to {FLAGS.out}")


if __name__ == "__main__":
  config_flags.DEFINE_config_file("config", None, "Config file (configs/*.py).")
  flags.DEFINE_string("workdir", None, "Where trained tokenizers are kept between runs.")
  flags.DEFINE_list("tokenizers", ["byte", "spm"], "Tokenizer kinds to measure.")
  flags.DEFINE_float("seconds", 10.0, "Seconds per measurement.")
  flags.DEFINE_bool("skip_step", False, "Measure the input pipeline only.")
  flags.DEFINE_string("out", "", "JSON file for the results.")
  flags.mark_flags_as_required(["config"])
  app.run(main)
