"""Metrics to `<workdir>/metrics.jsonl` (one JSON object per line) and TensorBoard."""

from __future__ import annotations

import json
import sys

from absl import logging

from jaxlm import workdir as wd_lib


class MetricWriter:
  """Appends `{"step": s, name: value, ...}` rows; only process 0 writes (enabled=True).

  `resume_step`: the step the run (re)starts from. Rows past it were written by a run that
  stopped before its next checkpoint; they are dropped (the file rewritten atomically), so
  a resumed run leaves exactly one set of rows per step.
  """

  def __init__(self, workdir, enabled: bool = True, tensorboard: bool = True,
               resume_step: int | None = None):
    self.enabled = enabled
    self.path = wd_lib.metrics_path(workdir)
    self._tb = None
    if enabled and resume_step is not None:
      self._drop_rows_after(int(resume_step))
    if enabled and tensorboard:
      try:
        self._tb = _summary_writer()(str(wd_lib.path(workdir) / "tensorboard"))
      except ImportError:  # TensorBoard files are a convenience, never a failure.
        logging.warning("tensorboardX not installed: no TensorBoard event files.")

  def _drop_rows_after(self, step: int) -> None:
    if not self.path.exists():
      return
    lines = self.path.read_text().splitlines(keepends=True)
    keep = []
    for line in lines:
      try:
        row_step = json.loads(line).get("step", 0)
      except (json.JSONDecodeError, AttributeError):
        continue  # A line cut short by a kill mid-write.
      if row_step <= step:
        keep.append(line if line.endswith("\n") else line + "\n")
    if len(keep) != len(lines):
      logging.info("%s: dropped %d row(s) past the restored step %d.", self.path,
                   len(lines) - len(keep), step)
      wd_lib.write_text(self.path, "".join(keep))

  def write(self, step: int, scalars: dict[str, float]) -> None:
    if not self.enabled:
      return
    row = {"step": int(step), **{k: float(v) for k, v in scalars.items()}}
    try:
      with self.path.open("a") as f:
        f.write(json.dumps(row) + "\n")
    except OSError as e:
      raise wd_lib.CheckpointError(f"Cannot write {self.path}: {e.strerror or e}. Fix: free "
                                   "disk space or make the workdir writable, then rerun.") from e
    if self._tb is not None:
      for k, v in scalars.items():
        self._tb.add_scalar(k, float(v), int(step))
      self._tb.flush()

  def close(self) -> None:
    if self._tb is not None:
      self._tb.close()


def _summary_writer():
  """tensorboardX's `SummaryWriter`, imported without torch.

  tensorboardX tries `import torch` on import, only to accept torch tensors; with torch
  installed (the `[hf]` extra) that costs about 2.5 s of every run's start. jaxlm writes plain
  floats, so unless torch is already loaded, its import is refused for this one import
  (a `None` entry in `sys.modules` makes `import torch` raise ImportError, which tensorboardX
  handles).
  """
  if "torch" in sys.modules:
    from tensorboardX import SummaryWriter
    return SummaryWriter
  sys.modules["torch"] = None  # type: ignore[assignment]
  try:
    from tensorboardX import SummaryWriter
  finally:
    del sys.modules["torch"]
  return SummaryWriter
