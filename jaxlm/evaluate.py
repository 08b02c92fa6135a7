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

import sys

import jax
from absl import app, flags, logging

from jaxlm import checkpoint as ckpt_lib
from jaxlm import evaluation, finetune, ngram_run, train
from jaxlm import workdir as wd_lib
from jaxlm.data import sources
from jaxlm.data import tokenizers as tok_lib
from jaxlm.errors import USER_ERRORS
from jaxlm.metrics import format_classification_report
from jaxlm.ngram import KneserNeyLM


def _checkpointer(workdir: str, step: str | int | None) -> tuple[ckpt_lib.Checkpointer, int,
                                                                  str]:
  """(read-only checkpointer, step, which) for --step: '' / None = latest, 'best', or N."""
  best = str(step) == "best"
  _, chosen = wd_lib.resolve_step(workdir, step)
  where = wd_lib.path(workdir) / wd_lib.BEST if best else workdir
  return ckpt_lib.Checkpointer(where, read_only=True), chosen, "best" if best else "latest"


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
    explicit = None if step in (None, "", "best", "latest") else chosen  # Latest: may fall back.
    params, chosen = ck.restore_params(explicit, run.abstract_state.params)
  finally:
    ck.close()
  if task == "lm":  # The very function the training loop evaluates with.
    result = evaluation.evaluate(run, params, split=split)
    how = {"eval_path": evaluation.EVAL_PATH, "state_handling": evaluation.state_handling(run)}
  else:
    result = finetune.evaluate_task(run, params, run.jit_eval_step(), split)
    how = {"eval_path": "jaxlm.finetune.evaluate_task", "state_handling": "stateless"}
  out = {"split": split, "step": chosen, "checkpoint": which, "task": task,
         "family": config.model.family, **how, **result}
  path = wd_lib.path(workdir) / f"eval_{split}_{chosen}.json"
  if jax.process_index() == 0:
    wd_lib.write_json(path, out)
  logging.info("eval %s step %d (%s): %s -> %s", split, chosen, which, finetune.summary(result)
               or result, path)
  return out


def _evaluate_ngram(config, workdir: str, split: str) -> dict:
  """The fitted n-gram model of `workdir` (no steps: it is fitted once) on `split`."""
  path = wd_lib.path(workdir) / ngram_run.MODEL_FILE
  if not path.is_file():
    raise ckpt_lib.CheckpointError(f"No fitted n-gram model at {path}. Fix: run --mode=train "
                                   "with this config and --workdir first.")
  tok = tok_lib.load_tokenizer(workdir)
  lm = KneserNeyLM.load(path)
  docs = ngram_run.tokenized_docs(sources.DataSource(config.data), split, tok, with_bytes=True)
  result = ngram_run.evaluate(lm, docs)
  out = {"split": split, "step": 0, "checkpoint": "latest", "task": "lm", "family": "ngram",
         "eval_path": "jaxlm.ngram_run.evaluate", "state_handling": "per_document", **result}
  wd_lib.write_json(wd_lib.path(workdir) / f"eval_{split}_0.json", out)
  return out


def format_result(out: dict) -> str:
  """Human-readable eval result: the headline numbers and, for classification, the table."""
  lines = [f"{out['task']} eval of step {out['step']} ({out['checkpoint']}) on {out['split']}:"]
  if "eval_path" in out:
    lines.append(f"  evaluated by {out['eval_path']} (state: {out['state_handling']})")
  for k in ("loss", "ppl", "bpb", "accuracy", "macro_f1", "micro_f1", "f1", "bleu", "chrf",
            "tokens", "num_examples", "generated"):
    if k in out:
      lines.append(f"  {k:>12}: {out[k]:.4f}" if isinstance(out[k], float)
                   else f"  {k:>12}: {out[k]}")
  if "per_class" in out:
    lines.append(format_classification_report(out))
  return "\n".join(lines)


def main(argv) -> None:
  del argv
  try:
    out = evaluate_checkpoint(flags.FLAGS.config, flags.FLAGS.workdir, flags.FLAGS.step or None,
                              flags.FLAGS.split or None)
  except USER_ERRORS as e:
    print(f"error: {e}", file=sys.stderr)
    sys.exit(1)
  print(format_result(out))


if __name__ == "__main__":  # Run as a script: --config, --workdir, --step, --split are main's.
  from jaxlm import main as _flags  # noqa: F401

  app.run(main)
