"""The errors a user can fix: the CLI prints their message (field, problem, fix) and exits 1."""

from __future__ import annotations

from jaxlm.checkpoint import CheckpointError
from jaxlm.config import ConfigError
from jaxlm.data.sources import DataError
from jaxlm.distributed import DistributedError


class TrainingError(RuntimeError):
  """The run cannot continue (e.g. a non-finite loss); the message says where and why."""


USER_ERRORS = (ConfigError, DataError, CheckpointError, TrainingError, DistributedError)
