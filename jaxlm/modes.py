"""What `jaxlm.main` runs: picks eval mode, the n-gram fit, fine-tuning or LM training.

Kept apart from `main.py` (flags only) so that nothing imports the entry point and
eval mode, the trainers and the CLI share one list of user errors (`errors.py`).
"""

from __future__ import annotations

import logging as std_logging

from absl import logging

from jaxlm import evaluate, finetune, ngram_run, train
from jaxlm.config import ConfigError

_NOISY = ("/orbax/", "/tensorflow_datasets/", "/grain/", "/etils/")


class QuietLibraries(std_logging.Filter):
  """Keeps library INFO chatter (orbax prints ~30 lines per save) out of the run log."""

  def filter(self, record: std_logging.LogRecord) -> bool:
    return record.levelno >= std_logging.WARNING or not any(
        p in record.pathname for p in _NOISY)


def quiet_libraries() -> None:
  logging.get_absl_handler().addFilter(QuietLibraries())


def run_mode(config, workdir: str, mode: str | None = None, step: str | None = None,
             split: str | None = None) -> None:
  """Runs `mode` (default config.mode): 'eval' prints the result; 'train' trains."""
  mode = mode or config.mode
  if mode == "eval":
    print(evaluate.format_result(evaluate.evaluate_checkpoint(config, workdir, step, split)))
  elif config.model.family == "ngram":  # Count-based: fit and evaluate, no train loop.
    ngram_run.train_and_evaluate(config, workdir)
  elif config.finetune.task != "lm":
    finetune.train_task(config, workdir)
  elif config.init_from:
    raise ConfigError(
        "config.init_from is set but config.finetune.task='lm': LM training does not start "
        "from another run. Fix: set --config.finetune.task=classify or seq2seq, or unset "
        "init_from.")
  else:
    train.train_and_evaluate(config, workdir)
