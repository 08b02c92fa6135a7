"""Fine-tuning: classification heads and prompted seq2seq on a (pretrained) backbone.

`config.finetune.task` picks the task: `classify` (a new head on the pooled
backbone; cross-entropy over any number of classes) or `seq2seq` (the causal
LM itself on `source <sep> target <eos>` rows, loss on the target only).
With `config.init_from` set, the backbone starts from a pretraining
checkpoint and keeps its tokenizer; unset, the same config trains from scratch
for comparison. The best checkpoint on `finetune.best_metric` is kept in
`<workdir>/best`, apart from the latest ones in `<workdir>/checkpoints`.
"""

from __future__ import annotations

import os

import flax.linen as nn
import jax
import numpy as np
from absl import logging

from jaxlm import checkpoint as ckpt_lib
from jaxlm import config as config_lib
from jaxlm import (
  heads,
  objectives,
  optim,
  pretrained,
  seq2seq,
  tasks,
  train,
)
from jaxlm import metrics as metrics_lib
from jaxlm import workdir as wd_lib
from jaxlm.data import tokenizers as tok_lib

BEST_METRICS = config_lib.BEST_METRICS
validate_task = config_lib.validate_finetune  # Also run by config.validate, before any work.


# ----------------------------------------------------------------------------- run


class TaskRun(train.Run):
  """A `train.Run` whose model is the task model and whose data are task arrays."""

  def __init__(self, config, workdir: str | None, devices=None, restore_backbone: bool = True):
    config_lib.validate_fields(config)  # Before init_from writes the tokenizer into workdir.
    f, d = config.finetune, config.data
    self.config, self.task, self.ref = config, f.task, None
    if config.init_from and restore_backbone:
      self.ref = pretrained.resolve(config.init_from, f.init_step)
      pretrained.check_model(config, self.ref)
      if workdir:
        pretrained.prepare_tokenizer(config, workdir, self.ref)
    self._raw: dict = {}
    self.class_names = tasks.class_names(d) if self.task == "classify" else []
    super().__init__(config, workdir, devices)

  def _model(self):
    f = self.config.finetune
    self.backbone = super()._model()
    if self.task != "classify":
      return self.backbone
    self.pooling = f.pooling if f.pooling != "auto" else heads.default_pooling(
        self.config.model.family, bool(self.config.model.causal))
    return heads.Classifier(self.backbone, len(self.class_names), self.pooling, f.head_dropout,
                            f.token_dropout, f.head_layers, f.head_dim)

  def _objective(self) -> objectives.Objective:
    # Task rows are independent: no LSTM state across batches (Run: carry_state False).
    return objectives.Classification() if self.task == "classify" else objectives.Seq2Seq()

  def _optimizer(self) -> tuple:
    c = self.config
    return optim.make_optimizer(c.optimizer, c.num_train_steps, extra=[optim.scale_by_group(
        c.finetune, c.model.num_layers, c.optimizer.learning_rate)])

  def _tokenizer(self) -> tok_lib.Tokenizer:
    d = self.config.data

    def texts():
      a, b = self.raw(d.train_split)
      return list(a) + (list(b) if self.task == "seq2seq" else [])

    return tok_lib.get_tokenizer(d.tokenizer, self.workdir, texts, d)

  def raw(self, split: str) -> tuple[list[str], list]:
    """(texts, label ids) or (sources, targets) of a split, read once."""
    if split not in self._raw:
      self._raw[split] = tasks.read_split(self.config.data, split, self.task, self.data)
    return self._raw[split]

  def arrays(self, split: str) -> dict[str, np.ndarray]:
    """The split encoded as fixed-length rows (labels checked against the label set)."""
    a, b = self.raw(split)
    seq_len = self.config.data.seq_len
    if self.task == "classify":
      ids = tasks.encode_classify(self.tokenizer, a, seq_len, self.pooling == "first")
      labels = np.asarray(b, np.int32)
      return {"ids": ids, "labels": labels, "weight": np.ones(len(a), np.float32)}
    enc = tasks.encode_pairs(self.tokenizer, a, b, seq_len)
    return {"tokens": enc["tokens"], "weights": enc["weights"],
            "weight": np.ones(len(a), np.float32)}

  def init_state(self) -> train.TrainState:
    """Fresh state; with init_from, the backbone's parameters are the pretrained ones."""
    state = super().init_state()
    if self.ref is None:
      return state
    if self.task == "classify":
      restored = pretrained.restore_params(self.ref, self.abstract_state.params["backbone"],
                                           "backbone")
      params = {**state.params, "backbone": restored}
    else:
      params = pretrained.restore_params(self.ref, self.abstract_state.params)
    logging.info("Backbone restored from %s (step %d)", self.ref.step_dir, self.ref.step)
    return state.replace(params=params)  # Adam's fresh state does not depend on the values.

  @property
  def batch_in_shardings(self):
    """None: task batches mix ranks (labels [B], ids [B, L]); the steps take the shardings
    `to_global` gave them."""
    return None

  def meta(self) -> dict:
    return {**super().meta(), "task": self.task, "class_names": self.class_names}


def evaluate_task(run: TaskRun, params, eval_step_fn, split: str, generate: int = -1,
                  cache: dict | None = None) -> dict:
  """Classification report, or target-side loss/ppl plus BLEU/chrF of `generate` examples."""
  d = run.config.data
  if cache is not None and split in cache:
    batches = cache[split]
  else:
    batches = tasks.eval_batches(run.arrays(split), d.batch_size, jax.process_index(),
                                 jax.process_count())
    if cache is not None:
      cache[split] = batches
  totals: dict[str, float] = {}
  preds, labels = [], []
  with jax.set_mesh(run.mesh), nn.logical_axis_rules(run.rules):
    for batch in batches:
      out = jax.device_get(eval_step_fn(params, run.to_global(batch)))
      for k in ("loss_sum", "weight_sum", "correct_sum"):
        totals[k] = totals.get(k, 0.0) + float(out[k])
      if run.task == "classify":
        keep = np.asarray(out["weight"]) > 0
        preds.append(np.asarray(out["preds"])[keep])
        labels.append(np.asarray(out["labels"])[keep])
  w = max(totals["weight_sum"], 1.0)
  result = {"loss": totals["loss_sum"] / w}
  if run.task == "classify":
    report = metrics_lib.classification_report(np.concatenate(labels), np.concatenate(preds),
                                               len(run.class_names), run.class_names)
    result.update(report)
    return result
  lm = metrics_lib.lm_metrics(totals["loss_sum"], w, num_correct=totals["correct_sum"])
  result.update({"ppl": lm["ppl"], "token_accuracy": lm["accuracy"],
                 "tokens": totals["weight_sum"]})
  if generate != 0:
    src, tgt = run.raw(split)
    n = len(src) if generate < 0 else min(generate, len(src))
    hyps = seq2seq.translate(run, params, src[:n])
    result.update(metrics_lib.generation_metrics(hyps, tgt[:n]))
    result["generated"] = n
    result["examples"] = [{"src": s, "ref": r, "hyp": h}
                          for s, r, h in zip(src[:3], tgt[:3], hyps[:3], strict=False)]
  return result


def summary(result: dict) -> str:
  keys = ("loss", "accuracy", "macro_f1", "f1", "ppl", "bleu", "chrf")
  return "  ".join(f"{k} {result[k]:.4f}" for k in keys if k in result)


# ----------------------------------------------------------------------------- loop


class TaskHooks(train.LoopHooks):
  """The training loop's fine-tuning parts: task batches, task evaluation, and the best
  checkpoint on `finetune.best_metric` in `<workdir>/best` (with early stopping)."""

  def __init__(self, run: TaskRun):
    super().__init__(run)
    self.best_ckpt = None  # Opened once the run is accepted (the workdir's lock is ours).
    self.best = {"value": None, "step": None, "bad_evals": 0}
    self.stopped_early = False

  def train_iterator(self):
    run, d = self.run, self.run.config.data
    train_arrays = run.arrays(d.train_split)
    run.arrays(d.eval_split)  # Bad labels or an empty split fail before training.
    logging.info("Task %s: %d train examples; %s params; tokenizer %s (vocab %d)%s", run.task,
                 len(train_arrays["weight"]), f"{run.num_params:,}", run.tokenizer.kind,
                 run.tokenizer.vocab_size,
                 f"; init_from {run.ref.step_dir}" if run.ref else "; from scratch")
    return tasks.ArrayIterator(train_arrays, d.batch_size, run.config.seed,
                               jax.process_index(), jax.process_count())

  def start(self, workdir: str, meta: dict) -> None:
    super().start(workdir, meta)
    self.best = meta.get("best", self.best)
    self.best_ckpt = ckpt_lib.Checkpointer(os.path.join(workdir, "best"), 1)

  def evaluate(self, step: int, params, eval_step_fn, cache: dict) -> dict:
    f = self.run.config.finetune
    return evaluate_task(self.run, params, eval_step_fn, self.run.config.data.eval_split,
                         f.eval_generate, cache)

  def describe(self, ev: dict) -> str:
    return summary(ev)

  def after_eval(self, step: int, state, ev: dict, data_state: dict) -> bool:
    f, best = self.run.config.finetune, self.best
    value = ev.get(f.best_metric)
    if value is not None and (best["value"] is None or
                              BEST_METRICS[f.best_metric] * (value - best["value"]) > 0):
      self.best = {"value": float(value), "step": step, "bad_evals": 0}
      if step in self.best_ckpt.all_steps():  # Left by a run resumed from an earlier step.
        self.best_ckpt.manager.delete(step)
      metrics = {f"eval_{k}": v for k, v in ev.items() if isinstance(v, int | float)}
      self.best_ckpt.save(step, state, data_state, {**self.run.meta(), "metrics": metrics})
      return False
    best["bad_evals"] += 1
    if f.patience and best["bad_evals"] >= f.patience:
      logging.info("Early stop at step %d: %s has not improved for %d evals (best %.4f at "
                   "step %d)", step, f.best_metric, best["bad_evals"], best["value"],
                   best["step"])
      self.stopped_early = True
      return True
    return False

  def meta(self) -> dict:
    return {**self.run.meta(), "best": self.best}

  def finish(self, state, result: dict) -> dict:
    f = self.run.config.finetune
    if "preempted" in result:
      return {**result, "best": self.best}
    logging.info("Best %s %s at step %s (in %s/best)", f.best_metric, self.best["value"],
                 self.best["step"], self.run.workdir)
    return {**result, "step": int(jax.device_get(state.step)), "best": self.best,
            "stopped_early": self.stopped_early}

  def close(self) -> None:
    if self.best_ckpt is not None:
      self.best_ckpt.close()


def train_task(config, workdir: str, devices=None) -> dict:
  """Fine-tunes (or trains from scratch) `config` in `workdir`; resumes if it can."""
  wd_lib.ensure_writable(workdir)  # Bad path / read-only / full: one line naming it, no work.
  run = TaskRun(config, workdir, devices)
  return train.train_loop(run, workdir, TaskHooks(run))
