"""experiments/reproductions/table.py: the table comes from the result files."""

import importlib.util
import json
import os

from conftest import REPO


def _table_module():
  path = os.path.join(REPO, "experiments", "reproductions", "table.py")
  spec = importlib.util.spec_from_file_location("repro_table", path)
  mod = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(mod)
  return mod


def test_table_rows_come_from_result_files(tmp_path):
  result = {"task": "ptb_x", "command": "python -m jaxlm.main --config=configs/ptb.py:kn5",
            "returncode": 0, "wall_s": 12.34,
            "machine": {"cpu": "CPU-Z", "cores": 2, "loadavg_before": [3.5, 0, 0]},
            "reference": {"paper": "Paper 2011", "metric": "eval_ppl", "number": 141.2,
                          "note": "n"},
            "metrics": [{"step": 5, "eval_ppl": 200.0, "eval_tokens": 10},
                        {"step": 9, "eval_ppl": 151.25, "eval_tokens": 73760}]}
  (tmp_path / "ptb_x.json").write_text(json.dumps(result))
  t = _table_module().table(str(tmp_path), sst2_dir=str(tmp_path / "none"))
  line = t.splitlines()[-1]
  assert "| ptb_x | Paper 2011: 141.2 | 151.2 (73,760 tokens, step 9) |" in line
  assert "12 s (exit 0)" in line and "CPU-Z, 2 cores, load 3.5" in line
  result["metrics"] = []
  (tmp_path / "ptb_x.json").write_text(json.dumps(result))
  assert "no evaluation" in _table_module().table(str(tmp_path), str(tmp_path / "none"))


def test_a_follow_up_eval_gives_the_number(tmp_path):
  """A task ending in an eval-mode command (Multi30k: BLEU on test_2016_flickr) is scored from
  that command's eval file, not from the training metrics; a failed eval says so."""
  result = {"task": "m30k", "command": "a && b", "returncode": 0, "wall_s": 99.0,
            "machine": {"cpu": "C", "cores": 2, "loadavg_before": [0.5, 0, 0]},
            "reference": {"paper": "P", "metric": "bleu", "number": 35.0, "note": "n"},
            "metrics": [{"step": 300, "eval_bleu": 11.0}],
            "eval": {"bleu": 21.26, "chrf": 50.04, "generated": 1000, "split": "validation",
                     "step": 300}}
  (tmp_path / "m30k.json").write_text(json.dumps(result))
  line = _table_module().table(str(tmp_path), str(tmp_path / "none")).splitlines()[-1]
  assert "| P: 35.0 | 21.3 (1,000 sentences, step 300; chrF 50.0) |" in line
  result["eval"] = None
  (tmp_path / "m30k.json").write_text(json.dumps(result))
  assert "no evaluation" in _table_module().table(str(tmp_path), str(tmp_path / "none"))


def test_sst2_row_comes_from_the_sweep_files(tmp_path):
  (tmp_path / "runs.csv").write_text(
      "run,variant,seed,final:eval_accuracy,wall_s,status\n"
      "a,lstm_pretrained,0,0.84,100,done\na,lstm_pretrained,1,0.82,120,done\n"
      "b,lstm_scratch,0,0.80,90,done\nc,bow,0,0.81,30,done\nd,bow,1,0.99,30,failed\n")
  (tmp_path / "prerequisites.csv").write_text("run,wall_s,status\npretrain_lstm,600,done\n")
  row = _table_module().sst2_row(str(tmp_path))
  assert ("lstm_pretrained 0.830 (2 seeds); lstm_scratch 0.800 (1 seeds); bow 0.810 (1 seeds)"
          in row)
  assert "| 710 s (pretraining + one fine-tuning run) |" in row
  (tmp_path / "prerequisites.csv").unlink()  # Without the pretraining's file: no row.
  assert _table_module().sst2_row(str(tmp_path)) is None
