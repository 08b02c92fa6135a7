"""The training loop: `train_and_evaluate(config, workdir)`.

The pure steps are in `jaxlm.steps`, everything built once from config in
`jaxlm.run.Run`, the evaluation (shared with eval mode) in `jaxlm.evaluation`.
The loop never waits on the device: it dispatches step N, then reads step N-1's
metrics.
"""

from __future__ import annotations

import functools
import time

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from absl import logging

from jaxlm import checkpoint as ckpt_lib
from jaxlm import config as config_lib
from jaxlm import dp, faults, generate, resilience
from jaxlm import workdir as wd_lib
from jaxlm.data import augment, lanes, pipeline, shards
from jaxlm.errors import TrainingError
from jaxlm.evaluation import evaluate, summarize
from jaxlm.metric_writer import MetricWriter
from jaxlm.run import INIT_COMPILER_OPTIONS, Run, flops_per_token
from jaxlm.steps import TrainState, eval_step, loss_and_metrics, model_inputs, train_step

# Re-exported: callers import these from `train` (their homes are named above).
__all__ = ["INIT_COMPILER_OPTIONS", "LoopHooks", "Run", "TrainState", "TrainingError", "eval_step",
           "evaluate", "flops_per_token", "loss_and_metrics", "model_inputs", "summarize",
           "train_and_evaluate", "train_loop", "train_step"]


# ----------------------------------------------------------------------------- loop


def _finite_mean(values: list) -> float:
  """Mean of the finite losses (skipped non-finite steps do not poison the interval)."""
  finite = [v for v in values if np.isfinite(v)]
  return float(np.mean(finite)) if finite else float("nan")


def _save_checkpoint(checkpointer, step: int, state, data_state, meta: dict,
                     fault_plan) -> None:
  """Starts the async save of `step` (with the fault hooks the tests inject)."""
  if step in fault_plan.get("disk_full_at_checkpoint", ()):
    with faults.disk_full():
      checkpointer.save(step, state, data_state, meta)
      checkpointer.wait()
    return
  checkpointer.save(step, state, data_state, meta)
  if step in fault_plan.get("sigkill_during_checkpoint", ()):
    faults.sigkill()  # The write is in flight: only `<step>.orbax-checkpoint-tmp` exists.
  if step in fault_plan.get("sigkill_after_checkpoint", ()):
    checkpointer.wait()
    faults.sigkill()


def _rollback(checkpointer, run) -> tuple:
  """(state, step) of the last checkpoint, or the initial state if there is none."""
  checkpointer.wait()
  restored = checkpointer.restore_latest(run.abstract_state)
  if restored is None:
    return run.init_state(), 0
  return restored[1], restored[0]


class LoopHooks:
  """What a kind of run adds to the one training loop (`train_loop`); this base is the LM's.

  Fine-tuning (`finetune.TaskHooks`) evaluates its task and keeps the best checkpoint; the
  lab's time-to-loss benchmark stops at a target loss. Everything else (resume, the async
  step, NaN policy, preemption, fault hooks, checkpoints, metrics rows) is the loop's.
  """

  def __init__(self, run: Run):
    self.run = run

  def train_iterator(self):
    """The training batches (with `get_state`/`set_state`, saved in every checkpoint)."""
    config = self.run.config
    if self.run.carry_state:  # Recurrent state carried across windows: B contiguous lanes.
      if jax.process_count() > 1:
        raise config_lib.ConfigError(
            "config.model.carry_state is not supported with several processes yet. Fix: run "
            "on one process or set --config.model.carry_state=False.")
      return iter(lanes.lane_dataset(config.data, self.run.tokenizer, config.seed,
                                     source=self.run.data))
    return shards.ShardedIterator(config.data, self.run.tokenizer, config.seed,
                                  jax.process_index(), jax.process_count(), self.run.data)

  def start(self, workdir: str, meta: dict) -> None:
    """The run was accepted (resumed from `meta`, or fresh: {}); before the first step."""
    if jax.process_index() == 0:  # Only now: config.json describes the run's checkpoints.
      wd_lib.write_config(workdir, self.run.config)
      augment.record(self.run.config.data, workdir)  # canaries.json, if any were inserted.

  def evaluate(self, step: int, params, eval_step_fn, cache: dict) -> dict:
    """Evaluation metrics at `step` (unprefixed; numbers are logged as `eval_<key>`)."""
    return evaluate(self.run, params, eval_step_fn, max_batches=self.run.config.eval_steps,
                    cache=cache)

  def describe(self, ev: dict) -> str:
    return f"loss {ev['loss']:.4f}  ppl {ev['ppl']:.2f}  bpb {ev['bpb']:.4f}"

  def after_eval(self, step: int, state, ev: dict, data_state: dict) -> bool:
    """Called after each evaluation; True stops the run here (it is checkpointed)."""
    return False

  def meta(self) -> dict:
    """Saved with every checkpoint."""
    return self.run.meta()

  def finish(self, state, result: dict) -> dict:
    """The loop's result (`preempted` in it: stopped by a signal, checkpoint saved), amended;
    the LM's: a sample of `config.sample.num_tokens` after the last step."""
    config, run = self.run.config, self.run
    if jax.process_index() == 0 and config.sample.num_tokens > 0 and \
        run.objective.name == "causal_lm" and "preempted" not in result:
      text = generate.sample_text(run.model, state.params, run.tokenizer, config.sample.prompt,
                                  config.sample.num_tokens, config.sample.temperature,
                                  config.sample.top_k, seed=config.seed, mesh=run.mesh,
                                  rules=run.rules)
      logging.info("Sample:\n%s", config.sample.prompt + text)
    return result

  def close(self) -> None:
    pass


def train_and_evaluate(config, workdir: str, devices=None) -> dict:
  """Trains `config` in `workdir`, resuming from its latest checkpoint if there is one."""
  wd_lib.ensure_writable(workdir)  # Bad path / read-only / full: one line naming it, no work.
  run = Run(config, workdir, devices)
  return train_loop(run, workdir, LoopHooks(run))


def train_loop(run: Run, workdir: str, hooks: LoopHooks) -> dict:
  """The one training loop (LM pretraining, fine-tuning, the lab's time to loss)."""
  config = run.config
  is_main = jax.process_index() == 0
  logging.info("Devices: %d (%s) across %d process(es); mesh %s", jax.device_count(),
               jax.devices()[0].platform, jax.process_count(), dict(run.mesh.shape))
  logging.info("Parameters: %s total, %s non-embedding; %s FLOPs/token; vocab %d (%s)",
               f"{run.num_params:,}", f"{run.num_non_embedding:,}",
               f"{run.flops_per_token:.3g}", run.tokenizer.vocab_size, run.tokenizer.kind)

  checkpointer = ckpt_lib.Checkpointer(workdir, config.keep_checkpoints)
  try:
    train_iter = hooks.train_iterator()
    state, meta = run.resume(checkpointer, train_iter)
  except BaseException:
    checkpointer.close()  # A refused resume leaves the workdir as it was (lock released).
    hooks.close()
    raise
  hooks.start(workdir, meta)
  start = int(jax.device_get(state.step))

  writer = MetricWriter(workdir, enabled=is_main, resume_step=start)  # Drops rows > start.
  train_step_fn, eval_step_fn = run.jit_train_step(), run.jit_eval_step()
  eval_cache: dict = {}
  prefetch = pipeline.Prefetcher(train_iter, run.to_global, config.data.prefetch)
  tokens_per_step = config.data.batch_size * config.data.seq_len
  peak = run.total_peak_flops(config.peak_flops_per_device)
  num_steps = config.num_train_steps
  end = min(num_steps, config.stop_after_steps or num_steps)  # Sweeps pause runs early.
  last_eval: dict = {}
  interval = {"losses": [], "step": start, "t": time.time()}  # Since the last log row.
  pending = None  # (step, metrics on device) of the previous step.
  log_due = None  # A log step whose row waits for its metrics (fetched one step later).
  sync_rows = config.nan_policy == "rollback"
  t_start = time.time()
  data_state = train_iter.get_state()
  fault_plan = faults.planned()
  nan_guard = resilience.NanGuard(config.nan_policy,
                                  config.nan_max_retries,
                                  functools.partial(_rollback, checkpointer, run), TrainingError)
  preempt, preempted, stopped_at = resilience.Preemption(), None, None
  dp_acc = (dp.Accountant(config, run.tokenizer, run.data.texts(config.data.train_split))
            if config.optimizer.dp.enabled else None)
  save = lambda step, state, data_state: _save_checkpoint(checkpointer, step, state, data_state,
                                                          hooks.meta(), fault_plan)

  def log_row(done: int, current: dict) -> None:
    """The row of the steps since the last one: timed to when step `done`'s metrics arrived."""
    dt, n = max(time.time() - interval["t"], 1e-9), max(done - interval["step"], 1)
    tps = tokens_per_step * n / dt
    row = {"train_loss": _finite_mean(interval["losses"]), **nan_guard.counters(),
           "train_accuracy": float(current["train_accuracy"]),
           "grad_norm": float(current["grad_norm"]), "lr": float(current["lr"]),
           "tokens_per_sec": tps, "mfu": tps * run.flops_per_token / peak, "steps_per_sec": n / dt}
    if dp_acc is not None:  # DP-SGD: epsilon at optimizer.dp.delta after `done` steps.
      row.update(dp_acc.metrics(done))
    writer.write(done, row)
    logging.info("step %d/%d  loss %.4f  lr %.2e  %s tok/s  MFU %.1f%%  ETA %s", done, num_steps,
                 row["train_loss"], row["lr"], f"{tps:,.0f}", 100 * row["mfu"],
                 _fmt_time((num_steps - done) * dt / n))
    interval.update(losses=[], step=done, t=time.time())

  def fetch(step_done: int, metrics_on_device, state):
    """Step `step_done`'s metrics to the host: NaN policy, its loss, its row if one is due."""
    current = jax.device_get(metrics_on_device)
    state = nan_guard.check(step_done, current, state)
    interval["losses"].append(float(current["train_loss"]))
    if step_done == log_due or step_done == end:
      log_row(step_done, current)
    return state

  try:
    with jax.set_mesh(run.mesh), nn.logical_axis_rules(run.rules):
      for step in range(start, end):
        batch, data_state = next(prefetch)
        if step + 1 in fault_plan.get("nan_batch", ()):
          batch = faults.poison_batch(batch)
        state, metrics = train_step_fn(state, batch)
        # Read step N-1 while step N runs (a log row too: the device never waits for it).
        # This bound on the steps in flight also matters for correctness: with several CPU
        # devices (cpu_devices) on a busy host, dozens of queued steps can deadlock XLA:CPU's
        # all-reduce rendezvous (seen on jax 0.10.2).
        if pending is not None:
          state = fetch(*pending, state)
        pending = (step + 1, metrics)
        done = step + 1
        is_last = done == end
        if done % config.log_every_steps == 0:
          log_due = done
        # Sync: evals and saves see this step; under nan_policy='rollback' log rows do too
        # (a rollback then lands before the next step runs, as the rows expect).
        if is_last or done % config.checkpoint_every_steps == 0 or \
            done % config.eval_every_steps == 0 or (log_due == done and sync_rows):
          state = fetch(done, metrics, state)
          pending = None
        stop = False
        if done % config.eval_every_steps == 0 or is_last:
          ev = hooks.evaluate(done, state.params, eval_step_fn, eval_cache)
          last_eval = {f"eval_{k}": v for k, v in ev.items()
                       if isinstance(v, int | float | np.number)}
          writer.write(done, last_eval)
          logging.info("eval at step %d: %s", done, hooks.describe(ev))
          stop = hooks.after_eval(done, state, ev, data_state)
          interval.update(step=done, t=time.time())  # Eval time is not training throughput.
        saved = done % config.checkpoint_every_steps == 0 or is_last or stop
        if saved:
          save(done, state, data_state)
        if done in fault_plan.get("sigkill_at_step", ()):
          faults.sigkill()
        if done in fault_plan.get("nan_params", ()):
          state = state.replace(params=jax.tree.map(lambda x: x * jnp.nan, state.params))
        if done in fault_plan.get("sigterm_at_step", ()):
          faults.sigterm()
        if stop:
          stopped_at = done
          break
        if not is_last and preempt.requested(done):
          if pending is not None:  # Never save a state whose step went non-finite.
            state = fetch(*pending, state)
            pending = None
          if not saved:
            save(done, state, data_state)
          checkpointer.wait()
          preempted = done
          break
      if pending is not None:
        state = fetch(*pending, state)
  finally:
    preempt.close()
    prefetch.close()
    checkpointer.close()
    writer.close()
    hooks.close()
  if preempted is not None:
    logging.warning("Stopped by %s at step %d; checkpoint saved. Rerun the same command to "
                    "continue from there.", preempt.signal_name, preempted)
    return hooks.finish(state, {"step": preempted, "preempted": preempt.signal_name,
                                **last_eval})
  last = stopped_at or end
  logging.info("Trained steps %d-%d in %s", start, last, _fmt_time(time.time() - t_start))
  return hooks.finish(state, {"step": last, **last_eval})


def _fmt_time(seconds: float) -> str:
  seconds = int(max(seconds, 0))
  return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"
