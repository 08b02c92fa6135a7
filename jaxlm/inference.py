"""Loading a trained workdir for inference: config, tokenizer, model and params only.

A workdir holds `config.json` (the run's config, flattened to dotted keys),
`tokenizer.json` and `checkpoints/`. `load_for_inference` rebuilds the config
(on top of today's defaults, so fields added since the run was trained get their
defaults), builds the model and restores just the params from the orbax
checkpoint into their mesh shardings (the optimizer state is never read).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections

from jaxlm import config as config_lib
from jaxlm import models, sharding
from jaxlm import workdir as wd_lib
from jaxlm.checkpoint import Checkpointer
from jaxlm.data import tokenizers as tok_lib

CONFIG_FILE = wd_lib.CONFIG_FILE
config_from_flat = wd_lib.config_from_flat  # The workdir module owns config.json.
load_config = wd_lib.read_config


def save_config(config, workdir: str) -> None:
  wd_lib.write_config(workdir, config)


@dataclasses.dataclass
class InferenceModel:
  """What generation, serving and export need from a trained run."""

  config: ml_collections.ConfigDict
  model: nn.Module
  params: Any
  tokenizer: tok_lib.Tokenizer
  mesh: jax.sharding.Mesh
  rules: tuple
  step: int | None = None
  param_shardings: Any = None


def inference_mesh(config, devices=None) -> jax.sharding.Mesh:
  """The run's mesh if it fits these devices, else all devices on the data axis."""
  devices = list(devices if devices is not None else jax.devices())
  try:
    return sharding.make_mesh(config.mesh.shape, devices)
  except config_lib.ConfigError:
    return sharding.make_mesh((-1, 1, 1), devices)


def abstract_params(model: nn.Module, mesh, rules, seq_len: int = 8):
  """(ShapeDtypeStructs carrying shardings, the shardings) of the model's params."""
  ids = jnp.zeros((1, seq_len), jnp.int32)
  with nn.logical_axis_rules(rules):
    boxed = jax.eval_shape(lambda r: model.init(r, ids)["params"], jax.random.key(0))
  shardings = sharding.logical_to_shardings(nn.get_partition_spec(boxed), mesh, rules)
  abstract = jax.tree.map(lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s),
                          nn.meta.unbox(boxed), shardings)
  return abstract, shardings


def restore_params(workdir: str, abstract, step: int | None = None) -> tuple[Any, int]:
  """Params only (a partial restore of the 'state' item) of `step` (default: the newest
  intact one), checked against the fingerprints saved with them; reads only."""
  ckpt = Checkpointer(workdir, read_only=True)
  try:
    return ckpt.restore_params(step, abstract)
  finally:
    ckpt.close()


def load_for_inference(workdir: str, step: int | None = None, devices=None,
                       **model_overrides) -> InferenceModel:
  """Config, tokenizer, model and params of `workdir`'s latest (or given) checkpoint."""
  workdir = str(wd_lib.path(workdir))
  config = load_config(workdir)
  tokenizer = tok_lib.load_tokenizer(workdir)
  mesh = inference_mesh(config, devices)
  rules = sharding.rules_tuple(config.mesh.rules)
  model = models.build_model(config.model, tokenizer.vocab_size, config.data.seq_len,
                             **model_overrides)
  abstract, shardings = abstract_params(model, mesh, rules)
  params, step = restore_params(workdir, abstract, step)
  return InferenceModel(config, model, params, tokenizer, mesh, rules, step, shardings)
