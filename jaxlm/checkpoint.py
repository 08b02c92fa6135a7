"""Orbax checkpoints of model state + data-iterator state + run metadata.

One `CheckpointManager` (the `args.Composite` API, async, keeps the last N)
under `<workdir>/checkpoints`. Metadata (tokenizer identity, model shape) is
JSON; nothing is unpickled. Restoring checks the metadata against the current
run so that an incompatible resume is refused with a message, not a crash.

What can go wrong on disk, and what happens:
  * Killed mid-write: orbax writes into `<step>.orbax-checkpoint-tmp` and renames
    it when complete, so a half-written step is never listed; it is deleted when
    the next training run starts (only by the process that owns the workdir's
    training, `<workdir>/train.lock`; readers, `read_only=True`, never delete,
    move or create anything, so a trainer's in-flight save is never destroyed).
  * A corrupt step (truncated or garbled file): orbax may read garbled array bytes
    without complaint, so every save records a fingerprint of each array (an
    order-independent integer hash, equal on any mesh) and a hash of the data
    state; a restore that raises or does not match is reported by name, moved to
    `<workdir>/corrupt_checkpoints/` and the previous step is used instead. Readers
    (`restore_params`) check the parameters' fingerprints the same way and fall back
    to the previous intact step (or, for an explicit step, fail naming it).
  * A failed write (disk full, unwritable): a `CheckpointError` naming the step
    and the intact previous one.
"""

from __future__ import annotations

import functools
import hashlib
import json
import time

import jax
import jax.numpy as jnp
import orbax.checkpoint as ocp
from absl import logging

from jaxlm import distributed
from jaxlm import workdir as wd_lib
from jaxlm.workdir import TMP_SUFFIX, CheckpointError, flat_config  # noqa: F401  (re-exported)

# Config fields that must match for a resume to be valid (others may change freely).
RESUME_FIELDS = ("model", "data.seq_len", "data.tokenizer", "data.packing")


class _Corrupt(Exception):
  pass


class Checkpointer:
  """`<workdir>/checkpoints`. A writer (the trainer) owns the workdir: it takes
  `train.lock` and deletes half-written steps of a killed run; `read_only=True` (every
  reader) changes nothing on disk."""

  def __init__(self, workdir, keep: int = 3, async_save: bool = True, read_only: bool = False):
    self.workdir = wd_lib.path(workdir)
    self.directory = self.workdir / wd_lib.CHECKPOINTS
    self.read_only = read_only
    if read_only:
      if not self.directory.is_dir():
        raise CheckpointError(f"No checkpoint in {self.directory}. Fix: train first (same "
                              "--workdir), or check the path.")
      self.manager = self._open_read_only()
      self._in_flight = None
      return
    if keep < 2:
      logging.warning("keep_checkpoints=%d: a corrupt latest checkpoint will have no earlier "
                      "one to fall back to. Keep 2 or more.", keep)
    if jax.process_index() == 0:
      wd_lib.ensure_writable(self.workdir)  # A read-only/full workdir: one line naming it.
      wd_lib.acquire(self.workdir)
    options = ocp.CheckpointManagerOptions(max_to_keep=keep, create=True,
                                           enable_async_checkpointing=async_save,
                                           cleanup_tmp_directories=False)  # See _cleanup.
    self.manager = ocp.CheckpointManager(self.directory, options=options)
    self._in_flight: int | None = None
    self._cleaned = False

  def _open_read_only(self, attempts: int = 5) -> ocp.CheckpointManager:
    """A reader's manager. A live trainer's retention (`keep_checkpoints`) may delete a step
    while orbax lists the steps and reads their metadata (FileNotFoundError): list again."""
    options = ocp.CheckpointManagerOptions(read_only=True, create=False,
                                           cleanup_tmp_directories=False,
                                           enable_async_checkpointing=False)
    for attempt in range(attempts):
      try:
        return ocp.CheckpointManager(self.directory, options=options)
      except FileNotFoundError as e:
        logging.info("A step of %s vanished while it was listed (%s); listing again.",
                     self.directory, e)
        time.sleep(0.05 * (attempt + 1))
    raise CheckpointError(
        f"Could not list the checkpoints in {self.directory}: steps kept vanishing while "
        f"they were read ({attempts} tries). Fix: rerun once the trainer of this workdir has "
        "stopped, or pass --step of a step it keeps.")

  def _cleanup(self) -> None:
    """Deletes the half-written steps of a killed run, once the run is accepted (restore or
    first save), synchronously and only here: the lock holder owns the workdir."""
    if self._cleaned:
      return
    self._cleaned = True
    half = wd_lib.half_written(self.directory)
    if half and jax.process_index() == 0:
      logging.warning("Deleting %d half-written checkpoint(s) of a killed run: %s", len(half),
                      ", ".join(h.name for h in half))
      for h in half:
        try:
          h.rmtree(missing_ok=True)
        except OSError as e:  # Still being written by a failed writer of this process.
          logging.warning("Could not delete %s yet (%s); orbax never lists it.", h, e)
    if half:
      distributed.barrier("tmp_cleanup")

  def latest_step(self) -> int | None:
    return self.manager.latest_step()

  def all_steps(self) -> list[int]:
    return sorted(self.manager.all_steps())

  def save(self, step: int, state, data_state: dict, meta: dict, force: bool = True) -> None:
    """Starts an async save; raises `CheckpointError` if this or the previous write failed."""
    if self.read_only:
      raise CheckpointError(f"A reader never writes checkpoints ({self.directory}).")
    self._cleanup()
    self.wait()  # Orbax waits for the previous save anyway; this names its failure.
    states = distributed.allgather_json(data_state)
    data = _merge_data(states)
    fp = fingerprint(state)
    meta = {**meta, "fingerprint": {"state": fp, "params": _params_part(state, fp),
                                    "data": _json_hash(data)}}
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
    try:
      return self.manager.restore(step, args=ocp.args.Composite(
          meta=ocp.args.JsonRestore()))["meta"]
    except Exception as e:
      raise CheckpointError(f"Checkpoint {self.directory / str(step)}: step {step} is corrupt "
                            f"({_describe(e)}). Fix: pass an intact step, or move it away.") from e

  def restore_params(self, step: int | None, abstract_params) -> tuple[object, int]:
    """(params, step): the parameters only (a partial restore) of `step`, verified against
    their recorded fingerprints. `step=None`: the newest intact step, falling back past
    corrupt ones (named in the log) and past steps that a live trainer's retention deleted
    meanwhile (the steps are then listed again); an explicit step that is corrupt is an error
    naming it. Nothing on disk is changed."""
    bad: list[tuple[int, str]] = []
    for _ in range(3):
      steps = self.all_steps()
      if not steps:
        raise CheckpointError(f"No checkpoint in {self.directory}. Fix: train first, or pass "
                              "the workdir of a run that saved one.")
      candidates = list(reversed(steps)) if step is None else [
          wd_lib.choose_step(steps, step, self.directory)]
      vanished = False
      for s in candidates:
        try:
          params = self._restore_params(s, abstract_params)
        except Exception as e:
          if step is None and not (self.directory / str(s)).exists():
            vanished = True  # Deleted by the trainer's retention after it was listed.
            logging.info("Step %d of %s was deleted while loading (the trainer keeps the "
                         "newest steps); trying the previous one.", s, self.directory)
            continue
          bad.append((s, _describe(e)))
          logging.error("Checkpoint %s is corrupt (%s)%s", self.directory / str(s), bad[-1][1],
                        "; trying the previous one." if step is None else ".")
          continue
        if bad:
          logging.warning("Loaded step %d instead of corrupt step(s) %s.", s,
                          ", ".join(str(b) for b, _ in bad))
        return params, s
      if not vanished:
        break
      if self.read_only:
        self.manager.close()
        self.manager = self._open_read_only()
      else:
        self.manager.reload()
      bad.clear()
    why = ("; ".join(f"step {s} is corrupt ({why})" for s, why in bad) if bad else
           "its steps were deleted while they were read (a live trainer keeps the newest)")
    raise CheckpointError(
        f"No intact checkpoint in {self.directory}: {why}. Fix: pass an intact step (--step), "
        "or retrain; the trainer moves corrupt steps aside when it resumes.")

  def _restore_params(self, step: int, abstract_params):
    meta = self.restore_meta(step)
    target = {"params": abstract_params}
    restored = self.manager.restore(step, args=ocp.args.Composite(state=ocp.args.PyTreeRestore(
        item=target, restore_args=ocp.checkpoint_utils.construct_restore_args(target),
        partial_restore=True)))
    params = restored["state"]["params"]
    check_params(params, meta)
    return params

  def restore_latest(self, abstract_state, check=None) -> tuple[int, object, dict] | None:
    """(step, state, data_state) of the newest good checkpoint, or None if there is none.

    `check(meta)` may refuse a checkpoint (raising `CheckpointError`: stops the run).
    A step that cannot be read or fails its fingerprint is reported by name and the
    previous one is tried; once one restores, the bad ones are moved aside so that the
    run can save those steps again. If none restores, nothing is moved.
    """
    bad: list[tuple[int, str]] = []
    for step in reversed(self.all_steps()):
      path = self.directory / str(step)
      try:
        meta = self.restore_meta(step)
      except Exception as e:
        bad.append((step, _describe(e)))
        logging.error("Checkpoint %s is corrupt (%s); trying the previous one.", path, bad[-1][1])
        continue
      if check is not None:
        try:
          check(meta)
        except CheckpointError:
          self.close()  # Refused: the workdir is left exactly as it was (lock released).
          raise
      self._cleanup()
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
    if not bad:
      self._cleanup()
    if bad:
      raise CheckpointError(
          f"No checkpoint in {self.directory} could be restored: " +
          "; ".join(f"step {s}: {why}" for s, why in bad) + ". Fix: if the code changed, "
          "or the optimizer config changed, use the version that wrote them; otherwise move "
          "the directory away to start over.")
    return None

  def _quarantine(self, steps: list[int]) -> None:
    if self.read_only:
      raise CheckpointError(f"A reader never moves checkpoints ({self.directory}).")
    dest = self.workdir / wd_lib.CORRUPT
    if jax.process_index() == 0:
      dest.mkdir(parents=True, exist_ok=True)
      for s in steps:
        target = dest / str(s)
        if target.exists():
          target.rmtree()
        (self.directory / str(s)).rename(target)
        logging.warning("Moved corrupt checkpoint step %d to %s", s, target)
    distributed.barrier("quarantine")
    self.manager.reload()

  def close(self) -> None:
    try:
      self.wait()
    finally:
      self.manager.close()
      if not self.read_only and jax.process_index() == 0:
        wd_lib.release(self.workdir)


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
  hashes = _hash_fn(out)(leaves)
  return [int(h) for h in jax.device_get(hashes)]


@functools.cache
def _hash_fn(out_sharding):
  """One jitted hasher per output sharding, so each save reuses its compiled program (a new
  `jax.jit` per call retraced and recompiled it: seconds per checkpoint on a CPU)."""
  return jax.jit(lambda ls: [_leaf_hash(x) for x in ls], out_shardings=out_sharding)


def _first_key(path) -> str:
  k = path[0] if path else None
  return str(getattr(k, "name", getattr(k, "key", "")))


def _params_part(state, fp: list[int]) -> list[int]:
  """The entries of `fp` (a fingerprint of `state`) that belong to `state`'s params (a
  TrainState's `.params` or a dict state's `['params']`), in their own flatten order."""
  paths = [p for p, _ in jax.tree_util.tree_flatten_with_path(state)[0]]
  return [h for p, h in zip(paths, fp, strict=True) if _first_key(p) == "params"]


def check_params(params, meta: dict) -> None:
  """Raises `_Corrupt` if `params` differ from the fingerprint saved in `meta`.

  Checkpoints written before the params entry existed hold only the whole state's: there
  the params' entries follow the step's (TrainState) or precede it (a dict state)."""
  want = meta.get("fingerprint")
  if want is None:
    return
  got = fingerprint(params)
  if want.get("params") is not None:
    layouts = [want["params"]]
  else:
    layouts = [want["state"][1:1 + len(got)], want["state"][:len(got)]]
  if got in layouts:
    return
  expected = layouts[0]
  if len(expected) != len(got):
    raise _Corrupt(f"{len(got)} parameter arrays but {len(expected)} fingerprints saved")
  leaves = jax.tree_util.tree_flatten_with_path(params)[0]
  bad = [jax.tree_util.keystr(p) for (p, _), g, w in zip(leaves, got, expected, strict=True)
         if g != w]
  raise _Corrupt(f"array contents differ from those saved: {', '.join(bad[:5])}")


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
