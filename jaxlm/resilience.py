"""What the training loop does when things go wrong: NaN/Inf and preemption.

`config.nan_policy`:
  stop      (default) a non-finite loss or gradient norm stops the run naming the step and
            the metric; nothing after the last checkpoint is saved.
  skip      the update of a non-finite step is dropped inside the jitted step (a `where`
            on params and optimizer state, no host sync); the step counter and data move on.
            More than `config.nan_max_retries` skips in a row stop the run.
  rollback  as skip, and then the last checkpoint's parameters and optimizer state are
            restored while the data stream goes on, so the window of batches since that
            checkpoint is skipped. More than `nan_max_retries` rollbacks stop the run.

Preemption: SIGTERM or SIGINT ask the loop to checkpoint the current step, wait for the
write and exit 0. On several processes SIGTERM goes through JAX's preemption sync point, so
every process saves at the same step.
"""

from __future__ import annotations

import signal
import threading

import jax
import jax.numpy as jnp
import numpy as np
from absl import logging

POLICIES = ("stop", "skip", "rollback")
CHECKED = ("train_loss", "grad_norm")


def guard_step(step_fn):
  """Wraps `step_fn(state, batch) -> (state, metrics)`: a step whose loss or gradient norm is
  non-finite keeps the old params and optimizer state (the step counter still advances) and
  reports `skipped=1`. All inside the jit."""

  def guarded(state, batch):
    new, metrics = step_fn(state, batch)
    ok = jnp.isfinite(metrics["train_loss"]) & jnp.isfinite(metrics["grad_norm"])
    keep = lambda n, o: jnp.where(ok, n, o)
    new = new.replace(params=jax.tree.map(keep, new.params, state.params),
                      opt_state=jax.tree.map(keep, new.opt_state, state.opt_state))
    return new, {**metrics, "skipped": jnp.logical_not(ok).astype(jnp.int32)}

  return guarded


def bad_metric(metrics: dict) -> str | None:
  """'train_loss is nan' for the first non-finite checked metric, else None."""
  for k in CHECKED:
    v = float(metrics[k])
    if not np.isfinite(v):
      return f"{k} is {v}"
  return None


class NanGuard:
  """Applies `config.nan_policy` to each step's metrics once they reach the host."""

  def __init__(self, policy: str, max_retries: int, rollback_fn=None,
               error_cls: type[Exception] = RuntimeError):
    if policy not in POLICIES:
      raise ValueError(f"config.nan_policy={policy!r} is not one of {POLICIES}.")
    self.policy, self.max_retries, self.rollback_fn = policy, max_retries, rollback_fn
    self.error_cls = error_cls
    self.skipped = self.rollbacks = self._in_a_row = 0
    self._discard_upto = -1  # Steps dispatched before a rollback: their metrics are moot.

  def counters(self) -> dict:
    """For the metrics rows: how often the policy acted (nothing under 'stop')."""
    if self.policy == "stop":
      return {}
    return {"skipped_steps": self.skipped, "rollbacks": self.rollbacks}

  def check(self, step: int, metrics: dict, state):
    """Returns the state to continue from (the same unless rolled back)."""
    if step <= self._discard_upto:
      return state
    what = bad_metric(metrics)
    if what is None:
      self._in_a_row = 0
      return state
    if self.policy == "stop":
      raise self.error_cls(
          f"{what} at step {step}: training diverged. Nothing after the last checkpoint "
          "was saved. Fix: lower optimizer.learning_rate, raise warmup_steps or enable "
          "gradient clipping, or set nan_policy='skip' or 'rollback', then rerun (it resumes "
          "from the last good checkpoint).")
    self.skipped += 1
    self._in_a_row += 1
    if self.policy == "skip":
      logging.warning("%s at step %d: update skipped (%d skipped so far).", what, step,
                      self.skipped)
      if self._in_a_row > self.max_retries:
        raise self.error_cls(f"{what} at step {step}: {self._in_a_row} steps in a row were "
                             "skipped (more than nan_max_retries); the parameters are likely "
                             "non-finite. Fix: use nan_policy='rollback' or lower the "
                             "learning rate, then rerun.")
      return state
    self.rollbacks += 1
    if self.rollbacks > self.max_retries:
      raise self.error_cls(f"{what} at step {step}: already rolled back {self.max_retries} "
                           "times (nan_max_retries). Fix: lower the learning rate or inspect "
                           "the data, then rerun.")
    restored, from_step = self.rollback_fn()
    logging.warning("%s at step %d: rolled back parameters and optimizer state to step %d "
                    "(rollback %d); the batches of steps %d-%d are skipped.", what, step,
                    from_step, self.rollbacks, from_step + 1, step)
    self._in_a_row = 0
    self._discard_upto = int(jax.device_get(state.step))
    return restored.replace(step=state.step)


class Preemption:
  """Turns SIGTERM/SIGINT into a request to checkpoint and stop (see the module doc)."""

  def __init__(self):
    self.signal_name: str | None = None
    self._old: dict = {}
    self._multi = jax.process_count() > 1
    if threading.current_thread() is threading.main_thread():
      # On several processes JAX's preemption notifier owns SIGTERM (see `requested`), and
      # SIGINT keeps its default (a local Ctrl-C cannot be agreed on without a sync).
      for sig in () if self._multi else (signal.SIGTERM, signal.SIGINT):
        self._old[sig] = signal.signal(sig, self._handle)

  def _handle(self, signum, frame) -> None:
    del frame
    if self.signal_name is not None:  # A second signal: stop now, the default way.
      signal.signal(signum, self._old.get(signum, signal.SIG_DFL))
      signal.raise_signal(signum)
      return
    self.signal_name = signal.Signals(signum).name
    logging.warning("%s received: saving a checkpoint after this step, then exiting.",
                    self.signal_name)

  def requested(self, step: int) -> bool:
    """True once a stop was asked for (on every process at the same step)."""
    if self._multi:
      from jax.experimental import multihost_utils
      try:
        reached = multihost_utils.reached_preemption_sync_point(step)
      except RuntimeError:  # Preemption service disabled.
        return False
      if reached:
        self.signal_name = self.signal_name or "SIGTERM"
        return True
      return False
    return self.signal_name is not None

  def close(self) -> None:
    for sig, old in self._old.items():
      signal.signal(sig, old)
    self._old = {}
