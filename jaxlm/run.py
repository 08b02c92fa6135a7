"""The `Run`: everything a run needs, built once from config.

Mesh, tokenizer, data source, model, objective, optimizer, born-sharded state and
its shardings, the per-process batch, and the jitted steps of `jaxlm.steps`.
"""

from __future__ import annotations

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
from absl import logging

from jaxlm import checkpoint as ckpt_lib
from jaxlm import config as config_lib
from jaxlm import distributed, dp, models, objectives, optim, resilience, sharding
from jaxlm.data import pipeline, sources
from jaxlm.data import tokenizers as tok_lib
from jaxlm.flops import flops_per_token
from jaxlm.steps import TrainState, eval_step, loss_and_metrics, train_step

SUM_KEYS = ("loss_sum", "weight_sum", "correct_sum", "byte_sum")  # What `eval_step` sums.

INIT_COMPILER_OPTIONS = {"xla_backend_optimization_level": 0,
                         "xla_llvm_disable_expensive_passes": True}


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
    # The dataset, prepared (process 0 first: no race) and opened once for the whole run.
    self.data = sources.DataSource(
        d, distributed.main_first(lambda: sources.get_builder(d), "data_prepared"))
    self.tokenizer = self._tokenizer()
    self.model = self._model()
    self.objective = self._objective()
    self.carry_state = bool(config.model.carry_state) and self.objective.name == "causal_lm"
    self.tx, self.schedule = self._optimizer()
    self.batch_sharding = sharding.batch_sharding(self.mesh, self.rules)
    self._row_shardings = {len(self.batch_sharding.spec): self.batch_sharding}  # By rank.
    self.local_batch_size = pipeline.local_batch_size(d.batch_size, jax.process_count())
    self.document_attention = bool(d.document_attention)
    self._init_shardings()

  def _tokenizer(self) -> tok_lib.Tokenizer:
    d = self.config.data
    texts = lambda: self.data.texts(d.train_split)
    try:  # Process 0 trains and saves it; the others wait and load the same file.
      return distributed.main_first(
          lambda: tok_lib.get_tokenizer(d.tokenizer, self.workdir, texts, d), "tokenizer")
    except (ValueError, FileNotFoundError) as e:  # Mismatched/missing tokenizer files.
      raise sources.DataError(str(e)) from e

  # What a kind of run builds differently (fine-tuning: `finetune.TaskRun`).

  def _model(self):
    return models.build_model(self.config.model, self.tokenizer.vocab_size,
                              self.config.data.seq_len)

  def _objective(self) -> objectives.Objective:
    return objectives.for_config(self.config, self.tokenizer.vocab_size)

  def _optimizer(self) -> tuple:
    return optim.make_optimizer(self.config.optimizer, self.config.num_train_steps)

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
    # A box around nothing (optax's MaskedNode where a partitioned optimizer, e.g. muon, keeps
    # no state for a parameter) has no array to shard: unbox it.
    empty_box = lambda x: isinstance(x, nn.Partitioned) and not jax.tree.leaves(x.value)
    boxed = jax.tree.map(lambda x: x.value if empty_box(x) else x, boxed,
                         is_leaf=lambda x: isinstance(x, nn.Partitioned))
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
    self.flops_per_token = flops_per_token(abstract.params, self.config,
                                           self.tokenizer.vocab_size)

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
  def flat_allreduce(self) -> bool:
    """One raveled all-reduce per step (`steps.flat_data_parallel`): CPU devices, a data-only
    mesh of several devices, and a step with no randomness in it."""
    c, m = self.config, self.mesh.shape
    return (bool(c.mesh.cpu_flat_allreduce) and self.on_cpu and m["data"] > 1
            and m["fsdp"] == 1 and m["tensor"] == 1
            and c.model.dropout == 0 and c.model.attention_dropout == 0
            and self.objective.name in ("causal_lm", "seq2seq")
            and c.optimizer.grad_accum_steps == 1 and not c.optimizer.dp.enabled)

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
        objective=self.objective,
        flat_allreduce_mesh=self.mesh if self.flat_allreduce else None,
        carry_specs=jax.tree.map(lambda s: s.spec, self.state_shardings.carry))
    if self.config.optimizer.dp.enabled:  # DP-SGD: per-example clipped, noised grads (dp.py).
      step = dp.make_train_step(
          functools.partial(loss_and_metrics, objective=self.objective), model=self.model,
          tx=self.tx, schedule=self.schedule, seed=self.config.seed,
          accum_steps=self.config.optimizer.grad_accum_steps,
          document_attention=self.document_attention, batch_sharding=self.batch_sharding)
    if self.config.nan_policy != "stop":
      step = resilience.guard_step(step)  # Non-finite steps keep the old state, in the jit.
    return jax.jit(step, in_shardings=(self.state_shardings, self.batch_in_shardings),
                   out_shardings=(self.state_shardings, sharding.replicated(self.mesh)),
                   donate_argnums=(0,))

  def jit_eval_step(self):
    """The jitted `steps.eval_step`: (params, batch) -> sums, or with model.carry_state
    (params, batch, carry) -> sums with the new state under 'carry'."""
    step = functools.partial(eval_step, model=self.model,
                             document_attention=self.document_attention,
                             objective=self.objective)
    rep = sharding.replicated(self.mesh)
    if self.carry_state:
      carry = self.state_shardings.carry
      return jax.jit(step, in_shardings=(self.state_shardings.params, self.batch_sharding, carry),
                     out_shardings={**{k: rep for k in SUM_KEYS}, "carry": carry})
    return jax.jit(step, in_shardings=(self.state_shardings.params, self.batch_in_shardings),
                   out_shardings=rep)

  def resume(self, checkpointer, train_iter) -> tuple[TrainState, dict]:
    """(state, meta) of the newest good checkpoint, else (initial state, {}): one policy for
    every loop. A corrupt latest step is reported, quarantined and the previous one used
    (`Checkpointer.restore_latest`); an incompatible one (config/tokenizer) stops the run."""
    restored = checkpointer.restore_latest(self.abstract_state, lambda meta: ckpt_lib.
                                           check_compatible(meta, self.config,
                                                            self.tokenizer.identity()))
    if restored is None:
      return self.init_state(), {}
    step, state, data_state = restored
    train_iter.set_state(data_state)
    logging.info("Resumed from step %d in %s", step, checkpointer.directory)
    return state, checkpointer.restore_meta(step)

  @property
  def batch_in_shardings(self):
    """The jitted steps' batch sharding: every window row-sharded over the batch axes."""
    return self.batch_sharding

  def to_global(self, local_batch: dict) -> dict:
    """This process's rows -> one global array per key, rows sharded over the batch axes,
    whatever its rank (LM windows [B, L]; a task's labels [B] beside its ids [B, L])."""
    shardings = {k: self._rows_sharding(v.ndim) for k, v in local_batch.items()}
    if jax.process_count() == 1:  # One transfer call for all keys (runs for every batch).
      return jax.device_put(local_batch, shardings)
    return {k: jax.make_array_from_process_local_data(shardings[k], v)
            for k, v in local_batch.items()}

  def _rows_sharding(self, ndim: int) -> jax.sharding.NamedSharding:
    """Rows over the batch axes, other dims whole; made once per rank (`to_global` runs
    for every batch)."""
    if ndim not in self._row_shardings:
      self._row_shardings[ndim] = jax.sharding.NamedSharding(self.mesh, jax.sharding.PartitionSpec(
          self.batch_sharding.spec[0], *[None] * (ndim - 1)))
    return self._row_shardings[ndim]

  def meta(self) -> dict:
    return {"tokenizer": self.tokenizer.identity(),
            "config": ckpt_lib.flat_config(self.config),
            "num_params": self.num_params}
