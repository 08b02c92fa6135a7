"""Orbax checkpoints of model state + data-iterator state + run metadata.

One `CheckpointManager` (the `args.Composite` API, async, keeps the last N)
under `<workdir>/checkpoints`. Metadata (tokenizer identity, model shape) is
JSON; nothing is unpickled. Restoring checks the metadata against the current
run so that an incompatible resume is refused with a message, not a crash.
"""

from __future__ import annotations

import os

import orbax.checkpoint as ocp

# Config fields that must match for a resume to be valid (others may change freely).
RESUME_FIELDS = ("model", "data.seq_len", "data.tokenizer", "data.packing")


class CheckpointError(RuntimeError):
  """A checkpoint that cannot be used; the message says why and what to do."""


class Checkpointer:
  def __init__(self, workdir: str, keep: int = 3, async_save: bool = True):
    self.directory = os.path.join(os.path.abspath(workdir), "checkpoints")
    options = ocp.CheckpointManagerOptions(max_to_keep=keep, create=True,
                                           enable_async_checkpointing=async_save)
    self.manager = ocp.CheckpointManager(self.directory, options=options)

  def latest_step(self) -> int | None:
    return self.manager.latest_step()

  def all_steps(self) -> list[int]:
    return sorted(self.manager.all_steps())

  def save(self, step: int, state, data_state: dict, meta: dict, force: bool = True) -> None:
    self.manager.save(step, args=ocp.args.Composite(
        state=ocp.args.StandardSave(state),
        data=ocp.args.JsonSave(data_state),
        meta=ocp.args.JsonSave(meta),
    ), force=force)

  def restore(self, step: int, abstract_state) -> tuple[object, dict, dict]:
    """(state, data_state, meta) of `step`; `abstract_state` carries target shardings."""
    restored = self.manager.restore(step, args=ocp.args.Composite(
        state=ocp.args.StandardRestore(abstract_state),
        data=ocp.args.JsonRestore(),
        meta=ocp.args.JsonRestore(),
    ))
    return restored["state"], restored["data"], restored["meta"]

  def restore_meta(self, step: int) -> dict:
    return self.manager.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))["meta"]

  def wait(self) -> None:
    self.manager.wait_until_finished()

  def close(self) -> None:
    self.manager.wait_until_finished()
    self.manager.close()


def flat_config(cfg, prefix: str = "") -> dict:
  """A ConfigDict as {'a.b': value} with JSON-friendly values."""
  out = {}
  for k, v in cfg.items():
    key = f"{prefix}{k}"
    if hasattr(v, "items"):
      out.update(flat_config(v, key + "."))
    else:
      out[key] = list(v) if isinstance(v, tuple) else v
  return out


def check_compatible(saved_meta: dict, config, tokenizer_identity: dict) -> None:
  """Refuses a resume whose model shape, seq_len or tokenizer differ from the checkpoint."""
  saved_cfg = saved_meta.get("config", {})
  now = flat_config(config)
  changed = [
      f"{k}: {saved_cfg.get(k)!r} -> {now.get(k)!r}" for k in sorted(now)
      if any(k == f or k.startswith(f + ".") for f in RESUME_FIELDS)
      and k in saved_cfg and saved_cfg[k] != now[k]
  ]
  if changed:
    raise CheckpointError(
        "The workdir holds a checkpoint of a different model/data setup; resuming would be "
        "wrong. Changed: " + "; ".join(changed) +
        ". Fix: restore those values, or use a fresh --workdir.")
  saved_tok = saved_meta.get("tokenizer")
  if saved_tok and saved_tok != tokenizer_identity:
    raise CheckpointError(f"Tokenizer mismatch: checkpoint has {saved_tok}, this run has "
                          f"{tokenizer_identity}. Fix: use the checkpoint's tokenizer or a "
                          "fresh --workdir.")
