"""Fault injection for tests of the guarantees: `JAXLM_FAULTS="kind@step,..."`.

Kinds:
  sigkill_after_checkpoint@N  SIGKILL this process once checkpoint N is fully written.
  sigkill_at_step@N           SIGKILL right after dispatching step N (an async save may be
                              in flight).
  nan_params@N                Make the parameters NaN after step N (the next loss is NaN).

Unset in normal runs; reading it costs one dict lookup per step.
"""

from __future__ import annotations

import os
import signal

ENV = "JAXLM_FAULTS"


def planned() -> dict[str, set[int]]:
  out: dict[str, set[int]] = {}
  for item in filter(None, (s.strip() for s in os.environ.get(ENV, "").split(","))):
    kind, _, step = item.partition("@")
    out.setdefault(kind, set()).add(int(step))
  return out


def sigkill() -> None:
  os.kill(os.getpid(), signal.SIGKILL)
