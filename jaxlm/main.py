"""Command line: `python -m jaxlm.main --config=configs/default.py --workdir=DIR`.

Parses flags, starts `jax.distributed` when asked, logs the devices, and hands
the config and workdir to the trainer. All logic lives in importable modules.
"""

from __future__ import annotations

import logging as std_logging
import sys

import jax
from absl import app, flags, logging
from ml_collections import config_flags

from jaxlm import config as config_lib
from jaxlm import distributed, evaluate, finetune, sharding, train
from jaxlm.checkpoint import CheckpointError
from jaxlm.data.sources import DataError

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file("config", None, "Config file (configs/*.py).", lock_config=True)
flags.DEFINE_string("workdir", None, "Directory for checkpoints, metrics and the tokenizer.")
flags.DEFINE_enum("mode", None, ["train", "eval"],
                  "train, or eval a checkpoint (default: config.mode).")
flags.DEFINE_string("step", "", "eval: checkpoint step; '' = latest, 'best' = best on validation.")
flags.DEFINE_string("split", "", "eval: split to evaluate; '' = config.data.eval_split.")
flags.DEFINE_string("coordinator_address", None,
                    "host:port of process 0 (multi-process; or $JAX_COORDINATOR_ADDRESS).")
flags.DEFINE_integer("num_processes", None, "Number of processes (or $JAX_NUM_PROCESSES).")
flags.DEFINE_integer("process_id", None, "This process's index (or $JAX_PROCESS_ID).")
flags.DEFINE_enum("distributed", "auto", distributed.MODES, "auto: join a detected cluster "
                  "(SLURM, Open MPI, TPU pod, k8s); on: require a job; off: one process.")
flags.DEFINE_integer("distributed_timeout", 300,
                     "Seconds to wait for the coordinator and the other processes.")
flags.mark_flags_as_required(["config", "workdir"])

USER_ERRORS = (config_lib.ConfigError, DataError, CheckpointError, train.TrainingError,
               distributed.DistributedError)


_NOISY = ("/orbax/", "/tensorflow_datasets/", "/grain/", "/etils/")


class _QuietLibraries(std_logging.Filter):
  """Keeps library INFO chatter (orbax prints ~30 lines per save) out of the run log."""

  def filter(self, record: std_logging.LogRecord) -> bool:
    return record.levelno >= std_logging.WARNING or not any(
        p in record.pathname for p in _NOISY)


def main(argv) -> None:
  del argv
  logging.get_absl_handler().addFilter(_QuietLibraries())
  sharding.use_cpu_devices(FLAGS.config.get("cpu_devices", 0))
  try:
    distributed.join(FLAGS.distributed, FLAGS.coordinator_address, FLAGS.num_processes,
                     FLAGS.process_id, timeout_s=FLAGS.distributed_timeout)
  except distributed.DistributedError as e:
    print(f"error: {e}", file=sys.stderr)
    sys.exit(1)
  if jax.process_index() != 0:  # Only process 0 logs progress; the others warn and fail.
    logging.set_verbosity(logging.WARNING)
  logging.info("JAX %s, process %d/%d, %d devices", jax.__version__, jax.process_index(),
               jax.process_count(), jax.device_count())
  mode = FLAGS.mode or FLAGS.config.mode
  try:
    distributed.check_same_run(FLAGS.config, {"workdir": FLAGS.workdir, "mode": mode,
                                              "step": FLAGS.step, "split": FLAGS.split})
    if mode == "eval":
      print(evaluate.format_result(evaluate.evaluate_checkpoint(
          FLAGS.config, FLAGS.workdir, FLAGS.step or None, FLAGS.split or None)))
    elif FLAGS.config.model.family == "ngram":  # Count-based: fit and evaluate, no train loop.
      from jaxlm import ngram_run
      ngram_run.train_and_evaluate(FLAGS.config, FLAGS.workdir)
    elif FLAGS.config.finetune.task != "lm":
      finetune.train_task(FLAGS.config, FLAGS.workdir)
    elif FLAGS.config.init_from:
      raise config_lib.ConfigError(
          "config.init_from is set but config.finetune.task='lm': LM training does not start "
          "from another run. Fix: set --config.finetune.task=classify or seq2seq, or unset "
          "init_from.")
    else:
      train.train_and_evaluate(FLAGS.config, FLAGS.workdir)
  except USER_ERRORS as e:
    logging.error("%s", e)
    print(f"error: {e}", file=sys.stderr)
    sys.exit(1)


if __name__ == "__main__":
  app.run(main)
