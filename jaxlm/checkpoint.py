"""Orbax checkpoints of model state + data-iterator state + run metadata.

One `CheckpointManager` (the `args.Composite` API, async, keeps the last N)
under `<workdir>/checkpoints`. Metadata (tokenizer identity, model shape) is
JSON; nothing is unpickled. Restoring checks the metadata against the current
run so that an incompatible resume is refused with a message, not a crash.

What can go wrong on disk, and what happens:
  * Killed mid-write: orbax writes into `<step>.orbax-checkpoint-tmp` and renames
    it when complete, so a half-written step is never listed; it is deleted when
    the next run starts.
  * A corrupt step (truncated or garbled file): orbax may read garbled array bytes
    without complaint, so every save records a fingerprint of each array (an
    order-independent integer hash, equal on any mesh) and a hash of the data
    state; a restore that raises or does not match is reported by name, moved to
    `<workdir>/corrupt_checkpoints/` and the previous step is used instead.
  * A failed write (disk full, unwritable): a `CheckpointError` naming the step
    and the intact previous one.
"""

from __future__ import annotations

import glob
import hashlib
import json
import os
import shutil

import jax
import jax.numpy as jnp
import orbax.checkpoint as ocp
from absl import logging

from jaxlm import distributed

# Config fields that must match for a resume to be valid (others may change freely).
RESUME_FIELDS = ("model", "data.seq_len", "data.tokenizer", "data.packing")
TMP_SUFFIX = ".orbax-checkpoint-tmp"


class CheckpointError(RuntimeError):
  """A checkpoint that cannot be used; the message says why and what to do."""


class _Corrupt(Exception):
  pass


class Checkpointer:
  def __init__(self, workdir: str, keep: int = 3, async_save: bool = True):
    self.workdir = os.path.abspath(workdir)
    self.directory = os.path.join(self.workdir, "checkpoints")
    if keep < 2:
      logging.warning("keep_checkpoints=%d: a corrupt latest checkpoint will have no earlier "
                      "one to fall back to. Keep 2 or more.", keep)
    half = sorted(glob.glob(os.path.join(glob.escape(self.directory), "*" + TMP_SUFFIX + "*")))
    if half and jax.process_index() == 0:  # Synchronously (orbax's own cleanup is async).
      logging.warning("Deleting %d half-written checkpoint(s) of a killed run: %s", len(half),
                      ", ".join(os.path.basename(h) for h in half))
      for h in half:
        shutil.rmtree(h, ignore_errors=True)
    if half:
      distributed.barrier("tmp_cleanup")
    options = ocp.CheckpointManagerOptions(max_to_keep=keep, create=True,
                                           enable_async_checkpointing=async_save,
                                           cleanup_tmp_directories=True)
    self.manager = ocp.CheckpointManager(self.directory, options=options)
    self._in_flight: int | None = None

  def latest_step(self) -> int | None:
    return self.manager.latest_step()

  def all_steps(self) -> list[int]:
    return sorted(self.manager.all_steps())

  def save(self, step: int, state, data_state: dict, meta: dict, force: bool = True) -> None:
    """Starts an async save; raises `CheckpointError` if this or the previous write failed."""
    self.wait()  # Orbax waits for the previous save anyway; this names its failure.
    states = distributed.allgather_json(data_state)
    data = _merge_data(states)
    meta = {**meta, "fingerprint": {"state": fingerprint(state), "data": _json_hash(data)}}
    try:
      self.manager.save(step, args=ocp.args.Composite(
          state=ocp.args.StandardSave(state),
          data=ocp.args.JsonSave(data),
          meta=ocp.args.JsonSave(meta),
      ), force=force)
    except Exception as e:
      raise self._write_error(step, e) from e
    self._in_flight = step

  def wait(self) -> None:
    """Blocks until the last save is on disk; a failed write raises `CheckpointError`."""
    try:
      self.manager.wait_until_finished()
    except Exception as e:
      step, self._in_flight = self._in_flight, None
      raise self._write_error(step, e) from e
    self._in_flight = None

  def _write_error(self, step, e: Exception) -> CheckpointError:
    self.manager.reload()
    prev = [s for s in self.all_steps() if s != step]
    kept = (f"The previous checkpoint (step {prev[-1]}) is intact; a rerun resumes from it."
            if prev else "There is no earlier checkpoint.")
    return CheckpointError(
        f"Writing checkpoint step {step} to {self.directory} failed: {type(e).__name__}: "
        f"{str(e)[:300]}. {kept} Fix: free disk space or make the workdir writable.")

  def restore(self, step: int, abstract_state) -> tuple[object, dict, dict]:
    """(state, data_state, meta) of `step`, verified against its recorded fingerprints."""
    restored = self.manager.restore(step, args=ocp.args.Composite(
        state=ocp.args.StandardRestore(abstract_state),
        data=ocp.args.JsonRestore(),
        meta=ocp.args.JsonRestore(),
    ))
    state, data, meta = restored["state"], restored["data"], restored["meta"]
    want = meta.get("fingerprint")
    if want is not None:
      got = fingerprint(state)
      bad = [jax.tree_util.keystr(p) for (p, _), g, w in zip(
          jax.tree_util.tree_flatten_with_path(state)[0], got, want["state"], strict=True)
          if g != w]
      if bad:
        raise _Corrupt(f"array contents differ from those saved: {', '.join(bad[:5])}")
      if _json_hash(data) != want["data"]:
        raise _Corrupt("data-iterator state differs from the one saved")
    return state, data, meta

  def restore_meta(self, step: int) -> dict:
    return self.manager.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))["meta"]

  def restore_latest(self, abstract_state, check=None) -> tuple[int, object, dict] | None:
    """(step, state, data_state) of the newest good checkpoint, or None if there is none.

    `check(meta)` may refuse a checkpoint (raising `CheckpointError`: stops the run).
    A step that cannot be read or fails its fingerprint is reported by name and the
    previous one is tried; once one restores, the bad ones are moved aside so that the
    run can save those steps again. If none restores, nothing is moved.
    """
    bad: list[tuple[int, str]] = []
    for step in reversed(self.all_steps()):
      path = os.path.join(self.directory, str(step))
      try:
        meta = self.restore_meta(step)
      except Exception as e:
        bad.append((step, _describe(e)))
        logging.error("Checkpoint %s is corrupt (%s); trying the previous one.", path, bad[-1][1])
        continue
      if check is not None:
        check(meta)
      try:
        state, data, _ = self.restore(step, abstract_state)
      except Exception as e:
        bad.append((step, _describe(e)))
        logging.error("Checkpoint %s is corrupt (%s); trying the previous one.", path, bad[-1][1])
        continue
      if bad:
        self._quarantine([s for s, _ in bad])
        logging.warning("Restored step %d instead of corrupt step(s) %s.", step,
                        ", ".join(str(s) for s, _ in bad))
      return step, state, data
    if bad:
      raise CheckpointError(
          "No checkpoint in " + self.directory + " could be restored: " +
          "; ".join(f"step {s}: {why}" for s, why in bad) + ". Fix: if the code changed, "
          "or the optimizer config changed, use the version that wrote them; otherwise move "
          "the directory away to start over.")
    return None

  def _quarantine(self, steps: list[int]) -> None:
    dest = os.path.join(self.workdir, "corrupt_checkpoints")
    if jax.process_index() == 0:
      os.makedirs(dest, exist_ok=True)
      for s in steps:
        target = os.path.join(dest, str(s))
        if os.path.exists(target):
          shutil.rmtree(target)
        os.replace(os.path.join(self.directory, str(s)), target)
        logging.warning("Moved corrupt checkpoint step %d to %s", s, target)
    distributed.barrier("quarantine")
    self.manager.reload()

  def close(self) -> None:
    try:
      self.wait()
    finally:
      self.manager.close()


def _describe(e: Exception) -> str:
  return f"{type(e).__name__}: {str(e).splitlines()[0][:200] if str(e) else ''}"


def _merge_data(states: list[dict]) -> dict:
  if len(states) == 1:
    return states[0]
  from jaxlm.data.shards import merge_states
  return merge_states(states)


def _json_hash(obj) -> str:
  return hashlib.sha256(json.dumps(obj, sort_keys=True).encode()).hexdigest()[:16]


def _leaf_hash(x: jax.Array) -> jax.Array:
  """sum_i bits(x_i) * (i * K + 1) mod 2^32 over flat index i: an integer sum, so exact and
  equal on every mesh (no reshape, so no resharding)."""
  if x.dtype == jnp.bool_:
    bits = x.astype(jnp.uint32)
  else:
    bits = jax.lax.bitcast_convert_type(x, jnp.dtype(f"uint{8 * x.dtype.itemsize}"))
    bits = bits.astype(jnp.uint32)
  idx, stride = jnp.zeros(x.shape, jnp.uint32), 1
  for d in reversed(range(x.ndim)):
    idx = idx + jax.lax.broadcasted_iota(jnp.uint32, x.shape, d) * jnp.uint32(stride % 2**32)
    stride *= x.shape[d]
  return jnp.sum(bits * (idx * jnp.uint32(2654435761) + jnp.uint32(1)), dtype=jnp.uint32)


def fingerprint(tree) -> list[int]:
  """One uint32 per array leaf of `tree` (see `_leaf_hash`)."""
  leaves = jax.tree.leaves(tree)
  sharding = next((x.sharding for x in leaves if isinstance(
      getattr(x, "sharding", None), jax.sharding.NamedSharding)), None)
  out = (jax.sharding.NamedSharding(sharding.mesh, jax.sharding.PartitionSpec())
         if sharding is not None else None)
  hashes = jax.jit(lambda ls: [_leaf_hash(x) for x in ls], out_shardings=out)(leaves)
  return [int(h) for h in jax.device_get(hashes)]


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
