"""The one module that knows a workdir's layout.

  <workdir>/config.json          the run's config, flattened to dotted keys (written once the
                                 run is accepted; each checkpoint's meta also holds its own)
  <workdir>/tokenizer.json       (+ vocab.txt / spm.model) the tokenizer, see data/tokenizers.py
  <workdir>/metrics.jsonl        one JSON object per line (metric_writer.py)
  <workdir>/checkpoints/<step>/  orbax checkpoints (checkpoint.py)
  <workdir>/best/checkpoints/    the best-on-validation checkpoint of a fine-tuning run
  <workdir>/corrupt_checkpoints/ steps the trainer moved aside because they failed to restore
  <workdir>/train.lock           the training process that owns the workdir (pid, host)

Every path is an `etils.epath.Path`, so a `gs://` workdir is not assumed to be local. Every
file is written atomically (temp file + rename); a failed write (disk full, read-only) is
one `CheckpointError` naming the path. Readers (eval, generate, serve, export, init_from)
only read: they never delete, move or create anything here.
"""

from __future__ import annotations

import json
import os
import socket
import uuid

import ml_collections
from etils import epath

from jaxlm import config as config_lib

CONFIG_FILE = "config.json"
METRICS_FILE = "metrics.jsonl"
CHECKPOINTS = "checkpoints"
BEST = "best"
CORRUPT = "corrupt_checkpoints"
LOCK_FILE = "train.lock"
TMP_SUFFIX = ".orbax-checkpoint-tmp"
# Characters the storage layer (a glob in orbax's OCDBT merge) reads as a pattern.
GLOB_CHARS = "[]"


class CheckpointError(RuntimeError):
  """A workdir or checkpoint that cannot be used; the message says why and what to do."""


def path(workdir: str | os.PathLike) -> epath.Path:
  """`workdir` as an epath (local paths made absolute); refuses glob characters."""
  text = os.fspath(workdir)
  if "://" not in text:
    text = os.path.abspath(os.path.expanduser(text))
  bad = sorted({c for c in text if c in GLOB_CHARS})
  if bad:
    raise CheckpointError(
        f"Workdir {text!r} contains {' and '.join(repr(c) for c in bad)}: the checkpoint "
        "storage layer (orbax/tensorstore) treats them as a glob pattern, so checkpoints "
        "written there could never be restored. Fix: use a --workdir without '[' or ']'.")
  return epath.Path(text)


def config_path(workdir) -> epath.Path:
  return path(workdir) / CONFIG_FILE


def metrics_path(workdir) -> epath.Path:
  return path(workdir) / METRICS_FILE


def checkpoint_dir(workdir, best: bool = False) -> epath.Path:
  wd = path(workdir)
  return (wd / BEST if best else wd) / CHECKPOINTS


def step_dir(workdir, step: int, best: bool = False) -> epath.Path:
  return checkpoint_dir(workdir, best) / str(int(step))


# ----------------------------------------------------------------------------- atomic files


def _write_error(target: epath.Path, e: OSError) -> CheckpointError:
  why = e.strerror or type(e).__name__
  return CheckpointError(f"Cannot write {target}: {why}. Fix: free disk space or make the "
                         "workdir writable, then rerun.")


def write_bytes(target: epath.Path | str, data: bytes) -> None:
  """Writes `data` to a temp file beside `target`, then renames it over `target`."""
  target = epath.Path(target)
  tmp = target.parent / f".{target.name}.tmp-{uuid.uuid4().hex[:8]}"
  try:
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp.write_bytes(data)
    tmp.replace(target)
  except OSError as e:
    try:
      if tmp.exists():
        tmp.unlink()
    except OSError:
      pass
    raise _write_error(target, e) from e


def write_text(target: epath.Path | str, text: str) -> None:
  """`text` (UTF-8) to `target` atomically (`write_bytes`)."""
  write_bytes(target, text.encode("utf-8"))


def write_json(target: epath.Path | str, obj, indent: int | None = 1) -> None:
  write_text(target, json.dumps(obj, indent=indent))


def read_json(source: epath.Path | str):
  source = epath.Path(source)
  try:
    return json.loads(source.read_text())
  except json.JSONDecodeError as e:
    raise CheckpointError(f"{source} is not valid JSON ({e}). Fix: restore the file (or "
                          "remove it and rerun the training command).") from e


def ensure_writable(workdir) -> epath.Path:
  """Creates `workdir` and proves it takes a write, before any work is done."""
  wd = path(workdir)
  try:
    wd.mkdir(parents=True, exist_ok=True)
  except OSError as e:
    raise _write_error(wd, e) from e
  probe = wd / f".write_test-{os.getpid()}"
  write_text(probe, "")
  probe.unlink()
  return wd


# ----------------------------------------------------------------------------- config


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


def write_config(workdir, config) -> None:
  """`config.json`, atomically (call it once the run is accepted: it describes the checkpoints)."""
  write_json(config_path(workdir), flat_config(config))


def read_config(workdir) -> ml_collections.ConfigDict:
  p = config_path(workdir)
  if not p.exists():
    raise CheckpointError(f"No {CONFIG_FILE} in {p.parent}: not a jaxlm workdir. Fix: "
                          "pass the --workdir a training run (python -m jaxlm.main) wrote.")
  return config_from_flat(read_json(p))


# ----------------------------------------------------------------------------- steps


def list_steps(ckpt_dir: epath.Path | str) -> list[int]:
  """The complete checkpoint steps in `ckpt_dir` (a half-written `N.orbax-checkpoint-tmp`
  is not one); reads the listing only."""
  d = epath.Path(ckpt_dir)
  if not d.is_dir():
    return []
  return sorted(int(p.name) for p in d.iterdir() if p.name.isdigit() and p.is_dir())


def choose_step(steps: list[int], step: str | int | None, where) -> int:
  """The step `--step` names among `steps`: None / '' / 'latest' / 'best' / -1 = the newest."""
  if not steps:
    raise CheckpointError(f"No checkpoint in {where}. Fix: train first (same --workdir), or "
                          "pass the workdir of a run that saved one.")
  if step is None or str(step) in ("", "latest", "best", "-1"):
    return steps[-1]
  try:
    chosen = int(step)
  except (TypeError, ValueError) as e:
    raise CheckpointError(f"--step={step!r}: give a step number, 'best' or nothing (the "
                          "latest).") from e
  if chosen not in steps:
    raise CheckpointError(f"No checkpoint for step {chosen} in {where}; it has steps "
                          f"{steps}. Fix: pick one of those (or omit the step for the latest).")
  return chosen


def resolve_step(workdir, step: str | int | None = None) -> tuple[epath.Path, int]:
  """(checkpoints dir, step) for `--step` = None/'latest', 'best' or N in `workdir`."""
  best = str(step) == "best"
  d = checkpoint_dir(workdir, best)
  return d, choose_step(list_steps(d), step, d)


# ----------------------------------------------------------------------------- ownership


def owner() -> dict:
  return {"pid": os.getpid(), "host": socket.gethostname()}


def _alive(pid: int) -> bool:
  try:
    os.kill(pid, 0)
  except ProcessLookupError:
    return False
  except PermissionError:
    return True
  return True


def acquire(workdir) -> epath.Path:
  """Marks this process as the one training `workdir` (only it cleans up half-written
  checkpoints). A live trainer of the same workdir on this host is an error."""
  lock = path(workdir) / LOCK_FILE
  me = owner()
  if lock.exists():
    try:
      other = json.loads(lock.read_text())
    except (OSError, json.JSONDecodeError):
      other = {}
    if (other.get("host") == me["host"] and other.get("pid") not in (None, me["pid"])
        and _alive(int(other["pid"]))):
      raise CheckpointError(
          f"{lock.parent} is being trained by process {other['pid']} on this host "
          f"({lock}). Two trainers in one workdir would overwrite each other's checkpoints. "
          "Fix: wait for it to finish (or stop it), or use another --workdir; if no trainer is "
          f"running there, delete {lock}.")
  write_json(lock, me, indent=None)
  return lock


def release(workdir) -> None:
  lock = path(workdir) / LOCK_FILE
  try:
    if lock.exists() and json.loads(lock.read_text()).get("pid") == os.getpid():
      lock.unlink()
  except (OSError, json.JSONDecodeError):
    pass


def half_written(ckpt_dir: epath.Path | str) -> list[epath.Path]:
  d = epath.Path(ckpt_dir)
  if not d.is_dir():
    return []
  return sorted(p for p in d.iterdir() if TMP_SUFFIX in p.name)


def copy_file(src: epath.Path | str, dst: epath.Path | str) -> None:
  """Copies `src` to `dst` atomically (temp file + rename)."""
  dst = epath.Path(dst)
  tmp = dst.parent / f".{dst.name}.tmp-{uuid.uuid4().hex[:8]}"
  try:
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp.write_bytes(epath.Path(src).read_bytes())
    tmp.replace(dst)
  except OSError as e:
    raise _write_error(dst, e) from e
