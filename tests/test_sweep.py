"""The sweep runner: deterministic expansion, and a two-run sweep end to end from the CLI."""

import csv
import json
import math
import os
import struct
import subprocess
import sys

import pytest
from conftest import REPO, cpu_env, tiny_config

from jaxlm.lab import sweep as sw


def png_size(path) -> tuple[int, int]:
  with open(path, "rb") as f:
    head = f.read(24)
  assert head[:8] == b"\x89PNG\r\n\x1a\n", f"{path} is not a PNG"
  return struct.unpack(">II", head[16:24])


def test_grid_expands_in_order_with_seeds_and_readable_names():
  s = sw.Sweep(config="configs/default.py:smoke",
               grid={"model.position": ["rope", "alibi"], "model.num_kv_heads": [1, 2]}, seeds=2)
  runs = sw.expand(s)
  assert len(runs) == 8
  assert runs[0].name == "position=rope,num_kv_heads=1,seed=0"
  assert runs[1].name == "position=rope,num_kv_heads=1,seed=1"
  assert runs[0].group == runs[1].group == "position=rope,num_kv_heads=1"
  assert [r.overrides["model.position"] for r in runs[::2]] == ["rope", "rope", "alibi", "alibi"]
  assert len({r.name for r in runs}) == 8


def test_random_search_is_deterministic_by_seed_and_in_range():
  def make(seed):
    return sw.Sweep(config="configs/default.py", num_samples=6, search_seed=seed, random={
        "optimizer.learning_rate": sw.LogUniform(1e-4, 1e-2),
        "optimizer.warmup_steps": sw.LogUniform(10, 300, integer=True),
        "model.position": sw.Choice(["rope", "alibi"])})
  a, b, c = sw.expand(make(0)), sw.expand(make(0)), sw.expand(make(1))
  assert a == b
  assert [r.overrides for r in a] != [r.overrides for r in c]
  for r in a:
    lr, wu = r.overrides["optimizer.learning_rate"], r.overrides["optimizer.warmup_steps"]
    assert 1e-4 <= lr <= 1e-2 and lr == float(f"{lr:.3g}")  # Names show the exact value.
    assert isinstance(wu, int) and 10 <= wu <= 300
    assert f"learning_rate={lr:.3g}" in r.name
  grid_random = sw.Sweep(config="c.py", grid={"seed_like": [1, 2]}, num_samples=3,
                         random={"x": sw.Uniform(0, 1)})
  assert len(sw.expand(grid_random)) == 6  # Every draw is combined with every grid point.


def test_bad_definitions_and_device_groups_and_rungs():
  with pytest.raises(ValueError, match="both in grid and random"):
    sw.Sweep(config="c.py", grid={"a": [1]}, random={"a": sw.Choice([1])}, num_samples=1)
  with pytest.raises(ValueError, match="num_samples"):
    sw.Sweep(config="c.py", random={"a": sw.Choice([1])})
  with pytest.raises(ValueError, match="non-empty list"):
    sw.Sweep(config="c.py", grid={"a": "rope"})
  with pytest.raises(ValueError, match="0 < low"):
    sw.LogUniform(0.0, 1.0)
  assert sw.device_groups(["0", "1", "2", "3"], 2) == [["0", "1"], ["2", "3"]]
  assert sw.device_groups([], 3) == [[], [], []]
  with pytest.raises(ValueError, match="only 1 devices"):
    sw.device_groups(["0"], 2)
  assert sw.Halving(min_steps=20, eta=3).rungs(300) == [20, 60, 180, 300]


SWEEP_PY = """
from jaxlm.lab.sweep import Sweep

def get_sweep():
  return Sweep(config="configs/default.py:smoke", overrides={overrides!r},
               grid={{"model.position": ["rope", "alibi"]}}, metric="eval_loss",
               extra_eval_seq_lens=(16,))
"""


def test_two_run_sweep_end_to_end_report_and_restart(tmp_path, text_file, data_dir):
  from jaxlm.data import sources
  sources.get_builder(tiny_config(text_file, data_dir).data)  # Prepare once, not in 2 runs.
  exp = tmp_path / "exp"
  exp.mkdir()
  overrides = {"data.path": text_file, "data.data_dir": data_dir, "data.doc_unit": "paragraph",
               "num_train_steps": 6, "eval_every_steps": 3, "checkpoint_every_steps": 3,
               "log_every_steps": 3, "eval_steps": 2, "sample.num_tokens": 0}
  (exp / "sweep.py").write_text(SWEEP_PY.format(overrides=overrides))
  (exp / "README.md").write_text("# Q\n<!-- sweep-results -->\nold\n<!-- /sweep-results -->\nend\n")
  cmd = [sys.executable, "-m", "jaxlm.lab.sweep", str(exp), "--parallel=2"]
  env = cpu_env(1)
  p = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
  assert p.returncode == 0, p.stdout + p.stderr
  assert p.stdout.count("[run]") == 2 and p.stdout.count("[done]") == 2
  out = exp / "results"
  names = ["position=rope,seed=0", "position=alibi,seed=0"]
  for n in names:
    assert sorted(os.listdir(out / "runs" / n / "checkpoints")) == ["3", "6"]
    # The extra length is scored on the whole validation split, not eval_steps=2 batches
    # (2 x 8 x 16 = 256 tokens): its column compares with any other length's.
    extra = json.load(open(out / "runs" / n / "eval_len16.json"))
    assert extra["seq_len"] == 16 and extra["eval_tokens"] > 2 * 8 * 16, extra

  md = (out / "results.md").read_text()
  assert "| rope |" in md and "| alibi |" in md and "Best: **position=" in md
  assert "eval_loss@16" in md
  with open(out / "results.csv") as f:
    rows = list(csv.DictReader(f))
  assert {r["model.position"] for r in rows} == {"rope", "alibi"}
  losses = [float(r["final:eval_loss_mean"]) for r in rows]
  assert losses == sorted(losses) and all(0 < x < 10 for x in losses)  # Ranked, real values.
  assert all(r["steps"] == "6" and r["status"] == "done" for r in rows)
  assert all(float(r["wall_s_mean"]) > 0 and float(r["tokens_per_sec_mean"]) > 0 for r in rows)
  assert png_size(out / "curves.png") == (700, 450)
  assert png_size(out / "curves_logx.png") == (700, 450)
  assert png_size(out / "eval_loss_vs_position.png") == (650, 450)
  readme = (exp / "README.md").read_text()
  assert "old" not in readme and "| rope |" in readme and "](results/curves.png)" in readme
  assert readme.endswith("end\n")

  # Restarted: finished runs are skipped, nothing retrains, the report is rebuilt.
  os.remove(out / "results.md")
  p = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
  assert p.returncode == 0, p.stdout + p.stderr
  assert p.stdout.count("[skip]") == 2 and "[run]" not in p.stdout
  assert (out / "results.md").exists()
  assert len((out / "runs" / names[0] / "sweep_attempts.jsonl").read_text().splitlines()) == 1


def test_successive_halving_promotes_the_best_third(tmp_path, monkeypatch):
  """Fake trainer: eval_loss = |log10(lr) + 2.5|, so the draws closest to lr=10^-2.5 win."""
  s = sw.Sweep(config="configs/default.py", overrides={"num_train_steps": 90}, num_samples=9,
               random={"optimizer.learning_rate": sw.LogUniform(1e-4, 1e-1)},
               halving=sw.Halving(min_steps=10, eta=3))
  calls = []

  def fake_run_one(self, spec, stop_after=0):
    calls.append((spec.name, stop_after))
    wd = self.workdir(spec)
    os.makedirs(wd, exist_ok=True)
    end = stop_after or 90
    loss = abs(math.log10(spec.overrides["optimizer.learning_rate"]) + 2.5)
    with open(os.path.join(wd, "metrics.jsonl"), "a") as f:
      f.write(json.dumps({"step": end, "eval_loss": loss}) + "\n")
    return "paused" if stop_after else "done"

  monkeypatch.setattr(sw.Runner, "run_one", fake_run_one)
  statuses = sw.run_sweep(s, str(tmp_path), log=lambda m: None)
  specs = sw.expand(s)
  best = sorted(specs, key=lambda r: abs(math.log10(r.overrides["optimizer.learning_rate"]) + 2.5))
  assert [n for n, _ in calls[:9]] == [r.name for r in specs]  # Everyone to the first rung.
  assert {n for n, st in calls if st == 30} == {r.name for r in best[:3]}
  assert {n for n, st in calls if st == 0} == {best[0].name}  # Rungs 10, 30, 90.
  assert statuses[best[0].name] == "done"
  assert sum(st.startswith("stopped@") for st in statuses.values()) == 8
