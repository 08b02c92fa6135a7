"""A trainer and a reader on one workdir at once (issue 17 item 4): the trainer saves a
checkpoint every step while `python -m jaxlm.generate` processes start on the same workdir;
no save of the trainer is lost and every reader loads an intact step.

The deterministic check that readers never delete an in-flight `N.orbax-checkpoint-tmp` is
tests/test_workdir.py::test_readers_never_delete_or_move_and_only_the_trainer_cleans; this test
shows it end to end with real processes (a reader of the old code deleted the trainer's
in-flight directory whenever its start coincided with a save, failing the trainer's write)."""

import subprocess
import sys
import time

from conftest import REPO, cpu_env

from jaxlm import workdir as wd_lib

STEPS = 40
OVERRIDES = {"num_train_steps": STEPS, "checkpoint_every_steps": 1, "keep_checkpoints": 3,
             "eval_every_steps": 1000, "eval_steps": 1, "log_every_steps": 10,
             "sample.num_tokens": 0, "cpu_devices": 1, "model.emb_dim": 128,
             "model.mlp_dim": 512, "data.doc_unit": "paragraph"}


def _env():
  return cpu_env(1)


def test_a_reader_starting_while_the_trainer_saves_loses_no_checkpoint(tmp_path, text_file,
                                                                        data_dir):
  wd = tmp_path / "run"
  ckpts = wd / "checkpoints"
  args = [sys.executable, "-m", "jaxlm.main", "--config=configs/default.py:smoke",
          f"--workdir={wd}", f"--config.data.path={text_file}",
          f"--config.data.data_dir={data_dir}",
          *[f"--config.{k}={v}" for k, v in OVERRIDES.items()]]
  trainer = subprocess.Popen(args, cwd=REPO, env=_env(), stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)
  readers, in_flight_at_start = [], []
  try:
    deadline = time.time() + 600
    while trainer.poll() is None and time.time() < deadline and len(readers) < 3:
      steps = wd_lib.list_steps(ckpts)
      tmp = [p.name for p in wd_lib.half_written(ckpts)] if ckpts.is_dir() else []
      if not steps or not tmp:  # Start a reader only while a save is in flight.
        time.sleep(0.05)
        continue
      in_flight_at_start.append(tmp)
      r = subprocess.run([sys.executable, "-m", "jaxlm.generate", f"--workdir={wd}",
                          "--prompt=the ", "--max_new_tokens=2", "--temperature=0"],
                         cwd=REPO, env=_env(), capture_output=True, text=True, timeout=300)
      readers.append(r)
    out, err = trainer.communicate(timeout=600)
  finally:
    if trainer.poll() is None:
      trainer.kill()
  assert readers, "the trainer finished before a reader could start; make it longer"
  assert in_flight_at_start and all(in_flight_at_start)
  for r in readers:
    assert r.returncode == 0, r.stderr[-2000:]
    assert "half-written" not in r.stderr and "Deleting" not in r.stderr
  assert trainer.returncode == 0, err[-3000:]
  assert "failed" not in err.lower()  # Every save of the trainer completed.
  assert wd_lib.list_steps(ckpts) == [STEPS - 2, STEPS - 1, STEPS]  # keep_checkpoints=3.
  assert not wd_lib.half_written(ckpts)
  assert not (wd / wd_lib.LOCK_FILE).exists()
  final = subprocess.run([sys.executable, "-m", "jaxlm.generate", f"--workdir={wd}",
                          f"--step={STEPS}", "--prompt=the ", "--max_new_tokens=2",
                          "--temperature=0"], cwd=REPO, env=_env(), capture_output=True,
                         text=True, timeout=300)
  assert final.returncode == 0, final.stderr[-2000:]  # The last save is intact (fingerprint).
