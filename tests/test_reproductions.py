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
  t = _table_module().table(str(tmp_path))
  line = t.splitlines()[-1]
  assert "| ptb_x | Paper 2011: 141.2 | 151.2 (73,760 tokens, step 9) |" in line
  assert "12 s (exit 0)" in line and "CPU-Z, 2 cores, load 3.5" in line
  result["metrics"] = []
  (tmp_path / "ptb_x.json").write_text(json.dumps(result))
  assert "no evaluation" in _table_module().table(str(tmp_path))


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
  line = _table_module().table(str(tmp_path)).splitlines()[-1]
  assert "| P: 35.0 | 21.3 (1,000 sentences, step 300; chrF 50.0) |" in line
  result["eval"] = None
  (tmp_path / "m30k.json").write_text(json.dumps(result))
  assert "no evaluation" in _table_module().table(str(tmp_path))
