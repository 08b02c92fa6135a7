"""Fault injection for tests of the guarantees: `JAXLM_FAULTS="kind@step,..."`.

Kinds (N is the step just completed, as in the logs and checkpoint names):
  sigkill_after_checkpoint@N  SIGKILL this process once checkpoint N is fully written.
  sigkill_during_checkpoint@N SIGKILL while checkpoint N's async write is still in flight
                              (a half-written `N.orbax-checkpoint-tmp` directory is left).
  sigkill_at_step@N           SIGKILL right after dispatching step N+1's inputs (mid-step;
                              an async save may be in flight).
  sigterm_at_step@N           Send this process SIGTERM (a preemption notice) after step N.
  nan_params@N                Make the parameters NaN after step N (the next loss is NaN).
  nan_batch@N                 Step N gets a corrupt batch (token ids beyond the vocabulary,
                              which embed as NaN): a transient NaN loss.
  disk_full_at_checkpoint@N   Writing checkpoint N fails with a real OS write error
                              (EFBIG: the file size limit is set to 1 KiB while it is
                              written), as a full disk would.

Unset in normal runs; reading it costs one dict lookup per step.
"""

from __future__ import annotations

import contextlib
import os
import resource
import signal

ENV = "JAXLM_FAULTS"
KINDS = ("sigkill_after_checkpoint", "sigkill_during_checkpoint", "sigkill_at_step",
         "sigterm_at_step", "nan_params", "nan_batch", "disk_full_at_checkpoint")


def planned() -> dict[str, set[int]]:
  out: dict[str, set[int]] = {}
  for item in filter(None, (s.strip() for s in os.environ.get(ENV, "").split(","))):
    kind, _, step = item.partition("@")
    if kind not in KINDS or not step.isdigit():
      raise ValueError(f"{ENV}={os.environ[ENV]!r}: {item!r} is not KIND@STEP with KIND in "
                       f"{KINDS}.")
    out.setdefault(kind, set()).add(int(step))
  return out


def sigkill() -> None:
  os.kill(os.getpid(), signal.SIGKILL)


def sigterm() -> None:
  os.kill(os.getpid(), signal.SIGTERM)


def poison_batch(batch: dict) -> dict:
  """Token ids past any vocabulary: `jnp.take` embeds them as NaN, so the loss is NaN."""
  return {**batch, "tokens": batch["tokens"] * 0 + (1 << 30)}


@contextlib.contextmanager
def disk_full(limit_bytes: int = 1024):
  """Writes past `limit_bytes` per file fail with EFBIG while inside (works as root too)."""
  old = resource.getrlimit(resource.RLIMIT_FSIZE)
  old_handler = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # Else the kernel kills us.
  resource.setrlimit(resource.RLIMIT_FSIZE, (limit_bytes, old[1]))
  try:
    yield
  finally:
    resource.setrlimit(resource.RLIMIT_FSIZE, old)
    signal.signal(signal.SIGXFSZ, old_handler)
