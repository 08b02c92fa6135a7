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
