"""End to end through `python -m jaxlm.main`: metrics, checkpoints, exact resume, bad input."""

import json
import os
import signal

import pytest
from conftest import run_cli

SMOKE = "configs/default.py:smoke"


def _args(workdir, text_file, data_dir, *extra):
  return [f"--config={SMOKE}", f"--workdir={workdir}", f"--config.data.path={text_file}",
          f"--config.data.data_dir={data_dir}", "--config.data.doc_unit=paragraph",
          "--config.log_every_steps=1", *extra]


def _rows(workdir):
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    return [json.loads(line) for line in f]


def _last_by_step(rows, key):
  out = {}
  for r in rows:
    if key in r:
      out[r["step"]] = r[key]
  return out


DROPOUT = ["--config.model.dropout=0.1"]  # Randomness must replay on resume too.


@pytest.fixture(scope="module")
def full_run(tmp_path_factory, text_file, data_dir):
  """One uninterrupted 20-step CLI run, shared by the tests below: (workdir, stderr)."""
  wd = tmp_path_factory.mktemp("cli") / "full"
  p = run_cli(_args(wd, text_file, data_dir, *DROPOUT))
  assert p.returncode == 0, p.stderr[-3000:]
  return wd, p.stderr


def test_cli_trains_writes_metrics_checkpoints_and_sample(full_run):
  wd, stderr = full_run
  rows = _rows(wd)
  keys = set().union(*rows)
  for k in ("step", "train_loss", "eval_loss", "eval_ppl", "eval_bpb", "tokens_per_sec", "mfu",
            "lr"):
    assert k in keys, k
  losses = _last_by_step(rows, "train_loss")
  assert sorted(losses) == list(range(1, 21))
  assert sorted(os.listdir(wd / "checkpoints")) == ["10", "20"]
  assert os.listdir(wd / "tensorboard")
  assert "Sample:" in stderr and "Parameters:" in stderr


def test_exact_resume_after_sigkill(tmp_path, text_file, data_dir, full_run):
  """A run killed after its step-10 checkpoint and restarted equals an uninterrupted run."""
  full, killed = full_run[0], tmp_path / "killed"
  p = run_cli(_args(killed, text_file, data_dir, *DROPOUT),
              env={"JAXLM_FAULTS": "sigkill_after_checkpoint@10"})
  assert p.returncode == -signal.SIGKILL
  assert max(_last_by_step(_rows(killed), "train_loss")) == 10
  p = run_cli(_args(killed, text_file, data_dir, *DROPOUT))
  assert p.returncode == 0, p.stderr[-3000:]
  assert "Resumed from step 10" in p.stderr
  a, b = _rows(full), _rows(killed)
  for key in ("train_loss", "eval_loss"):
    assert _last_by_step(a, key) == _last_by_step(b, key)  # Bitwise equal floats.
  assert len(_last_by_step(a, "train_loss")) == 20


def test_nan_loss_stops_with_step_and_keeps_checkpoint(tmp_path, text_file, data_dir):
  wd = tmp_path / "nan"
  p = run_cli(_args(wd, text_file, data_dir, *DROPOUT), env={"JAXLM_FAULTS": "nan_params@13"})
  assert p.returncode == 1
  assert "at step 14" in p.stderr and "train_loss is nan" in p.stderr
  assert sorted(os.listdir(wd / "checkpoints")) == ["10"]
  # The last good checkpoint still resumes.
  p = run_cli(_args(wd, text_file, data_dir, *DROPOUT))
  assert p.returncode == 0 and "Resumed from step 10" in p.stderr


@pytest.mark.parametrize("extra,devices,message", [
    (["--config.model.no_such_field=1"], 1, "no_such_field"),
    (["--config.data.batch_size=3"], 2, "config.data.batch_size"),
    (["--config.mesh.shape=(4,1,1)"], 2, "config.mesh.shape"),
    (["--config.data.seq_len=64", "--config.model.max_len=32"], 1, "config.data.seq_len"),
])
def test_bad_config_fails_before_training(tmp_path, text_file, data_dir, extra, devices, message):
  p = run_cli(_args(tmp_path / "bad", text_file, data_dir, *extra), devices=devices)
  assert p.returncode != 0
  assert message in p.stderr
  assert not os.path.exists(tmp_path / "bad" / "checkpoints")


@pytest.mark.parametrize("content", [None, ""])
def test_missing_or_empty_data_file(tmp_path, data_dir, content):
  path = tmp_path / "data.txt"
  if content is not None:
    path.write_text(content)
  p = run_cli(_args(tmp_path / "w", str(path), data_dir))
  assert p.returncode == 1
  assert "config.data.path" in p.stderr and "Fix:" in p.stderr
