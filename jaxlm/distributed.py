"""Multi-process runs: joining `jax.distributed`, once-only preparation, gathering host state.

`join` decides whether this process is part of a job: explicit flags (or the
`JAX_*` variables) win; otherwise a cluster that JAX knows how to read (SLURM
`srun`, Open MPI `mpirun`, Cloud TPU pod slices, GKE/Kubernetes; see
`jax/_src/clusters/`) is detected from the environment and joined with
`jax.distributed.initialize`. A laptop run finds none and stays one process
without waiting for anything. `check_same_run` then compares the config and a
hash of the data files across processes and fails naming any difference.

The same code runs on one process or many: every process runs the trainer;
process 0 alone writes logs, metrics, the tokenizer and prepares datasets, and
the others wait for it at a barrier. Host-side state that differs per process
(the data iterators' positions) is gathered so that one JSON checkpoint item
holds all of it.
"""

from __future__ import annotations

import dataclasses
import glob
import hashlib
import json
import os
import socket
import time

import jax
import numpy as np
from absl import logging

try:  # JAX's cluster detection, the one `jax.distributed.initialize()` uses (no public list).
  from jax._src import clusters as jax_clusters
except ImportError:  # pragma: no cover (a JAX without it: explicit settings only)
  jax_clusters = None

# The JAX docs' variable for the coordinator, plus the two we read for the rest.
ENV_ADDRESS, ENV_NUM, ENV_ID = "JAX_COORDINATOR_ADDRESS", "JAX_NUM_PROCESSES", "JAX_PROCESS_ID"


MODES = ("auto", "on", "off")  # --distributed: detect a cluster / require one / never join.
DATA_FILE_FIELDS = ("path", "eval_path", "target_path", "eval_target_path")  # config.data.*


class DistributedError(RuntimeError):
  """The processes could not form a job; the message says which and what to do."""


@dataclasses.dataclass(frozen=True)
class Plan:
  """How this process joins a job."""

  source: str  # 'flags' (flags or JAX_* variables) or the detected cluster ('slurm', 'ompi', ...)
  address: str
  num_processes: int
  process_id: int


def detect_cluster():
  """The cluster environment JAX finds here (a `ClusterEnv` class), or None; the same order
  and opt-in rules as `jax.distributed.initialize()` without arguments."""
  if jax_clusters is None:
    return None
  for env in jax_clusters.ClusterEnv._cluster_types:
    if not getattr(env, "opt_in_only_method", False) and env.is_env_present():
      return env
  return None


def cluster_name(env) -> str:
  """'slurm', 'ompi', 'gcetpu', 'gketpu', ... (JAX's K8sCluster has no name: its class)."""
  return env.name or env.__name__


def plan(mode: str, address: str | None, num_processes: int | None, process_id: int | None,
         timeout_s: int = 300) -> Plan | None:
  """Whether and how to join a job: None for one process (no coordinator, no waiting).

  Explicit values (flags, else `JAX_*` variables) win; a detected cluster fills the rest.
  `mode='off'` never joins, `'on'` fails unless a job is found, `'auto'` joins one if found.
  """
  if mode not in MODES:
    raise DistributedError(f"--distributed={mode!r}. Fix: use one of {', '.join(MODES)}.")
  given = [n for n, v in (("--coordinator_address", address), ("--num_processes", num_processes),
                          ("--process_id", process_id)) if v is not None]
  if mode == "off":
    if given:
      raise DistributedError(f"--distributed=off but {', '.join(given)} given. Fix: drop them "
                             "(one process) or use --distributed=auto.")
    return None
  env = detect_cluster()
  if env is None:
    multi = settings(address, num_processes, process_id)
    if multi is None and mode == "on":
      known = ", ".join(cluster_name(e) for e in jax_clusters.ClusterEnv._cluster_types) \
          if jax_clusters else "none"
      raise DistributedError(
          "--distributed=on but no cluster was detected (JAX knows: " + known + ") and no "
          "--coordinator_address/--num_processes/--process_id were given. Fix: launch under the "
          "cluster's launcher (srun, mpirun, a TPU pod slice, a JobSet), give the three flags on "
          "every process, or use --distributed=auto.")
    return Plan("flags", *multi) if multi else None
  address, num_processes, process_id = _explicit(address, num_processes, process_id)
  try:
    if num_processes is None:
      num_processes = int(env.get_process_count())
    if process_id is None:
      process_id = int(env.get_process_id())
    if num_processes > 1 and address is None:
      address = env.get_coordinator_address(
          timeout_secs=timeout_s, override_coordinator_port=os.environ.get("JAX_COORDINATOR_PORT"))
  except (KeyError, ValueError, RuntimeError) as e:
    raise DistributedError(
        f"Detected a {cluster_name(env)} cluster but could not read its settings ({e}). Fix: give "
        "--coordinator_address, --num_processes and --process_id, or --distributed=off.") from e
  if num_processes == 1:
    logging.info("Cluster %s detected with 1 process: running as one process.",
                 cluster_name(env))
    return None
  return Plan(cluster_name(env), *settings(address, num_processes, process_id))


def join(mode: str, address: str | None, num_processes: int | None, process_id: int | None,
         timeout_s: int = 300) -> Plan | None:
  """`plan`, then `initialize` when there is a job to join; logs what was found."""
  p = plan(mode, address, num_processes, process_id, timeout_s)
  if p is None:
    return None
  source = "explicit settings" if p.source == "flags" else f"cluster {p.source} detected"
  logging.info("Distributed job (%s): process %d of %d, coordinator %s.", source, p.process_id,
               p.num_processes, p.address)
  initialize(p.address, p.num_processes, p.process_id, timeout_s)
  logging.info("Joined (%s): process %d/%d, %d local devices, %d global devices.", source,
               jax.process_index(), jax.process_count(), jax.local_device_count(),
               jax.device_count())
  return p


def _explicit(address: str | None, num_processes: int | None,
              process_id: int | None) -> tuple[str | None, int | None, int | None]:
  """Each value from its flag, else its `JAX_*` variable, else None."""
  address = address or os.environ.get(ENV_ADDRESS) or None
  if num_processes is None and os.environ.get(ENV_NUM):
    num_processes = int(os.environ[ENV_NUM])
  if process_id is None and os.environ.get(ENV_ID):
    process_id = int(os.environ[ENV_ID])
  return address, num_processes, process_id


def settings(address: str | None, num_processes: int | None,
             process_id: int | None) -> tuple[str, int, int] | None:
  """Flags, else the environment: (address, num_processes, process_id), or None (one process)."""
  address, num_processes, process_id = _explicit(address, num_processes, process_id)
  if address is None and num_processes is None:
    return None
  missing = [n for n, v in (("--coordinator_address", address), ("--num_processes", num_processes),
                            ("--process_id", process_id)) if v is None]
  if missing:
    raise DistributedError(f"Multi-process run needs {', '.join(missing)} (or ${ENV_ADDRESS}, "
                           f"${ENV_NUM}, ${ENV_ID}). Fix: give all three on every process.")
  if not 0 <= process_id < num_processes or ":" not in address:
    raise DistributedError(f"--process_id={process_id} must be in [0, {num_processes}) and "
                           f"--coordinator_address={address!r} must be host:port.")
  return address, num_processes, process_id


def _wait_for_port(address: str, timeout_s: float) -> bool:
  host, port = address.rsplit(":", 1)
  deadline = time.time() + timeout_s
  while time.time() < deadline:
    try:
      with socket.create_connection((host.strip("[]"), int(port)), timeout=1.0):
        return True
    except OSError:
      time.sleep(0.5)
  return False


def initialize(address: str, num_processes: int, process_id: int, timeout_s: int = 300) -> None:
  """`jax.distributed.initialize`, with a clear error instead of a hang or an abort.

  JAX aborts the process (a C++ fatal error saying another task died) when the
  coordinator never answers; a process other than 0 therefore first waits for
  the coordinator's port and fails with a message naming it.
  """
  if process_id != 0:
    t0 = time.time()
    if not _wait_for_port(address, timeout_s):
      raise DistributedError(
          f"Process {process_id} of {num_processes}: no coordinator at {address} after "
          f"{timeout_s} s. Fix: start process 0 (it hosts the coordinator) with the same "
          "--coordinator_address, check the host/port is reachable from here, or raise "
          "--distributed_timeout.")
    timeout_s = max(10, int(timeout_s - (time.time() - t0)))
  else:
    logging.info("Coordinator at %s: waiting up to %d s for %d processes.", address, timeout_s,
                 num_processes)
  jax.distributed.initialize(address, num_processes, process_id,
                             initialization_timeout=int(timeout_s))


def barrier(name: str) -> None:
  if jax.process_count() > 1:
    from jax.experimental import multihost_utils
    multihost_utils.sync_global_devices(name)


def main_first(fn, name: str):
  """Runs `fn` on process 0, then (after a barrier) on the others: for work that writes
  shared files once (dataset preparation, tokenizer training) and is read afterwards."""
  out = fn() if jax.process_index() == 0 else None
  if jax.process_count() > 1:
    barrier(name)
    if jax.process_index() != 0:
      out = fn()
  return out


def allgather_json(obj) -> list:
  """Every process's JSON-serializable `obj`, in process order (one element on one process)."""
  if jax.process_count() == 1:
    return [obj]
  from jax.experimental import multihost_utils
  blob = np.frombuffer(json.dumps(obj, sort_keys=True).encode(), np.uint8)
  sizes = np.asarray(multihost_utils.process_allgather(np.array([blob.size], np.int32)))
  padded = np.zeros(int(sizes.max()), np.uint8)
  padded[:blob.size] = blob
  rows = np.asarray(multihost_utils.process_allgather(padded))
  return [json.loads(rows[i, :int(sizes.reshape(-1)[i])].tobytes()) for i in range(len(rows))]


# ----------------------------------------------------------------------------- same run everywhere


def _flatten(d: dict, prefix: str = "") -> dict:
  out = {}
  for k, v in d.items():
    if isinstance(v, dict):
      out.update(_flatten(v, f"{prefix}{k}."))
    else:
      out[f"{prefix}{k}"] = v
  return out


def _file_sha256(path: str) -> str:
  h = hashlib.sha256()
  try:
    with open(path, "rb") as f:
      for chunk in iter(lambda: f.read(1 << 20), b""):
        h.update(chunk)
  except OSError as e:
    return f"unreadable ({e.strerror})"
  return "sha256:" + h.hexdigest()[:16]


def run_fingerprint(config, run: dict | None = None) -> dict[str, str]:
  """What every process of a job must agree on: the run's flags (`run`), every config field,
  and the contents (sha256) of each local data file named in `config.data`."""
  fp = {f"--{k}": str(v) for k, v in (run or {}).items()}
  flat = _flatten(config.to_dict() if hasattr(config, "to_dict") else dict(config))
  fp.update({f"config.{k}": json.dumps(v, sort_keys=True, default=str) for k, v in flat.items()})
  for field in DATA_FILE_FIELDS:
    for part in [p.strip() for p in str(flat.get(f"data.{field}") or "").split(",") if p.strip()]:
      part = os.path.expanduser(part)
      matches = sorted(glob.glob(part)) if glob.has_magic(part) else [part]
      if not matches:
        fp[f"data.{field} {part}"] = "no file matches"
      for m in matches:
        fp[f"data file {m}"] = _file_sha256(m) if os.path.isfile(m) else "missing"
  return fp


def differences(fingerprints: list[dict]) -> list[str]:
  """'key: process 0 has A, process i has B' for each entry that differs from process 0's."""
  out = []
  ref = fingerprints[0]
  for i, fp in enumerate(fingerprints[1:], 1):
    for k in sorted(set(ref) | set(fp)):
      a, b = ref.get(k, "(absent)"), fp.get(k, "(absent)")
      if a != b:
        out.append(f"{k}: process 0 has {a[:80]}, process {i} has {b[:80]}")
  return out


def check_same_run(config, run: dict | None = None) -> None:
  """Fails on every process, naming the difference, unless all processes have the same flags,
  config and data files (a no-op on one process)."""
  if jax.process_count() == 1:
    return
  diffs = differences(allgather_json(run_fingerprint(config, run)))
  if diffs:
    more = f" (and {len(diffs) - 8} more)" if len(diffs) > 8 else ""
    raise DistributedError(
        "The processes of this job disagree on the run: " + "; ".join(diffs[:8]) + more +
        ". Fix: start every process with the same command and config, and give every host the "
        "same data files (shared storage, or identical copies).")
  logging.info("All %d processes agree on the config and data files.", jax.process_count())
