"""Training: sharded state, the pure train/eval steps, and the loop.

The step is a pure function `train_step(state, batch) -> (state, metrics)`,
jitted once with explicit shardings and donation; randomness is
`fold_in(seed, step)`, so a resumed run replays the same randomness. The loop
never waits on the device: it dispatches step N, then reads step N-1's metrics.
"""

from __future__ import annotations

import functools
import json
import os
import time
from typing import Any

import flax.linen as nn
import flax.struct
import jax
import jax.numpy as jnp
import numpy as np
import optax
from absl import logging

from jaxlm import checkpoint as ckpt_lib
from jaxlm import config as config_lib
from jaxlm import distributed, dp, faults, generate, models, objectives, optim, resilience, sharding
from jaxlm.data import augment, lanes, pipeline, shards, sources
from jaxlm.data import tokenizers as tok_lib
from jaxlm.metric_writer import MetricWriter


class TrainingError(RuntimeError):
  """The run cannot continue (e.g. a non-finite loss); the message says where and why."""


INIT_COMPILER_OPTIONS = {"xla_backend_optimization_level": 0,
                         "xla_llvm_disable_expensive_passes": True}


class TrainState(flax.struct.PyTreeNode):
  step: jax.Array
  params: Any
  opt_state: Any
  carry: Any = None  # Recurrent state carried across steps (lstm with model.carry_state).


# ----------------------------------------------------------------------------- steps


def model_inputs(batch: dict, document_attention: bool) -> dict:
  """Batch of packed windows -> the model's keyword inputs and the LM targets."""
  b = objectives.split_window(batch)
  if not document_attention:
    b["segment_ids"] = None
    b["positions"] = None
  return b


def loss_and_metrics(params, model, batch: dict, rng, document_attention: bool,
                     deterministic: bool, objective: objectives.Objective | None = None,
                     carry=None) -> tuple[jax.Array, dict]:
  """Summed loss and metrics; with `carry` (recurrent state) sums['carry'] is the new state."""
  if objective is None or objective.name == "causal_lm":
    b = model_inputs(batch, document_attention)
  else:
    b = objective.inputs(batch, rng, document_attention)
  extra = {"type_ids_BL": b["type_ids"]} if "type_ids" in b else {}
  if carry is not None:
    extra["carry"] = carry
  logits = model.apply({"params": params}, b["inputs"], b["positions"], b["segment_ids"],
                       deterministic=deterministic, rngs={"dropout": rng}, **extra)
  if carry is not None:
    logits, carry = logits
  sums = objectives.cross_entropy_sums(logits, b["targets"], b["weights"])
  if carry is not None:
    sums["carry"] = jax.lax.stop_gradient(carry)
  return sums["loss_sum"], sums


def train_step(state: TrainState, batch: dict, *, model, tx, schedule, seed: int,
               accum_steps: int, document_attention: bool, batch_sharding,
               objective: objectives.Objective | None = None) -> tuple:
  """One optimizer step; `accum_steps` microbatches are scanned inside the jit."""
  rng = jax.random.fold_in(jax.random.key(seed), state.step)
  grad_fn = jax.grad(functools.partial(loss_and_metrics, objective=objective, carry=state.carry),
                     has_aux=True)

  if accum_steps == 1:
    grads, sums = grad_fn(state.params, model, batch, rng, document_attention, False)
  else:
    def micro(carry, xs):
      mb, i = xs
      mb = jax.tree.map(lambda x: jax.lax.with_sharding_constraint(x, batch_sharding), mb)
      g, s = grad_fn(state.params, model, mb, jax.random.fold_in(rng, i), document_attention,
                     False)
      return jax.tree.map(jnp.add, carry, (g, s)), None

    # Row j of microbatch i is row j*accum+i: every device contributes to every microbatch.
    split = jax.tree.map(
        lambda x: x.reshape(x.shape[0] // accum_steps, accum_steps, *x.shape[1:]).swapaxes(0, 1),
        batch)
    zeros = jax.tree.map(jnp.zeros_like, jax.eval_shape(
        lambda: grad_fn(state.params, model, jax.tree.map(lambda x: x[0], split), rng,
                        document_attention, False)))
    (grads, sums), _ = jax.lax.scan(micro, zeros, (split, jnp.arange(accum_steps)))

  carry = sums.pop("carry", None)
  denom = jnp.maximum(sums["weight_sum"], 1.0)
  grads = jax.tree.map(lambda g: g / denom, grads)
  updates, opt_state = tx.update(grads, state.opt_state, state.params)
  params = optax.apply_updates(state.params, updates)
  metrics = {
      "train_loss": sums["loss_sum"] / denom,
      "train_accuracy": sums["correct_sum"] / denom,
      "grad_norm": optax.tree.norm(grads),
      "lr": schedule(state.step),
      "tokens": sums["weight_sum"],
  }
  return state.replace(step=state.step + 1, params=params, opt_state=opt_state,
                       carry=carry), metrics


def eval_step(params, batch: dict, *, model, token_bytes, document_attention: bool,
              objective: objectives.Objective | None = None) -> dict:
  """Summed loss, weight, correct and target bytes of one eval batch (padding weighs 0)."""
  loss_sum, sums = loss_and_metrics(params, model, batch, jax.random.key(0), document_attention,
                                    True, objective)
  del loss_sum
  if objective is not None and objective.name != "causal_lm":
    b = objective.inputs(batch, jax.random.key(0), document_attention)  # Same mask as above.
  else:
    b = objectives.split_window(batch)
  sums["byte_sum"] = jnp.sum(jnp.take(token_bytes, b["targets"]) * b["weights"])
  return sums


# ----------------------------------------------------------------------------- setup


def flops_per_token(non_embedding_params: int, vocab: int, cfg) -> float:
  """Training FLOPs per token: 6 * (matmul params incl. the output projection) + attention.

  Attention (QK^T and AV) costs 12 * layers * seq_len * width per token (fwd + bwd),
  as in nanoGPT's `estimate_mfu` and the PaLM appendix.
  """
  m = cfg.model
  attn_width = (m.head_dim or m.emb_dim // m.num_heads) * m.num_heads
  if m.family == "lstm":  # No attention; the recurrent matmuls are in the parameter count.
    attn_width = 0
  return 6.0 * (non_embedding_params + vocab * m.emb_dim) + 12.0 * m.num_layers * \
      cfg.data.seq_len * attn_width


class Run:
  """Everything a run needs, built once from config: mesh, tokenizer, model, shardings."""

  def __init__(self, config, workdir: str | None, devices=None):
    self.config = config
    self.workdir = workdir
    devices = list(devices) if devices is not None else jax.devices()
    config_lib.validate(config, len(devices), jax.process_count())
    self.mesh = sharding.make_mesh(config.mesh.shape, devices)
    self.rules = sharding.rules_tuple(config.mesh.rules)
    sharding.check_rules(self.rules, self.mesh)
    d = config.data
    distributed.main_first(lambda: sources.get_builder(d), "data_prepared")  # No race.
    self.tokenizer = self._tokenizer()
    self.model = models.build_model(config.model, self.tokenizer.vocab_size, d.seq_len)
    self.objective = objectives.for_config(config, self.tokenizer.vocab_size)
    self.carry_state = bool(config.model.get("carry_state", False))
    self.tx, self.schedule = optim.make_optimizer(config.optimizer, config.num_train_steps)
    self.batch_sharding = sharding.batch_sharding(self.mesh, self.rules)
    self.document_attention = bool(d.get("document_attention", False))
    self._init_shardings()

  def _tokenizer(self) -> tok_lib.Tokenizer:
    d = self.config.data
    texts = lambda: sources.iter_texts(d, d.train_split)
    try:  # Process 0 trains and saves it; the others wait and load the same file.
      return distributed.main_first(
          lambda: tok_lib.get_tokenizer(d.tokenizer, self.workdir, texts, d), "tokenizer")
    except (ValueError, FileNotFoundError) as e:  # Mismatched/missing tokenizer files.
      raise sources.DataError(str(e)) from e

  def _init_fn(self, rng):
    d = self.config.data
    ids = jnp.zeros((1, d.seq_len), jnp.int32)
    params = self.model.init({"params": rng, "dropout": rng}, ids)["params"]
    carry = models.initial_carry(self.model, d.batch_size, boxed=True) if self.carry_state \
        else None
    return TrainState(step=jnp.zeros((), jnp.int32), params=params,
                      opt_state=self.tx.init(params), carry=carry)

  def _init_shardings(self) -> None:
    with nn.logical_axis_rules(self.rules):
      boxed = jax.eval_shape(self._init_fn, jax.random.key(0))
    self.logical_specs = nn.get_partition_spec(boxed)
    self.state_shardings = sharding.logical_to_shardings(self.logical_specs, self.mesh,
                                                         self.rules)
    abstract = nn.meta.unbox(boxed)
    self.state_shardings = sharding.fit_to_shapes(self.state_shardings, abstract, self.mesh)
    self.abstract_state = jax.tree.map(
        lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s), abstract,
        self.state_shardings)
    total, non_emb = models.count_params(abstract.params)
    self.num_params, self.num_non_embedding = total, non_emb
    self.flops_per_token = flops_per_token(non_emb, self.tokenizer.vocab_size, self.config)

  def init_state(self) -> TrainState:
    """Parameters and optimizer state, created directly in their shardings.

    Runs once, so on CPU it is compiled without LLVM's optimizations: about half the
    compile time of a small model, for a slower run that takes milliseconds.
    """
    init = lambda rng: nn.meta.unbox(self._init_fn(rng))
    key = jax.random.key(self.config.seed)
    with jax.set_mesh(self.mesh), nn.logical_axis_rules(self.rules):
      lowered = jax.jit(init, out_shardings=self.state_shardings).lower(key)
      return lowered.compile(INIT_COMPILER_OPTIONS if self.on_cpu else None)(key)

  @property
  def on_cpu(self) -> bool:
    return self.mesh.devices.flat[0].platform == "cpu"

  def total_peak_flops(self, per_device: float) -> float:
    """The run's peak FLOP/s for MFU: CPU devices (cpu_devices) share their host's peak."""
    return per_device * (jax.process_count() if self.on_cpu else self.mesh.size)

  def jit_train_step(self):
    step = functools.partial(
        train_step, model=self.model, tx=self.tx, schedule=self.schedule, seed=self.config.seed,
        accum_steps=self.config.optimizer.grad_accum_steps,
        document_attention=self.document_attention, batch_sharding=self.batch_sharding,
        objective=self.objective)
    if self.config.optimizer.dp.enabled:  # bias hook: DP-SGD step (jaxlm/dp.py).
      step = dp.make_train_step(
          functools.partial(loss_and_metrics, objective=self.objective), model=self.model,
          tx=self.tx, schedule=self.schedule, seed=self.config.seed,
          accum_steps=self.config.optimizer.grad_accum_steps,
          document_attention=self.document_attention, batch_sharding=self.batch_sharding)
    if self.config.get("nan_policy", "stop") != "stop":
      step = resilience.guard_step(step)  # Non-finite steps keep the old state, in the jit.
    return jax.jit(step, in_shardings=(self.state_shardings, self.batch_sharding),
                   out_shardings=(self.state_shardings, sharding.replicated(self.mesh)),
                   donate_argnums=(0,))

  def jit_eval_step(self):
    step = functools.partial(eval_step, model=self.model,
                             token_bytes=jnp.asarray(self.tokenizer.token_bytes()),
                             document_attention=self.document_attention,
                             objective=self.objective)
    return jax.jit(step, in_shardings=(self.state_shardings.params, self.batch_sharding),
                   out_shardings=sharding.replicated(self.mesh))

  def to_global(self, local_batch: dict) -> dict:
    """This process's rows -> one global array per key, sharded over the batch axes."""
    return {k: jax.make_array_from_process_local_data(self.batch_sharding, v)
            for k, v in local_batch.items()}

  def meta(self) -> dict:
    return {"tokenizer": self.tokenizer.identity(),
            "config": ckpt_lib.flat_config(self.config),
            "num_params": self.num_params}


# ----------------------------------------------------------------------------- evaluation


def evaluate(run: Run, params, eval_step_fn, split: str | None = None,
             max_batches: int = -1, cache: dict | None = None,
             stride: int = 1) -> dict[str, float]:
  """Loss, perplexity, bits per byte and accuracy over the split (or its first batches).

  `stride` > 1 evaluates every stride-th batch of the whole split instead: a cheap
  estimate without the bias of the split's first batches.
  """
  d = run.config.data
  key = (split, max_batches, stride)
  if cache is not None and key in cache:
    batches = cache[key]
  else:
    batches = pipeline.eval_batches(d, run.tokenizer, split, jax.process_index(),
                                    jax.process_count(), -1 if stride > 1 else max_batches)
    batches = batches[::stride]
    if jax.process_count() > 1:  # Every process must run the same number of steps.
      from jax.experimental import multihost_utils
      n = int(np.max(multihost_utils.process_allgather(np.array(len(batches)))))
      batches += [pipeline.empty_batch(d, jax.process_count())] * (n - len(batches))
    if cache is not None:
      cache[key] = batches
  totals: dict[str, float] = {}
  with jax.set_mesh(run.mesh), nn.logical_axis_rules(run.rules):
    for batch in batches:
      sums = jax.device_get(eval_step_fn(params, run.to_global(batch)))
      for k, v in sums.items():
        totals[k] = totals.get(k, 0.0) + float(v)
  return summarize(totals, masked_lm=run.objective.name == "masked_lm")


def summarize(totals: dict[str, float], masked_lm: bool = False) -> dict[str, float]:
  """Summed eval loss/weight/correct/bytes -> loss, perplexity, bits per byte, accuracy."""
  w = max(totals.get("weight_sum", 0.0), 1.0)
  loss = totals.get("loss_sum", 0.0) / w
  # Masked LM: loss/ppl/bpb/accuracy are over the selected (masked) tokens only.
  mlm = {"mlm_accuracy": totals.get("correct_sum", 0.0) / w} if masked_lm else {}
  return {
      **mlm,
      "loss": loss,
      "ppl": float(np.exp(min(loss, 700.0))),
      "bpb": totals.get("loss_sum", 0.0) / (np.log(2) * max(totals.get("byte_sum", 0.0), 1.0)),
      "accuracy": totals.get("correct_sum", 0.0) / w,
      "tokens": totals.get("weight_sum", 0.0),
  }


# ----------------------------------------------------------------------------- loop


def _finite_mean(values: list) -> float:
  """Mean of the finite losses (skipped non-finite steps do not poison the interval)."""
  finite = [v for v in values if np.isfinite(v)]
  return float(np.mean(finite)) if finite else float("nan")


def _save_checkpoint(checkpointer, step: int, state, data_state, run, fault_plan) -> None:
  """Starts the async save of `step` (with the fault hooks the tests inject)."""
  if step in fault_plan.get("disk_full_at_checkpoint", ()):
    with faults.disk_full():
      checkpointer.save(step, state, data_state, run.meta())
      checkpointer.wait()
    return
  checkpointer.save(step, state, data_state, run.meta())
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


def train_and_evaluate(config, workdir: str, devices=None) -> dict:
  """Trains `config` in `workdir`, resuming from its latest checkpoint if there is one."""
  os.makedirs(workdir, exist_ok=True)
  run = Run(config, workdir, devices)
  is_main = jax.process_index() == 0
  logging.info("Devices: %d (%s) across %d process(es); mesh %s", jax.device_count(),
               jax.devices()[0].platform, jax.process_count(), dict(run.mesh.shape))
  logging.info("Parameters: %s total, %s non-embedding; %s FLOPs/token; vocab %d (%s)",
               f"{run.num_params:,}", f"{run.num_non_embedding:,}",
               f"{run.flops_per_token:.3g}", run.tokenizer.vocab_size, run.tokenizer.kind)
  if is_main:
    with open(os.path.join(workdir, "config.json"), "w") as f:
      json.dump(ckpt_lib.flat_config(config), f, indent=1)
    augment.record(config.data, workdir)  # bias hook: <workdir>/canaries.json, if any.

  checkpointer = ckpt_lib.Checkpointer(workdir, config.keep_checkpoints)
  if run.carry_state:  # Recurrent state carried across windows: B contiguous data lanes.
    if jax.process_count() > 1:
      raise config_lib.ConfigError(
          "config.model.carry_state is not supported with several processes yet. Fix: run "
          "on one process or set --config.model.carry_state=False.")
    train_iter = iter(lanes.lane_dataset(config.data, run.tokenizer, config.seed))
  else:
    train_iter = shards.ShardedIterator(config.data, run.tokenizer, config.seed,
                                        jax.process_index(), jax.process_count())
  restored = checkpointer.restore_latest(run.abstract_state, lambda meta: ckpt_lib.
                                         check_compatible(meta, config, run.tokenizer.identity()))
  if restored is not None:
    latest, state, data_state = restored
    train_iter.set_state(data_state)
    logging.info("Resumed from step %d in %s", latest, checkpointer.directory)
  else:
    state = run.init_state()
  start = int(jax.device_get(state.step))

  writer = MetricWriter(workdir, enabled=is_main)
  train_step_fn, eval_step_fn = run.jit_train_step(), run.jit_eval_step()
  eval_cache: dict = {}
  prefetch = pipeline.Prefetcher(train_iter, run.to_global, config.data.prefetch)
  tokens_per_step = config.data.batch_size * config.data.seq_len
  peak = run.total_peak_flops(config.peak_flops_per_device)
  num_steps = config.num_train_steps
  end = min(num_steps, config.get("stop_after_steps") or num_steps)  # Sweeps pause runs early.
  last_eval: dict = {}
  interval_losses: list = []
  pending = None  # (step, metrics on device) of the previous step.
  t_interval, steps_in_interval = time.time(), 0
  t_start = time.time()
  data_state = train_iter.get_state()
  fault_plan = faults.planned()
  nan_guard = resilience.NanGuard(config.get("nan_policy", "stop"),
                                  config.get("nan_max_retries", 5),
                                  functools.partial(_rollback, checkpointer, run), TrainingError)
  preempt, preempted = resilience.Preemption(), None
  dp_acc = dp.Accountant(config, run.tokenizer) if config.optimizer.dp.enabled else None  # bias
  try:
    with jax.set_mesh(run.mesh), nn.logical_axis_rules(run.rules):
      for step in range(start, end):
        batch, data_state = next(prefetch)
        if step + 1 in fault_plan.get("nan_batch", ()):
          batch = faults.poison_batch(batch)
        state, metrics = train_step_fn(state, batch)
        # Read step N-1 while step N runs. This bound on the steps in flight also matters
        # for correctness: with several CPU devices (cpu_devices) on a busy host, dozens
        # of queued steps can deadlock XLA:CPU's all-reduce rendezvous (seen on jax 0.10.2).
        if pending is not None:
          prev_step, prev = pending[0], jax.device_get(pending[1])
          state = nan_guard.check(prev_step, prev, state)
          interval_losses.append(float(prev["train_loss"]))
        pending = (step + 1, metrics)
        steps_in_interval += 1
        done = step + 1
        is_last = done == end
        if done % config.log_every_steps == 0 or is_last or done % config.checkpoint_every_steps \
            == 0 or done % config.eval_every_steps == 0:
          current = jax.device_get(metrics)  # Sync: logs, evals and saves see this step.
          state = nan_guard.check(done, current, state)
          interval_losses.append(float(current["train_loss"]))
          pending = None
        if done % config.log_every_steps == 0 or is_last:
          dt = time.time() - t_interval
          tps = tokens_per_step * steps_in_interval / max(dt, 1e-9)
          row = {"train_loss": _finite_mean(interval_losses), **nan_guard.counters(),
                 "train_accuracy": float(current["train_accuracy"]),
                 "grad_norm": float(current["grad_norm"]), "lr": float(current["lr"]),
                 "tokens_per_sec": tps, "mfu": tps * run.flops_per_token / peak,
                 "steps_per_sec": steps_in_interval / max(dt, 1e-9)}
          if dp_acc is not None:  # bias hook: DP-SGD epsilon at optimizer.dp.delta.
            row.update(dp_acc.metrics(done))
          writer.write(done, row)
          eta = (num_steps - done) * dt / max(steps_in_interval, 1)
          logging.info("step %d/%d  loss %.4f  lr %.2e  %s tok/s  MFU %.1f%%  ETA %s", done,
                       num_steps, row["train_loss"], row["lr"], f"{tps:,.0f}", 100 * row["mfu"],
                       _fmt_time(eta))
          interval_losses, steps_in_interval, t_interval = [], 0, time.time()
        if done % config.eval_every_steps == 0 or is_last:
          if run.carry_state:  # The LSTM state runs on along contiguous eval lanes.
            from jaxlm import recurrent_eval
            ev = recurrent_eval.evaluate(run, state.params, max_batches=config.eval_steps,
                                         cache=eval_cache)
          else:
            ev = evaluate(run, state.params, eval_step_fn, max_batches=config.eval_steps,
                          cache=eval_cache)
          last_eval = {f"eval_{k}": v for k, v in ev.items()}
          writer.write(done, last_eval)
          logging.info("eval at step %d: loss %.4f  ppl %.2f  bpb %.4f", done, ev["loss"],
                       ev["ppl"], ev["bpb"])
          t_interval = time.time()  # Eval time is not training throughput.
        saved = done % config.checkpoint_every_steps == 0 or is_last
        if saved:
          _save_checkpoint(checkpointer, done, state, data_state, run, fault_plan)
        if done in fault_plan.get("sigkill_at_step", ()):
          faults.sigkill()
        if done in fault_plan.get("nan_params", ()):
          state = state.replace(params=jax.tree.map(lambda x: x * jnp.nan, state.params))
        if done in fault_plan.get("sigterm_at_step", ()):
          faults.sigterm()
        if not is_last and preempt.requested(done):
          if pending is not None:  # Never save a state whose step went non-finite.
            state = nan_guard.check(done, jax.device_get(pending[1]), state)
            pending = None
          if not saved:
            _save_checkpoint(checkpointer, done, state, data_state, run, fault_plan)
          checkpointer.wait()
          preempted = done
          break
      if pending is not None:
        state = nan_guard.check(pending[0], jax.device_get(pending[1]), state)
  finally:
    preempt.close()
    prefetch.close()
    checkpointer.close()
    writer.close()
  if preempted is not None:
    logging.warning("Stopped by %s at step %d; checkpoint saved. Rerun the same command to "
                    "continue from there.", preempt.signal_name, preempted)
    return {"step": preempted, "preempted": preempt.signal_name, **last_eval}
  logging.info("Trained steps %d-%d in %s", start, end, _fmt_time(time.time() - t_start))
  if is_main and config.sample.num_tokens > 0 and run.objective.name == "causal_lm":
    text = generate.sample_text(run.model, state.params, run.tokenizer, config.sample.prompt,
                                config.sample.num_tokens, config.sample.temperature,
                                config.sample.top_k, seed=config.seed, mesh=run.mesh,
                                rules=run.rules)
    logging.info("Sample:\n%s", config.sample.prompt + text)
  return {"step": end, **last_eval}


def _fmt_time(seconds: float) -> str:
  seconds = int(max(seconds, 0))
  return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"
