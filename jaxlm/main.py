"""Command line: `python -m jaxlm.main --config=configs/default.py --workdir=DIR`.

Parses flags, starts `jax.distributed` when asked, logs the devices, and hands
the config and workdir to `modes.run_mode`. All logic lives in importable modules.
"""

import sys

import jax
from absl import app, flags, logging
from ml_collections import config_flags

from jaxlm import config as config_lib
from jaxlm import distributed, modes, sharding
from jaxlm.errors import USER_ERRORS

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


def main(argv) -> None:
  del argv
  modes.quiet_libraries()
  try:
    config_lib.validate_fields(FLAGS.config)  # Before JAX starts (cpu_devices) or any work.
    sharding.use_cpu_devices(FLAGS.config.cpu_devices)
    distributed.join(FLAGS.distributed, FLAGS.coordinator_address, FLAGS.num_processes,
                     FLAGS.process_id, timeout_s=FLAGS.distributed_timeout)
    if jax.process_index() != 0:  # Only process 0 logs progress; the others warn and fail.
      logging.set_verbosity(logging.WARNING)
    logging.info("JAX %s, process %d/%d, %d devices", jax.__version__, jax.process_index(),
                 jax.process_count(), jax.device_count())
    distributed.check_same_run(FLAGS.config, {"workdir": FLAGS.workdir, "step": FLAGS.step,
                                              "mode": FLAGS.mode or FLAGS.config.mode,
                                              "split": FLAGS.split})
    modes.run_mode(FLAGS.config, FLAGS.workdir, FLAGS.mode, FLAGS.step or None,
                   FLAGS.split or None)
  except USER_ERRORS as e:
    logging.error("%s", e)
    print(f"error: {e}", file=sys.stderr)
    sys.exit(1)


if __name__ == "__main__":
  app.run(main)
