"""SIGKILL mid-checkpoint-write and mid-step, then SIGTERM, through `python -m jaxlm.main`:
each restart resumes from the last complete checkpoint and the losses of the whole chain equal
an uninterrupted run's, bit for bit."""

import importlib.util
import os
import signal

import jax
from conftest import REPO, metric_by_step, run_cli

from jaxlm import train

OVERRIDES = {"num_train_steps": 12, "checkpoint_every_steps": 4, "eval_every_steps": 4,
             "eval_steps": 1, "log_every_steps": 1, "sample.num_tokens": 0,
             "model.dropout": 0.1, "data.doc_unit": "paragraph"}  # Dropout: rng must replay.


def _smoke_config(text_file, data_dir):
  spec = importlib.util.spec_from_file_location("default_cfg", f"{REPO}/configs/default.py")
  mod = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(mod)
  c = mod.get_config("smoke")
  for k, v in {**OVERRIDES, "data.path": text_file, "data.data_dir": data_dir}.items():
    node = c
    *parents, leaf = k.split(".")
    for p in parents:
      node = node[p]
    node[leaf] = v
  return c


def _args(workdir, text_file, data_dir):
  return ["--config=configs/default.py:smoke", f"--workdir={workdir}",
          f"--config.data.path={text_file}", f"--config.data.data_dir={data_dir}",
          *[f"--config.{k}={v}" for k, v in OVERRIDES.items()]]


def _ckpts(workdir):
  return sorted(os.listdir(os.path.join(workdir, "checkpoints")))


def test_kill_kill_preempt_resume_equals_uninterrupted(tmp_path, text_file, data_dir):
  ref, wd = tmp_path / "ref", tmp_path / "chain"
  train.train_and_evaluate(_smoke_config(text_file, data_dir), str(ref),
                           devices=jax.devices()[:1])

  # 1. Killed while checkpoint 8 is being written: only its tmp directory exists.
  p = run_cli(_args(wd, text_file, data_dir), env={"JAXLM_FAULTS": "sigkill_during_checkpoint@8"})
  assert p.returncode == -signal.SIGKILL, p.stderr[-3000:]
  assert _ckpts(wd) == ["4", "8.orbax-checkpoint-tmp"]

  # 2. Resumes from 4 (the half-written 8 is deleted, never restored); killed mid-step 10.
  p = run_cli(_args(wd, text_file, data_dir), env={"JAXLM_FAULTS": "sigkill_at_step@10"})
  assert p.returncode == -signal.SIGKILL, p.stderr[-3000:]
  assert "Resumed from step 4" in p.stderr and "half-written" in p.stderr
  complete = max(int(c) for c in _ckpts(wd) if c.isdigit())  # 8, unless its async write was
  assert complete in (4, 8)  # still in flight at the kill (then 4 again).

  # 3. Resumes from there; SIGTERM after step 11: checkpoint 11 is written, exit status 0.
  p = run_cli(_args(wd, text_file, data_dir), env={"JAXLM_FAULTS": "sigterm_at_step@11"})
  assert p.returncode == 0, p.stderr[-3000:]
  assert f"Resumed from step {complete}" in p.stderr
  assert "Stopped by SIGTERM at step 11" in p.stderr
  assert _ckpts(wd) == ["11", "4", "8"]
  assert max(metric_by_step(wd, "train_loss")) == 11

  # 4. Resumes from exactly 11 and finishes.
  p = run_cli(_args(wd, text_file, data_dir))
  assert p.returncode == 0, p.stderr[-3000:]
  assert "Resumed from step 11" in p.stderr

  for key in ("train_loss", "eval_loss"):
    want, got = metric_by_step(ref, key), metric_by_step(wd, key)
    assert sorted(want) == sorted(got) and len(want) >= 3
    assert got == want  # Bitwise-equal floats at every step.
