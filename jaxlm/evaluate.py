"""Eval mode: score a saved checkpoint on a split without training.

  python -m jaxlm.main --config=CFG --workdir=DIR --mode=eval [--step=N|best] [--split=S]
  python -m jaxlm.evaluate --config=CFG --workdir=DIR [--step=N|best] [--split=S]

Restores the latest (or the given, or the best-on-validation) checkpoint and
evaluates the whole split, sharded over the mesh: LM loss, perplexity, bits per
byte and token accuracy; for classification accuracy, per-class and
macro/micro precision/recall/F1 and the confusion matrix; for seq2seq
target-side loss plus BLEU and chrF of greedy translations. The result is
printed and written to `<workdir>/eval_<split>_<step>.json`.
"""

from __future__ import annotations

import json
import os
import sys

import jax
from absl import app, flags, logging

from jaxlm import checkpoint as ckpt_lib
from jaxlm import finetune, train


def _checkpointer(workdir: str, step: str | int | None) -> tuple[ckpt_lib.Checkpointer, int,
                                                                  str]:
  """(checkpointer, step, which) for --step: '' / None = latest, 'best', or a number."""
  best = str(step) == "best"
  where = os.path.join(workdir, "best") if best else workdir
  if not os.path.isdir(os.path.join(where, "checkpoints")):
    raise ckpt_lib.CheckpointError(
        f"No {'best ' if best else ''}checkpoint in {os.path.abspath(where)}. Fix: train first "
        "(same --workdir), or check the path.")
  ck = ckpt_lib.Checkpointer(where, keep=10**6, async_save=False)
  steps = ck.all_steps()
  if not steps:
    ck.close()
    raise ckpt_lib.CheckpointError(f"No checkpoint in {ck.directory}. Fix: train first.")
  if step in (None, "", "best", "latest"):
    chosen = steps[-1]
  else:
    try:
      chosen = int(step)
    except ValueError as e:
      ck.close()
      raise ckpt_lib.CheckpointError(f"--step={step!r}: give a step number, 'best' or "
                                     "nothing (latest).") from e
    if chosen not in steps:
      ck.close()
      raise ckpt_lib.CheckpointError(f"--step={chosen}: {ck.directory} has steps {steps}. "
                                     "Fix: pick one of them.")
  return ck, chosen, "best" if best else "latest"


def evaluate_checkpoint(config, workdir: str, step: str | int | None = None,
                        split: str | None = None, devices=None) -> dict:
  """Evaluates one checkpoint of `workdir` on `split` (default data.eval_split)."""
  split = split or config.data.eval_split
  if config.model.family == "ngram":
    return _evaluate_ngram(config, workdir, split)
  ck, chosen, which = _checkpointer(workdir, step)
  try:
    meta = ck.restore_meta(chosen)
    task = config.finetune.task
    if meta.get("task", "lm") != task:
      raise ckpt_lib.CheckpointError(
          f"{workdir} holds a {meta.get('task', 'lm')!r} checkpoint but "
          f"config.finetune.task={task!r}. Fix: evaluate with the config it was trained with.")
    if task == "lm":
      run = train.Run(config, workdir, devices)
    else:
      run = finetune.TaskRun(config, workdir, devices, restore_backbone=False)
    ckpt_lib.check_compatible(meta, config, run.tokenizer.identity())
    state, _, _ = ck.restore(chosen, run.abstract_state)
  finally:
    ck.close()
  if task == "lm":
    result = train.evaluate(run, state.params, run.jit_eval_step(), split=split)
  else:
    result = finetune.evaluate_task(run, state.params, run.jit_task_eval_step(), split)
  out = {"split": split, "step": chosen, "checkpoint": which, "task": task,
         "family": config.model.family, **result}
  path = os.path.join(workdir, f"eval_{split}_{chosen}.json")
  if jax.process_index() == 0:
    with open(path, "w") as f:
      json.dump(out, f, indent=1)
  logging.info("eval %s step %d (%s): %s -> %s", split, chosen, which, finetune.summary(result)
               or result, path)
  return out


def _evaluate_ngram(config, workdir: str, split: str) -> dict:
  """The fitted n-gram model of `workdir` (no steps: it is fitted once) on `split`."""

  from jaxlm import ngram_run
  from jaxlm.data import tokenizers as tok_lib
  from jaxlm.ngram import KneserNeyLM

  path = os.path.join(workdir, ngram_run.MODEL_FILE)
  if not os.path.isfile(path):
    raise ckpt_lib.CheckpointError(f"No fitted n-gram model at {path}. Fix: run --mode=train "
                                   "with this config and --workdir first.")
  tok = tok_lib.load_tokenizer(workdir)
  lm = KneserNeyLM.load(path)
  result = ngram_run.evaluate(lm, ngram_run.tokenized_docs(config.data, split, tok,
                                                           with_bytes=True))
  out = {"split": split, "step": 0, "checkpoint": "latest", "task": "lm", "family": "ngram",
         **result}
  with open(os.path.join(workdir, f"eval_{split}_0.json"), "w") as f:
    json.dump(out, f, indent=1)
  return out


def format_result(out: dict) -> str:
  """Human-readable eval result: the headline numbers and, for classification, the table."""
  from jaxlm import metrics as metrics_lib

  lines = [f"{out['task']} eval of step {out['step']} ({out['checkpoint']}) on {out['split']}:"]
  for k in ("loss", "ppl", "bpb", "accuracy", "macro_f1", "micro_f1", "f1", "bleu", "chrf",
            "tokens", "num_examples", "generated"):
    if k in out:
      lines.append(f"  {k:>12}: {out[k]:.4f}" if isinstance(out[k], float)
                   else f"  {k:>12}: {out[k]}")
  if "per_class" in out:
    lines.append(metrics_lib.format_classification_report(out))
  return "\n".join(lines)


def main(argv) -> None:
  del argv
  from jaxlm import main as main_lib

  try:
    out = evaluate_checkpoint(flags.FLAGS.config, flags.FLAGS.workdir, flags.FLAGS.step or None,
                              flags.FLAGS.split or None)
  except main_lib.USER_ERRORS as e:
    print(f"error: {e}", file=sys.stderr)
    sys.exit(1)
  print(format_result(out))


if __name__ == "__main__":
  from jaxlm import main as _flags  # noqa: F401  (defines --config, --workdir, --step, --split)

  app.run(main)
