"""`config.init_from`: find a pretraining checkpoint, reuse its tokenizer, restore its weights.

`init_from` is a pretraining workdir, its `checkpoints` folder, or one step's
folder (`.../checkpoints/1000`); `finetune.init_step` picks a step otherwise
(-1 = latest). Everything is checked before training starts: the checkpoint
exists, the model family matches, the configured tokenizer is the pretraining
run's, and every backbone parameter exists in the checkpoint with the same
shape (a mismatch names the parameter). Only the parameters are read (a
partial orbax restore); the pretraining optimizer state is not.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil

import jax
import orbax.checkpoint as ocp

from jaxlm.checkpoint import CheckpointError
from jaxlm.data import tokenizers as tok_lib

TOKENIZER_FILES = (tok_lib.TOKENIZER_FILE, "vocab.txt", "spm.model")


@dataclasses.dataclass(frozen=True)
class Pretrained:
  workdir: str  # The pretraining run's workdir (holds tokenizer.json).
  step: int
  step_dir: str  # .../checkpoints/<step>

  @property
  def meta(self) -> dict:
    with open(os.path.join(self.step_dir, "meta", "metadata"), encoding="utf-8") as f:
      return json.load(f)

  @property
  def config(self) -> dict:
    return self.meta.get("config", {})


def _steps(ckpt_dir: str) -> list[int]:
  return sorted(int(n) for n in os.listdir(ckpt_dir) if n.isdigit()
                and os.path.isdir(os.path.join(ckpt_dir, n, "state")))


def resolve(init_from: str, init_step: int = -1) -> Pretrained:
  """The checkpoint that `config.init_from` (and `finetune.init_step`) name."""
  path = os.path.abspath(os.path.expanduser(init_from))
  if not os.path.isdir(path):
    raise CheckpointError(f"config.init_from={init_from!r}: no such directory. Fix: give the "
                          "workdir of a finished pretraining run.")
  base, step = path, init_step
  if os.path.basename(path).isdigit() and os.path.isdir(os.path.join(path, "state")):
    base, step = os.path.dirname(path), int(os.path.basename(path))
  if os.path.isdir(os.path.join(base, "checkpoints")):
    ckpt_dir, workdir = os.path.join(base, "checkpoints"), base
  else:
    ckpt_dir, workdir = base, os.path.dirname(base)
  steps = _steps(ckpt_dir) if os.path.isdir(ckpt_dir) else []
  if not steps:
    raise CheckpointError(f"config.init_from={init_from!r} holds no checkpoint (looked in "
                          f"{ckpt_dir}). Fix: pretrain there first, or point at a run's workdir.")
  if step is None or step < 0:
    step = steps[-1]
  elif step not in steps:
    raise CheckpointError(f"config.init_from={init_from!r} has no step {step}; it has {steps}. "
                          "Fix: set config.finetune.init_step to one of them (or -1).")
  return Pretrained(workdir, step, os.path.join(ckpt_dir, str(step)))


def prepare_tokenizer(config, workdir: str, ref: Pretrained) -> None:
  """Copies the pretraining run's tokenizer into `workdir`; a different one is an error."""
  saved = ref.meta.get("tokenizer") or {}
  kind = config.data.tokenizer
  if saved.get("kind") and saved["kind"] != kind:
    raise CheckpointError(
        f"config.data.tokenizer={kind!r} but the pretrained run {ref.workdir} used a "
        f"{saved['kind']!r} tokenizer. A fine-tuned model must keep its pretraining tokenizer. "
        f"Fix: --config.data.tokenizer={saved['kind']} (its tokenizer.json is reused).")
  src = os.path.join(ref.workdir, tok_lib.TOKENIZER_FILE)
  if not os.path.isfile(src):
    raise CheckpointError(f"config.init_from: {src} is missing, so the pretraining tokenizer is "
                          "unknown. Fix: point at the pretraining run's workdir.")
  pre_tok = tok_lib.load_tokenizer(ref.workdir)
  if config.data.tokenizer_path:
    other = tok_lib.tokenizer_from_path(config.data.tokenizer_path)
    if other.identity() != pre_tok.identity():
      raise CheckpointError(
          f"config.data.tokenizer_path={config.data.tokenizer_path!r} is not the tokenizer of "
          f"the pretrained run {ref.workdir}. Fix: unset data.tokenizer_path (the pretraining "
          "tokenizer is reused).")
  os.makedirs(workdir, exist_ok=True)
  if os.path.isfile(os.path.join(workdir, tok_lib.TOKENIZER_FILE)):
    mine = tok_lib.load_tokenizer(workdir)
    if mine.identity() != pre_tok.identity():
      raise CheckpointError(
          f"{workdir} already holds a different tokenizer than the pretrained run {ref.workdir}"
          f" ({mine.identity()} vs {pre_tok.identity()}). Fix: use a fresh --workdir.")
    return
  for name in TOKENIZER_FILES[1:] + TOKENIZER_FILES[:1]:  # tokenizer.json last: marks complete.
    if os.path.isfile(os.path.join(ref.workdir, name)):
      shutil.copyfile(os.path.join(ref.workdir, name), os.path.join(workdir, name))


def check_model(config, ref: Pretrained) -> None:
  """The family must match; the shapes are checked leaf by leaf in `restore_params`."""
  saved = ref.config.get("model.family")
  if saved and saved != config.model.family:
    raise CheckpointError(
        f"config.model.family={config.model.family!r} but config.init_from holds a {saved!r} "
        f"model ({ref.step_dir}). Fix: --config.model.family={saved} and the same model.* "
        "sizes as the pretraining run.")


def _path_str(path) -> str:
  return "/".join(str(getattr(p, "key", getattr(p, "idx", p))) for p in path)


def restore_params(ref: Pretrained, abstract_params, prefix: str = "") -> object:
  """Pretrained weights for `abstract_params` (ShapeDtypeStructs with shardings).

  Parameters the checkpoint has beyond these (an LM head the classifier does
  not use) are ignored; one that is missing or has another shape is an error
  naming it. `prefix` is where `abstract_params` sit in the new model (for messages).
  """
  state_dir = os.path.join(ref.step_dir, "state")
  checkpointer = ocp.PyTreeCheckpointer()
  saved = checkpointer.metadata(state_dir)
  saved = getattr(saved, "item_metadata", saved)
  saved = getattr(saved, "tree", saved)
  saved_params = saved.get("params") if isinstance(saved, dict) else None
  if saved_params is None:
    raise CheckpointError(f"{state_dir} has no 'params'. Fix: point config.init_from at a "
                          "jaxlm training run.")
  saved_flat = {_path_str(p): m for p, m in jax.tree_util.tree_leaves_with_path(saved_params)}
  changed = _model_diff(ref)
  for path, a in jax.tree_util.tree_leaves_with_path(abstract_params):
    name = _path_str(path)
    where = f"{prefix}/{name}" if prefix else name
    if name not in saved_flat:
      raise CheckpointError(
          f"Parameter {where} is not in the pretrained checkpoint {ref.step_dir}: the model is "
          f"not the one that was pretrained.{changed} Fix: use the pretraining run's model.* "
          "config.")
    if tuple(saved_flat[name].shape) != tuple(a.shape):
      raise CheckpointError(
          f"Parameter {where} has shape {tuple(a.shape)} here but "
          f"{tuple(saved_flat[name].shape)} in the pretrained checkpoint {ref.step_dir}."
          f"{changed} Fix: use the pretraining run's model.* config (and model.max_len if the "
          "sequence length differs).")
  target = {"params": abstract_params}
  restored = checkpointer.restore(state_dir, args=ocp.args.PyTreeRestore(
      item=target, restore_args=ocp.checkpoint_utils.construct_restore_args(target),
      partial_restore=True))
  return restored["params"]


def _model_diff(ref: Pretrained) -> str:
  """Which model.* / seq_len fields the pretraining run had, for error messages."""
  cfg = ref.config
  keys = [k for k in sorted(cfg) if k.startswith("model.") or k == "data.seq_len"]
  fields = ", ".join(f"{k}={cfg[k]!r}" for k in keys if k.split(".")[-1] in (
      "family", "num_layers", "num_heads", "emb_dim", "mlp_dim", "max_len", "seq_len"))
  return f" The pretraining run had {fields}." if fields else ""
