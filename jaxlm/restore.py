"""A trained workdir back in memory: its config, tokenizer and latest parameters.

Small on purpose (inspection and the sweeps' extra evaluations need only this);
the config is the run's own `config.json`, so a model is rebuilt exactly as it
was trained, with optional overrides (`sow_weights`, an evaluation length).

  python -m jaxlm.restore --workdir=W --seq_len=256 [--out=W/eval_len256.json]

evaluates the latest checkpoint at another sequence length (length
extrapolation). Positions that cannot extrapolate (a learned table shorter
than the length) are refused with the reason, and `--out` records it.
"""

from __future__ import annotations

import json
import sys

import jax

from jaxlm import checkpoint as ckpt_lib
from jaxlm import config as config_lib
from jaxlm import train
from jaxlm import workdir as wd_lib

load_config = wd_lib.read_config  # The run's config from `<workdir>/config.json`.


class Loaded:
  """A restored run: `run` (train.Run: model, tokenizer, mesh), `params`, `step`."""

  def __init__(self, run: train.Run, params, step: int):
    self.run, self.params, self.step = run, params, step
    self.config, self.model, self.tokenizer = run.config, run.model, run.tokenizer


def load(workdir: str, seq_len: int = 0, **model_overrides) -> Loaded:
  """Latest checkpoint of `workdir` on one device; `model_overrides` go to the model
  config (e.g. `sow_weights=True`), `seq_len` changes the data length (not the
  position table, which keeps its trained size)."""
  cfg = load_config(workdir)
  with cfg.unlocked():
    if cfg.model.position == "learned":  # The only table whose size is in the params.
      cfg.model.max_len = cfg.model.max_len or cfg.data.seq_len
    if seq_len:
      cfg.data.seq_len = seq_len
    cfg.mesh.shape = (-1, 1, 1)
    cfg.optimizer.grad_accum_steps = 1
  run = train.Run(cfg, workdir, jax.devices()[:1])
  if model_overrides:
    from jaxlm import models
    run.model = models.build_model(cfg.model, run.tokenizer.vocab_size, cfg.data.seq_len,
                                   **model_overrides)
  checkpointer = ckpt_lib.Checkpointer(workdir, read_only=True)  # Reads only; verified.
  try:
    params, step = checkpointer.restore_params(None, run.abstract_state.params)
  finally:
    checkpointer.close()
  return Loaded(run, params, int(step))


def evaluate_at(workdir: str, seq_len: int, max_batches: int = -1) -> dict:
  """Validation loss/ppl/bpb of the latest checkpoint with windows of `seq_len` tokens."""
  loaded = load(workdir, seq_len=seq_len)
  run = loaded.run
  ev = train.evaluate(run, loaded.params, run.jit_eval_step(), max_batches=max_batches)
  return {"step": loaded.step, "seq_len": seq_len, **{f"eval_{k}": v for k, v in ev.items()}}


def main(argv: list[str] | None = None) -> int:
  import argparse
  p = argparse.ArgumentParser(prog="python -m jaxlm.restore", description=__doc__.split("\n")[0])
  p.add_argument("--workdir", required=True)
  p.add_argument("--seq_len", type=int, required=True, help="Evaluation window length.")
  p.add_argument("--eval_steps", type=int, default=None,
                 help="Eval batches (default: the run's config.eval_steps).")
  p.add_argument("--out", default="", help="Write the result (or the refusal) as JSON here.")
  a = p.parse_args(argv)
  steps = a.eval_steps if a.eval_steps is not None else load_config(a.workdir).eval_steps
  try:
    result = evaluate_at(a.workdir, a.seq_len, steps)
  except config_lib.ConfigError as e:  # e.g. a learned position table shorter than seq_len.
    result = {"seq_len": a.seq_len, "error": str(e)}
  if a.out:
    wd_lib.write_json(a.out, result)
  print(json.dumps(result))
  return 0 if "error" not in result else 2


if __name__ == "__main__":
  sys.exit(main())
