"""Checks of a config, before any work: a bad value fails in a second with a message naming
the field and the fix (`ConfigError`). `validate_fields` needs nothing; `validate` also checks
the config against the devices and processes."""

from __future__ import annotations

import math

import ml_collections

from jaxlm.config.base import BEST_METRICS, FAMILIES, MESH_AXES, POOLINGS, TASKS
from jaxlm.data import augment


class ConfigError(ValueError):
  """A config value that cannot work; the message names the field and the fix."""


def _fail(field: str, problem: str, fix: str) -> None:
  raise ConfigError(f"config.{field}: {problem} Fix: {fix}")


def mesh_shape(shape, num_devices: int) -> tuple[int, ...]:
  """Resolves a -1 in the mesh shape; checks the product equals the device count."""
  shape = tuple(int(s) for s in shape)
  if len(shape) != len(MESH_AXES):
    _fail("mesh.shape", f"{shape} has {len(shape)} entries.",
          f"give {len(MESH_AXES)}, one per axis {MESH_AXES}.")
  if shape.count(-1) > 1 or any(s == 0 or s < -1 for s in shape):
    _fail("mesh.shape", f"{shape} is not valid.", "use positive sizes and at most one -1.")
  known = math.prod(s for s in shape if s != -1)
  if -1 in shape:
    if num_devices % known:
      _fail("mesh.shape", f"{shape}: {num_devices} devices are not divisible by {known}.",
            f"choose sizes whose product divides {num_devices}.")
    shape = tuple(num_devices // known if s == -1 else s for s in shape)
  if math.prod(shape) != num_devices:
    _fail("mesh.shape", f"{shape} multiplies to {math.prod(shape)} but there are "
          f"{num_devices} devices.", f"make the product {num_devices} (or use -1 for one axis).")
  return shape


def validate(c: ml_collections.ConfigDict, num_devices: int, num_processes: int = 1) -> None:
  """Checks what can be checked before data or model are built."""
  validate_fields(c)
  d, o = c.data, c.optimizer
  shape = mesh_shape(c.mesh.shape, num_devices)
  batch_axes = shape[0] * shape[1]
  if d.batch_size <= 0 or d.batch_size % batch_axes:
    _fail("data.batch_size", f"{d.batch_size} is not divisible by the data-parallel axes "
          f"(data*fsdp = {batch_axes}).", f"use a multiple of {batch_axes}.")
  if d.batch_size % num_processes:
    _fail("data.batch_size", f"{d.batch_size} is not divisible by {num_processes} processes.",
          f"use a multiple of {num_processes}.")
  if d.shards and (d.shards % num_processes or d.batch_size % d.shards):
    _fail("data.shards", f"{d.shards} must be a multiple of the {num_processes} process(es) and "
          f"divide batch_size={d.batch_size}.", "change it, or use 0 (one per process).")
  if d.cache_tokens_mb < 0:
    _fail("data.cache_tokens_mb", f"{d.cache_tokens_mb} is negative.",
          "use 0 (never tokenize up front) or a size in MB.")
  accum = o.grad_accum_steps
  if accum < 1 or d.batch_size % accum or (d.batch_size // accum) % batch_axes:
    _fail("optimizer.grad_accum_steps", f"{accum} does not split batch {d.batch_size} into "
          f"microbatches divisible by {batch_axes}.", "choose a divisor of batch_size/(data*fsdp).")


def validate_fields(c: ml_collections.ConfigDict) -> None:
  """The checks that need no devices (run first by `jaxlm.main`, before JAX starts)."""
  for f in ("num_train_steps", "log_every_steps", "eval_every_steps", "checkpoint_every_steps"):
    if int(c[f]) <= 0:
      _fail(f, f"is {c[f]}.", "use a positive integer.")
  if c.keep_checkpoints < 1:
    _fail("keep_checkpoints", f"is {c.keep_checkpoints}.", "keep at least 1 (2+ recommended).")
  d, m, o = c.data, c.model, c.optimizer
  if d.seq_len <= 0:
    _fail("data.seq_len", f"is {d.seq_len}.", "use a positive length.")
  if m.max_len and d.seq_len > m.max_len and m.position in ("learned", "sinusoidal"):
    _fail("data.seq_len", f"{d.seq_len} is longer than the position table "
          f"(model.max_len={m.max_len}).", f"set model.max_len >= {d.seq_len} or shorten seq_len.")
  if c.cpu_devices < 0:
    _fail("cpu_devices", f"is {c.cpu_devices}.", "use 0 (JAX default) or a positive count.")
  for f in ("num_heads", "emb_dim", "mlp_dim"):
    if int(m[f]) <= 0:
      _fail(f"model.{f}", f"is {m[f]}.", "use a positive integer.")
  # 0 Transformer blocks is a model too: embeddings -> final norm (with finetune.pooling='mean',
  # a bag-of-embeddings classifier; as an LM, a bigram model).
  least = 1 if m.family == "lstm" or m.scan_layers else 0
  if int(m.num_layers) < least:
    _fail("model.num_layers", f"is {m.num_layers}.",
          "use a positive integer." if least else "use 0 (no blocks) or a positive integer.")
  for f in ("num_kv_heads", "head_dim", "lstm_hidden_dim"):
    if int(m[f]) < 0:
      _fail(f"model.{f}", f"is {m[f]}.", "use 0 (the default) or a positive integer.")
  for f in ("dropout", "attention_dropout"):
    if not 0.0 <= m[f] < 1.0:
      _fail(f"model.{f}", f"is {m[f]}.", "use a probability in [0, 1).")
  if m.emb_dim % m.num_heads and not m.head_dim:
    _fail("model.emb_dim", f"{m.emb_dim} is not divisible by num_heads={m.num_heads}.",
          "change one of them or set model.head_dim.")
  kv = m.num_kv_heads or m.num_heads
  if m.num_heads % kv:
    _fail("model.num_kv_heads", f"{kv} does not divide num_heads={m.num_heads}.",
          "use a divisor of num_heads (1 = multi-query).")
  if m.fused_qkv and kv != m.num_heads:
    _fail("model.fused_qkv", f"needs multi-head attention, but num_kv_heads={kv} and "
          f"num_heads={m.num_heads}.", "set model.fused_qkv=False for GQA/MQA.")
  choices = {
      "model.family": (m.family, FAMILIES),
      "model.position": (m.position, ("none", "learned", "sinusoidal", "rope", "alibi")),
      "model.attention": (m.attention, ("dot", "bilinear")),
      "model.attention_impl": (m.attention_impl, ("", "einsum", "xla", "cudnn")),
      "model.norm": (m.norm, ("layernorm", "rmsnorm")),
      "model.norm_position": (m.norm_position, ("pre", "post")),
      "model.mlp": (m.mlp, ("gelu", "relu", "relu2", "swiglu")),
      "model.remat": (m.remat, ("none", "full", "dots_saveable")),
      "model.dtype": (m.dtype, ("float32", "bfloat16", "float16")),
      "model.param_dtype": (m.param_dtype, ("float32", "bfloat16")),
      "optimizer.schedule": (o.schedule, ("cosine", "linear", "constant", "step_decay")),
      "nan_policy": (c.nan_policy, ("stop", "skip", "rollback")),
  }
  for field, (value, allowed) in choices.items():
    if value not in allowed:
      _fail(field, f"{value!r} is not one of {allowed}.", f"pick one of {allowed}.")
  if o.learning_rate <= 0 or not math.isfinite(o.learning_rate):
    _fail("optimizer.learning_rate", f"is {o.learning_rate}.", "use a positive number.")
  if o.warmup_steps < 0:
    _fail("optimizer.warmup_steps", f"is {o.warmup_steps}.", "use 0 or more.")
  _validate_sgd_step_decay(o)
  if o.name == "muon":
    _validate_muon(c)
  _validate_families(c)
  _validate_bias(c)  # bias: CDA, canaries, DP-SGD.
  validate_finetune(c)


def validate_finetune(c: ml_collections.ConfigDict) -> None:
  """config.finetune (and what a task needs of the model and optimizer)."""
  f = c.finetune
  for field, allowed in (("task", TASKS), ("pooling", ("auto", *POOLINGS)),
                         ("best_metric", tuple(BEST_METRICS))):
    if f[field] not in allowed:
      _fail(f"finetune.{field}", f"{f[field]!r} is not one of {allowed}.", "pick one.")
  if f.patience < 0:
    _fail("finetune.patience", f"is {f.patience}.", "use 0 (off) or more.")
  if not 0 <= f.token_dropout < 1:
    _fail("finetune.token_dropout", f"is {f.token_dropout}.", "use a probability in [0, 1).")
  if f.token_dropout and f.pooling != "mean":
    _fail("finetune.token_dropout", f"leaves tokens out of a mean, and finetune.pooling is "
          f"{f.pooling!r}.", "set finetune.pooling='mean' or token_dropout=0.")
  if f.head_layers < 0 or f.head_dim < 0:
    _fail("finetune.head_layers", f"and head_dim are {f.head_layers}, {f.head_dim}.",
          "use 0 or more.")
  if f.task == "lm":
    return
  if f.task == "classify" and f.pooling == "first" and c.model.causal and \
      c.model.family != "bert":
    raise ConfigError("config.finetune.pooling='first' on a causal model: the first token sees "
                      "nothing of the text. Fix: use 'last' or 'mean' (or a bert backbone).")
  if f.task == "seq2seq" and (c.model.family not in ("gpt", "lstm") or not c.model.causal):
    raise ConfigError(f"config.finetune.task='seq2seq' generates left to right and needs a causal "
                      f"model, not family={c.model.family!r} (causal={c.model.causal}). Fix: "
                      "use model.family='gpt' or 'lstm'.")
  if c.model.family == "ngram":
    raise ConfigError("config.model.family='ngram' is count-based and cannot be fine-tuned. "
                      "Fix: use gpt, bert or lstm.")
  if not 0 < f.layer_lr_decay <= 1:
    _fail("finetune.layer_lr_decay", f"is {f.layer_lr_decay}.", "use 0 < decay <= 1.")
  if f.layer_lr_decay != 1 and c.model.scan_layers:
    _fail("finetune.layer_lr_decay", "needs one parameter set per layer.",
          "--config.model.scan_layers=False.")
  if c.optimizer.grad_accum_steps != 1:
    _fail("optimizer.grad_accum_steps", "fine-tuning uses whole batches.",
          "set it to 1 and choose data.batch_size.")


def _validate_bias(c: ml_collections.ConfigDict) -> None:
  """Checks of data.cda, data.canaries and optimizer.dp."""
  try:
    augment.check(c.data)
  except ValueError as e:
    raise ConfigError(str(e)) from e
  dp = c.optimizer.dp
  if dp.enabled:
    if dp.accountant not in ("rdp", "pld"):
      _fail("optimizer.dp.accountant", f"{dp.accountant!r} is not rdp or pld.", "pick one.")
    if c.finetune.task != "lm":
      _fail("optimizer.dp", f"is for LM training, not finetune.task={c.finetune.task!r}.",
            "set optimizer.dp.enabled=False.")
    if dp.l2_clip <= 0 or dp.noise_multiplier < 0 or not 0 < dp.delta < 1:
      _fail("optimizer.dp", f"l2_clip={dp.l2_clip}, noise_multiplier={dp.noise_multiplier}, "
            f"delta={dp.delta}.", "use l2_clip > 0, noise_multiplier >= 0, 0 < delta < 1.")
    if c.model.family not in ("gpt", "lstm", "bert") or c.model.carry_state:
      _fail("optimizer.dp", f"needs a neural family without carried state, not "
            f"{c.model.family!r} (carry_state={c.model.carry_state}).",
            "use gpt/bert/lstm with model.carry_state=False, or dp.enabled=False.")


def _validate_muon(c: ml_collections.ConfigDict) -> None:
  """Checks of optimizer.name='muon': a Transformer family, unscanned layers, its fields."""
  o = c.optimizer
  if c.model.family not in ("gpt", "bert") or c.model.scan_layers:
    _fail("optimizer.name", f"'muon' orthogonalizes the Transformer blocks' matrices, not "
          f"those of family={c.model.family!r} (scan_layers={c.model.scan_layers}).",
          "use adamw, or family gpt/bert with model.scan_layers=False.")
  if not (o.muon_learning_rate > 0 and 0.0 <= o.muon_beta < 1.0):
    _fail("optimizer.muon_learning_rate" if o.muon_learning_rate <= 0 else "optimizer.muon_beta",
          f"muon_learning_rate={o.muon_learning_rate}, muon_beta={o.muon_beta}.",
          "use a positive learning rate and a momentum in [0, 1).")


def _validate_sgd_step_decay(o: ml_collections.ConfigDict) -> None:
  """Checks of optimizer.name and the step_decay schedule's fields."""
  if o.name not in ("adamw", "sgd", "muon"):
    _fail("optimizer.name", f"{o.name!r} is not one of ('adamw', 'sgd', 'muon').",
          "pick adamw, sgd or muon.")
  if o.schedule != "step_decay":
    return
  if o.steps_per_epoch <= 0:
    _fail("optimizer.steps_per_epoch", f"is {o.steps_per_epoch}, but schedule='step_decay' "
          "decays once per epoch.", "set it to the optimizer steps of one epoch.")
  if o.decay_start_epoch < 1:
    _fail("optimizer.decay_start_epoch", f"is {o.decay_start_epoch}.",
          "use 1 or more (epochs are counted from 1).")
  if not 0.0 < o.decay_factor <= 1.0:
    _fail("optimizer.decay_factor", f"is {o.decay_factor}.", "use a factor in (0, 1].")


def _validate_families(c: ml_collections.ConfigDict) -> None:
  """Checks of the family-specific fields (mlm, lstm, ngram)."""
  m = c.model
  if "mlm" in c:
    for f in ("fraction", "mask_prob", "random_prob"):
      if not 0.0 <= c.mlm[f] <= 1.0:
        _fail(f"mlm.{f}", f"is {c.mlm[f]}.", "use a probability in [0, 1].")
    if c.mlm.mask_prob + c.mlm.random_prob > 1.0:
      _fail("mlm.random_prob", f"mask_prob + random_prob = {c.mlm.mask_prob + c.mlm.random_prob}"
            " exceeds 1.", "make the two sum to at most 1 (the rest keep their token).")
    if m.family == "bert" and c.mlm.fraction <= 0:
      _fail("mlm.fraction", "is 0: no token would be predicted.", "use e.g. 0.15.")
  if m.carry_state:
    if m.family != "lstm":
      _fail("model.carry_state", f"only applies to family 'lstm', not {m.family!r}.",
            "set model.carry_state=False.")
    if c.optimizer.grad_accum_steps != 1:
      _fail("optimizer.grad_accum_steps", "must be 1 with model.carry_state (each batch row is "
            "a data lane whose state carries to the next step).", "set it to 1.")
  if m.init_scale < 0 or m.lstm_unroll < 1:
    _fail("model.init_scale" if m.init_scale < 0 else "model.lstm_unroll",
          f"init_scale={m.init_scale}, lstm_unroll={m.lstm_unroll}.",
          "use init_scale >= 0 (0 = default init) and lstm_unroll >= 1.")
  if m.family == "ngram" and c.ngram.order < 1:
    _fail("ngram.order", f"is {c.ngram.order}.", "use 1 or more (5 is usual).")
