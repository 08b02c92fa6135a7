"""Every family from `python -m jaxlm.main --config=configs/<family>.py:smoke`: trains, its loss
falls, it checkpoints and resumes (bert and lstm exactly: masks and the carried LSTM state
replay after a SIGKILL). gpt is covered by tests/test_cli.py."""

import json
import os
import signal

import pytest
from conftest import metric_by_step, run_cli


def _args(family, workdir, text_file, data_dir, *extra):
  return [f"--config=configs/{family}.py:smoke", f"--workdir={workdir}",
          f"--config.data.path={text_file}", f"--config.data.data_dir={data_dir}",
          "--config.data.doc_unit=paragraph", "--config.log_every_steps=1",
          "--config.sample.num_tokens=0", *extra]


@pytest.mark.parametrize("family", ["bert", "lstm"])
def test_neural_family_trains_and_resumes_exactly(tmp_path, text_file, data_dir, family):
  full, killed = tmp_path / "full", tmp_path / "killed"
  extra = ["--config.model.dropout=0.1"]
  p = run_cli(_args(family, full, text_file, data_dir, *extra))
  assert p.returncode == 0, p.stderr[-3000:]
  losses = metric_by_step(full, "train_loss")
  assert sorted(losses) == list(range(1, 21))
  first, last = sum(losses[s] for s in (1, 2, 3)), sum(losses[s] for s in (18, 19, 20))
  assert last < first - 0.3, losses  # The loss falls.
  evals = metric_by_step(full, "eval_loss")
  assert evals[20] < evals[10]
  if family == "bert":
    assert 0.0 < metric_by_step(full, "eval_mlm_accuracy")[20] <= 1.0
  p = run_cli(_args(family, killed, text_file, data_dir, *extra),
              env={"JAXLM_FAULTS": "sigkill_after_checkpoint@10"})
  assert p.returncode == -signal.SIGKILL
  p = run_cli(_args(family, killed, text_file, data_dir, *extra))
  assert p.returncode == 0, p.stderr[-3000:]
  assert "Resumed from step 10" in p.stderr
  for key in ("train_loss", "eval_loss"):
    assert metric_by_step(killed, key) == metric_by_step(full, key)  # Bitwise equal after resume.


def test_ngram_fits_evaluates_and_reuses_saved_model(tmp_path, text_file, data_dir):
  wd = tmp_path / "ngram"
  p = run_cli(_args("ngram", wd, text_file, data_dir))
  assert p.returncode == 0, p.stderr[-3000:]
  assert os.path.exists(wd / "ngram.npz") and os.path.exists(wd / "tokenizer.json")
  rows = metric_by_step(wd, "eval_ppl")
  ppl = rows[0]
  # The synthetic corpus is 60 words in random order: far below the byte-level uniform 261.
  assert 1.0 < ppl < 20.0
  assert "Resumed" not in p.stderr
  first_bpb = metric_by_step(wd, "eval_bpb")[0]
  mtime = os.path.getmtime(wd / "ngram.npz")
  p = run_cli(_args("ngram", wd, text_file, data_dir))
  assert p.returncode == 0, p.stderr[-3000:]
  assert "Resumed: loaded the fitted" in p.stderr
  assert os.path.getmtime(wd / "ngram.npz") == mtime
  bpb = []
  with open(wd / "metrics.jsonl") as f:
    bpb = [json.loads(line)["eval_bpb"] for line in f]
  # The rerun re-evaluates and replaces its step-0 row (no duplicate rows after a resume).
  assert bpb == [first_bpb]  # Same model, same numbers.
  # A different order is refused in that workdir, with the fix named.
  p = run_cli(_args("ngram", wd, text_file, data_dir, "--config.ngram.order=4"))
  assert p.returncode == 1 and "fresh --workdir" in p.stderr
