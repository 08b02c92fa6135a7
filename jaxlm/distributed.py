"""Multi-process runs: joining `jax.distributed`, once-only preparation, gathering host state.

The same code runs on one process or many: every process runs the trainer;
process 0 alone writes logs, metrics, the tokenizer and prepares datasets, and
the others wait for it at a barrier. Host-side state that differs per process
(the data iterators' positions) is gathered so that one JSON checkpoint item
holds all of it.
"""

from __future__ import annotations

import json
import os
import socket
import time

import jax
import numpy as np
from absl import logging

# The JAX docs' variable for the coordinator, plus the two we read for the rest.
ENV_ADDRESS, ENV_NUM, ENV_ID = "JAX_COORDINATOR_ADDRESS", "JAX_NUM_PROCESSES", "JAX_PROCESS_ID"


class DistributedError(RuntimeError):
  """The processes could not form a job; the message says which and what to do."""


def settings(address: str | None, num_processes: int | None,
             process_id: int | None) -> tuple[str, int, int] | None:
  """Flags, else the environment: (address, num_processes, process_id), or None (one process)."""
  address = address or os.environ.get(ENV_ADDRESS) or None
  if num_processes is None and os.environ.get(ENV_NUM):
    num_processes = int(os.environ[ENV_NUM])
  if process_id is None and os.environ.get(ENV_ID):
    process_id = int(os.environ[ENV_ID])
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
