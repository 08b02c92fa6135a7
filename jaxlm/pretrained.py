"""`config.init_from`: find a pretraining checkpoint, reuse its tokenizer, restore its weights.

`init_from` is a pretraining workdir, its `checkpoints` folder, or one step's
folder (`.../checkpoints/1000`); `finetune.init_step` picks a step otherwise
(-1 = latest). Everything is checked before training starts: the checkpoint
exists, the model family matches, the configured tokenizer is the pretraining
run's, and every backbone parameter exists in the checkpoint with the same
shape (a mismatch names the parameter). Only the parameters are read (a
partial orbax restore); the pretraining optimizer state is not. They are checked
against the fingerprints saved with them: a corrupt latest step falls back to the
previous intact one, a corrupt explicit step is an error naming it. The pretraining
workdir is only read.
"""

from __future__ import annotations

import dataclasses

import jax
import orbax.checkpoint as ocp
from absl import logging

from jaxlm import checkpoint as ckpt_lib
from jaxlm import workdir as wd_lib
from jaxlm.data import tokenizers as tok_lib
from jaxlm.workdir import CheckpointError

TOKENIZER_FILES = (tok_lib.TOKENIZER_FILE, "vocab.txt", "spm.model")


@dataclasses.dataclass(frozen=True)
class Pretrained:
  workdir: str  # The pretraining run's workdir (holds tokenizer.json).
  step: int
  step_dir: str  # .../checkpoints/<step>
  older: tuple[int, ...] = ()  # Earlier steps to fall back to if `step` is corrupt (latest).

  @property
  def meta(self) -> dict:
    return _meta(self.step_dir)

  @property
  def config(self) -> dict:
    return self.meta.get("config", {})


def _meta(step_dir) -> dict:
  return wd_lib.read_json(wd_lib.path(step_dir) / "meta" / "metadata")


def _steps(ckpt_dir) -> list[int]:
  d = wd_lib.path(ckpt_dir)
  return [s for s in wd_lib.list_steps(d) if (d / str(s) / "state").is_dir()]


def resolve(init_from: str, init_step: int = -1) -> Pretrained:
  """The checkpoint that `config.init_from` (and `finetune.init_step`) name."""
  path = wd_lib.path(init_from)
  if not path.is_dir():
    raise CheckpointError(f"config.init_from={init_from!r}: no such directory. Fix: give the "
                          "workdir of a finished pretraining run.")
  base, step = path, init_step
  if path.name.isdigit() and (path / "state").is_dir():
    base, step = path.parent, int(path.name)
  if (base / wd_lib.CHECKPOINTS).is_dir():
    ckpt_dir, workdir = base / wd_lib.CHECKPOINTS, base
  else:
    ckpt_dir, workdir = base, base.parent
  steps = _steps(ckpt_dir)
  if not steps:
    raise CheckpointError(f"config.init_from={init_from!r} holds no checkpoint (looked in "
                          f"{ckpt_dir}). Fix: pretrain there first, or point at a run's workdir.")
  latest = step is None or step < 0
  if latest:
    step = steps[-1]
  elif step not in steps:
    raise CheckpointError(f"config.init_from={init_from!r} has no step {step}; it has {steps}. "
                          "Fix: set config.finetune.init_step to one of them (or -1).")
  older = tuple(reversed(steps[:-1])) if latest else ()
  return Pretrained(str(workdir), step, str(ckpt_dir / str(step)), older)


def prepare_tokenizer(config, workdir: str, ref: Pretrained) -> None:
  """Copies the pretraining run's tokenizer into `workdir`; a different one is an error."""
  saved = ref.meta.get("tokenizer") or {}
  kind = config.data.tokenizer
  if saved.get("kind") and saved["kind"] != kind:
    raise CheckpointError(
        f"config.data.tokenizer={kind!r} but the pretrained run {ref.workdir} used a "
        f"{saved['kind']!r} tokenizer. A fine-tuned model must keep its pretraining tokenizer. "
        f"Fix: --config.data.tokenizer={saved['kind']} (its tokenizer.json is reused).")
  src = wd_lib.path(ref.workdir) / tok_lib.TOKENIZER_FILE
  if not src.is_file():
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
  if (wd_lib.path(workdir) / tok_lib.TOKENIZER_FILE).is_file():
    mine = tok_lib.load_tokenizer(workdir)
    if mine.identity() != pre_tok.identity():
      raise CheckpointError(
          f"{workdir} already holds a different tokenizer than the pretrained run {ref.workdir}"
          f" ({mine.identity()} vs {pre_tok.identity()}). Fix: use a fresh --workdir.")
    return
  for name in TOKENIZER_FILES[1:] + TOKENIZER_FILES[:1]:  # tokenizer.json last: marks complete.
    if (wd_lib.path(ref.workdir) / name).is_file():
      wd_lib.copy_file(wd_lib.path(ref.workdir) / name, wd_lib.path(workdir) / name)


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
  The weights must match the fingerprints saved with them: a corrupt step falls back to
  `ref.older` (the previous steps, when init_from named no step) or is an error naming it.
  """
  bad: list[str] = []
  for step in (ref.step, *ref.older):
    step_dir = wd_lib.path(ref.step_dir).parent / str(step)
    try:
      params = _restore_step(ref, str(step_dir), abstract_params, prefix)
    except ckpt_lib._Corrupt as e:
      bad.append(f"step {step} is corrupt ({e})")
      logging.error("config.init_from: checkpoint %s is corrupt (%s)", step_dir, e)
      continue
    if bad:
      logging.warning("config.init_from: using step %d instead (%s).", step, "; ".join(bad))
    return params
  raise CheckpointError(f"config.init_from={ref.workdir!r}: {'; '.join(bad)}. Fix: set "
                        "config.finetune.init_step to an intact step, or pretrain again.")


def _restore_step(ref: Pretrained, step_dir: str, abstract_params, prefix: str) -> object:
  state_dir = wd_lib.path(step_dir) / "state"
  checkpointer = ocp.PyTreeCheckpointer()
  try:
    saved = checkpointer.metadata(state_dir)
  except Exception as e:
    raise ckpt_lib._Corrupt(f"unreadable metadata: {ckpt_lib._describe(e)}") from e
  saved = getattr(saved, "item_metadata", saved)
  saved = getattr(saved, "tree", saved)
  if not isinstance(saved, dict):  # Orbax returns None when the tree's storage is unreadable.
    raise ckpt_lib._Corrupt("unreadable array metadata")
  saved_params = saved.get("params")
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
          f"Parameter {where} is not in the pretrained checkpoint {step_dir}: the model is "
          f"not the one that was pretrained.{changed} Fix: use the pretraining run's model.* "
          "config.")
    if tuple(saved_flat[name].shape) != tuple(a.shape):
      raise CheckpointError(
          f"Parameter {where} has shape {tuple(a.shape)} here but "
          f"{tuple(saved_flat[name].shape)} in the pretrained checkpoint {step_dir}."
          f"{changed} Fix: use the pretraining run's model.* config (and model.max_len if the "
          "sequence length differs).")
  target = {"params": abstract_params}
  try:
    meta = _meta(step_dir)
    restored = checkpointer.restore(state_dir, args=ocp.args.PyTreeRestore(
        item=target, restore_args=ocp.checkpoint_utils.construct_restore_args(target),
        partial_restore=True))
  except Exception as e:
    raise ckpt_lib._Corrupt(ckpt_lib._describe(e)) from e
  _check_subset(restored["params"], list(saved_flat), meta)
  return restored["params"]


def _check_subset(params, saved_names: list[str], meta: dict) -> None:
  """`params` (a subset of the saved params) against the saved fingerprints, by name."""
  want = (meta.get("fingerprint") or {}).get("params")
  if want is None:  # Older checkpoints: the whole state's only (see checkpoint.check_params).
    if len(jax.tree.leaves(params)) == len(saved_names):
      ckpt_lib.check_params(params, meta)
    return
  by_name = dict(zip(saved_names, want, strict=False))
  leaves = jax.tree_util.tree_leaves_with_path(params)
  got = ckpt_lib.fingerprint(params)
  bad = [_path_str(p) for (p, _), g in zip(leaves, got, strict=True)
         if by_name.get(_path_str(p), g) != g]
  if bad:
    raise ckpt_lib._Corrupt(f"array contents differ from those saved: {', '.join(bad[:5])}")


def _model_diff(ref: Pretrained) -> str:
  """Which model.* / seq_len fields the pretraining run had, for error messages."""
  cfg = ref.config
  keys = [k for k in sorted(cfg) if k.startswith("model.") or k == "data.seq_len"]
  fields = ", ".join(f"{k}={cfg[k]!r}" for k in keys if k.split(".")[-1] in (
      "family", "num_layers", "num_heads", "emb_dim", "mlp_dim", "max_len", "seq_len"))
  return f" The pretraining run had {fields}." if fields else ""
