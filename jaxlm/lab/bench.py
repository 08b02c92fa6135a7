"""Benchmark: step time, tokens/s, MFU and memory of a config; time to a target loss; AOT fit.

  python -m jaxlm.lab.bench --config=configs/shakespeare_char.py --steps=50 --out=bench.json
  python -m jaxlm.lab.bench --config=configs/shakespeare_fast.py --mode=time_to_loss \
      --target_loss=1.88
  python -m jaxlm.lab.bench --config=configs/gpt2_small.py --aot --mesh=256,1,1
  python -m jaxlm.lab.bench --vs=nanogpt --rounds=3 --out=experiments/bench/results/vs_nanogpt.json
  python -m jaxlm.lab.bench --vs=time_to_loss --rounds=3 \
      --out=experiments/bench/results/vs_time_to_loss.json

`throughput` compiles the real train step (timed), runs warm-up steps, then
times `--steps` steps one by one (each waited for: the median is the steady
state step time) and once more back to back as the training loop dispatches
them (tokens/s of the loop). Model FLOPs/token is `flops.flops_per_token`:
6 * (non-embedding params + vocab * width) + 12 * layers * seq_len * attention width.
MFU divides achieved FLOP/s by a peak measured on the spot (a large jitted fp32
matmul) unless `--peak_flops` gives one. `time_to_loss` trains the recipe and
stops at the first evaluation whose loss over the WHOLE validation split is at
most the target; the wall time counts everything from building the run
(tokenizer, compile, data, evals). `--aot` lowers and compiles the step for a
mesh of fake CPU devices and reports memory per device (see `jaxlm.lab.aot`).
`--vs=nanogpt|lstm` needs no config: it runs a peer program (nanoGPT, PyTorch's
word_language_model) and jaxlm's main CLI interleaved, `--rounds` rounds, on the same shapes,
and reports both tokens/s and their ratio with the machine (see `jaxlm.lab.vs`).
"""

from __future__ import annotations

import json
import os
import shlex
import sys
import tempfile

from absl import app, flags
from ml_collections import config_flags

from jaxlm import sharding
from jaxlm.lab import benchmark, vs, vs_ttl

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file("config", None, "Config file (configs/*.py).", lock_config=True)
flags.DEFINE_enum("mode", "throughput", ["throughput", "time_to_loss"], "What to measure.")
flags.DEFINE_integer("steps", 50, "Timed steps (throughput).")
flags.DEFINE_integer("warmup", 5, "Untimed steps after compile (throughput).")
flags.DEFINE_float("peak_flops", 0.0, "Peak FLOP/s per device for MFU (per host on CPU, "
                   "whose JAX devices share the cores); 0 = measure now.")
flags.DEFINE_float("target_loss", 1.88, "Validation loss to reach (time_to_loss).")
flags.DEFINE_integer("max_seconds", 600, "Give up after this long (time_to_loss).")
flags.DEFINE_integer("quick_stride", 4, "time_to_loss: estimate on every Nth validation batch.")
flags.DEFINE_float("quick_margin", 0.015, "time_to_loss: whole split once the estimate is "
                   "within this of the target.")
flags.DEFINE_integer("profile_steps", 0, "Also trace this many steps: time per XLA op kind.")
flags.DEFINE_enum("profile_by", "kind", ["kind", "instruction"], "--profile_steps: sum by op "
                  "kind, or list the top instructions with their shapes and source ops.")
flags.DEFINE_string("out", "", "Write the results as JSON here.")
flags.DEFINE_string("workdir", "", "Tokenizer cache etc.; '' = a temporary directory.")
flags.DEFINE_bool("aot", False, "Ahead-of-time compile for --mesh; no data, no execution.")
flags.DEFINE_string("mesh", "", "AOT mesh shape 'data,fsdp,tensor' (e.g. 256,1,1 or 16,16,1).")
flags.DEFINE_integer("vocab_size", 0, "AOT vocabulary size (e.g. 50257); 0 = 256 (bytes).")
flags.DEFINE_enum("vs", None, sorted(vs.KINDS) + ["time_to_loss"],
                  "Side by side with a peer program (no config): tokens/s at one shape "
                  "(nanogpt, lstm) or wall time to validation loss --target_loss "
                  "(time_to_loss: nanoGPT's recipe against configs/shakespeare_fast.py).")
flags.DEFINE_integer("rounds", 3, "--vs: rounds of (peer, jaxlm), interleaved.")
flags.DEFINE_string("peers", "/tmp/peers", "--vs: where ../shared/peers/setup.sh built the peers.")
flags.DEFINE_string("data_root", os.environ.get("JAXLM_SHARED_DATA", "../shared/data"),
                    "--vs: the shared data folder (tinyshakespeare/, ptb/).")
flags.DEFINE_integer("vs_steps", 0, "--vs: iterations per side and round; 0 = the kind's "
                     "default (nanogpt 300, lstm 160).")
flags.DEFINE_float("vs_budget_s", 90.0, "--vs: stop a side after this long once it has "
                   f"{vs.MIN_SAMPLES} iterations past the {vs.WARMUP}-iteration warm-up.")
flags.DEFINE_string("jaxlm_args", "", "--vs: more flags for jaxlm's side (e.g. "
                    "'--config.cpu_devices=2').")
flags.register_validator("config", lambda c: c is not None or FLAGS["vs"].value is not None,
                         "--config is required (unless --vs).")


def main_vs() -> None:
  """--vs: the side-by-side comparison; a missing peer is an error naming setup.sh."""
  kind = vs_ttl if FLAGS.vs == "time_to_loss" else vs
  try:
    if kind is vs_ttl:
      result = vs_ttl.run_vs_ttl(FLAGS.rounds, FLAGS.peers, FLAGS.data_root, FLAGS.target_loss,
                                 jaxlm_args=shlex.split(FLAGS.jaxlm_args))
    else:
      result = vs.run_vs(FLAGS.vs, FLAGS.rounds, FLAGS.peers, FLAGS.data_root, FLAGS.vs_steps,
                         FLAGS.vs_budget_s, jaxlm_args=shlex.split(FLAGS.jaxlm_args))
  except vs.PeersMissing as e:
    print(f"error: {e}", file=sys.stderr)
    sys.exit(1)
  result["command"] = "python -m jaxlm.lab.bench " + " ".join(sys.argv[1:])
  kind.print_summary(result)
  _write_out(result)


def main(argv) -> None:
  del argv
  if FLAGS.vs:
    return main_vs()
  config = FLAGS.config
  if not FLAGS.aot:
    sharding.use_cpu_devices(config.get("cpu_devices", 0))
  if FLAGS.aot:
    from jaxlm.lab import aot
    result = aot.run_aot(config, FLAGS.mesh, FLAGS.vocab_size or 256, sys.argv[1:])
  else:
    workdir = FLAGS.workdir or tempfile.mkdtemp(prefix="jaxlm_bench_")
    if FLAGS.mode == "throughput":
      peak = FLAGS.peak_flops or benchmark.measure_peak_flops()
      result = benchmark.throughput(config, workdir, FLAGS.steps, FLAGS.warmup, peak,
                                      profile_steps=FLAGS.profile_steps,
                                      profile_by=FLAGS.profile_by)
      result["peak_flops_source"] = "flag" if FLAGS.peak_flops else "measured fp32 matmul"
    else:
      result = benchmark.time_to_loss(config, workdir, FLAGS.target_loss, FLAGS.max_seconds,
                                      quick_stride=FLAGS.quick_stride,
                                      quick_margin=FLAGS.quick_margin)
  result["environment"] = benchmark.environment()
  result["command"] = "python -m jaxlm.lab.bench " + " ".join(sys.argv[1:])
  benchmark.print_table(result)
  _write_out(result)


def _write_out(result: dict) -> None:
  """The result as JSON at --out, if given."""
  if FLAGS.out:
    os.makedirs(os.path.dirname(os.path.abspath(FLAGS.out)), exist_ok=True)
    with open(FLAGS.out, "w") as f:
      json.dump(result, f, indent=1)


if __name__ == "__main__":
  app.run(main)
