"""Loading a trained workdir for inference: config, tokenizer, model and params only.

A workdir holds `config.json` (the run's config, flattened to dotted keys),
`tokenizer.json` and `checkpoints/`. `load_for_inference` rebuilds the config
(on top of today's defaults, so fields added since the run was trained get their
defaults), builds the model and restores just the params from the orbax
checkpoint into their mesh shardings (the optimizer state is never read).
"""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import orbax.checkpoint as ocp

from jaxlm import config as config_lib
from jaxlm import models, sharding
from jaxlm.checkpoint import Checkpointer, CheckpointError
from jaxlm.data import tokenizers as tok_lib

CONFIG_FILE = "config.json"


def _to_tuples(v):
  return tuple(_to_tuples(x) for x in v) if isinstance(v, list) else v


def config_from_flat(flat: dict) -> ml_collections.ConfigDict:
  """{'a.b': v} (as written to config.json) -> a ConfigDict, over the base defaults.

  Lists become tuples again (JSON has no tuples); unknown keys are kept, so a
  config from a newer branch still loads.
  """
  nested = config_lib.base_config().to_dict()
  for key, value in flat.items():
    node = nested
    *parents, leaf = key.split(".")
    for p in parents:
      node = node.setdefault(p, {})
    node[leaf] = _to_tuples(value)
  return ml_collections.ConfigDict(nested)


def load_config(workdir: str) -> ml_collections.ConfigDict:
  path = os.path.join(workdir, CONFIG_FILE)
  try:
    with open(path) as f:
      flat = json.load(f)
  except FileNotFoundError as e:
    raise CheckpointError(f"No {CONFIG_FILE} in {workdir}: not a jaxlm workdir. Fix: pass the "
                          "--workdir a training run wrote.") from e
  except json.JSONDecodeError as e:
    raise CheckpointError(f"{path} is not valid JSON ({e}). Fix: restore the file.") from e
  return config_from_flat(flat)


def save_config(config, workdir: str) -> None:
  from jaxlm.checkpoint import flat_config

  os.makedirs(workdir, exist_ok=True)
  with open(os.path.join(workdir, CONFIG_FILE), "w") as f:
    json.dump(flat_config(config), f, indent=1)


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
  """Params only (a partial restore of the 'state' item) of `step` (default: the latest)."""
  ckpt = Checkpointer(workdir, async_save=False)
  try:
    steps = ckpt.all_steps()
    if not steps:
      raise CheckpointError(f"No checkpoint in {ckpt.directory}. Fix: train first, or pass "
                            "the workdir of a run that saved one.")
    step = steps[-1] if step is None else int(step)
    if step not in steps:
      raise CheckpointError(f"No checkpoint for step {step} in {ckpt.directory}; it has "
                            f"{steps}. Fix: pass one of those (or omit the step for the latest).")
    target = {"params": abstract}
    restored = ckpt.manager.restore(step, args=ocp.args.Composite(state=ocp.args.PyTreeRestore(
        item=target, restore_args=ocp.checkpoint_utils.construct_restore_args(target),
        partial_restore=True)))
    return restored["state"]["params"], step
  finally:
    ckpt.close()


def load_for_inference(workdir: str, step: int | None = None, devices=None,
                       **model_overrides) -> InferenceModel:
  """Config, tokenizer, model and params of `workdir`'s latest (or given) checkpoint."""
  workdir = os.path.abspath(os.path.expanduser(workdir))
  config = load_config(workdir)
  tokenizer = tok_lib.load_tokenizer(workdir)
  mesh = inference_mesh(config, devices)
  rules = sharding.rules_tuple(config.mesh.rules)
  model = models.build_model(config.model, tokenizer.vocab_size, config.data.seq_len,
                             **model_overrides)
  abstract, shardings = abstract_params(model, mesh, rules)
  params, step = restore_params(workdir, abstract, step)
  return InferenceModel(config, model, params, tokenizer, mesh, rules, step, shardings)
