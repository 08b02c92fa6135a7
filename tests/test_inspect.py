"""A tiny trained workdir: pausing with stop_after_steps, evaluation at 2x length, inspect."""

import json
import os
import shutil

import jax
import numpy as np
import pytest
from conftest import tiny_config
from test_sweep import png_size

from jaxlm import optim, restore, train
from jaxlm.config import ConfigError
from jaxlm.lab import inspect, plots


@pytest.fixture(scope="module")
def workdir(tmp_path_factory, text_file, data_dir):
  """Trained 10 steps in two parts: paused at step 5 (as halving does), then resumed."""
  wd = str(tmp_path_factory.mktemp("inspect") / "run")
  cfg = tiny_config(text_file, data_dir, **{"model.position": "rope", "stop_after_steps": 5})
  train.train_and_evaluate(cfg, wd, jax.devices()[:1])
  rows = plots.read_metrics_jsonl(os.path.join(wd, "metrics.jsonl"))
  assert max(r["step"] for r in rows) == 5
  assert any("eval_loss" in r and r["step"] == 5 for r in rows)  # Evaluated where it paused.
  with cfg.unlocked():
    cfg.stop_after_steps = 0
  train.train_and_evaluate(cfg, wd, jax.devices()[:1])
  return wd


def test_paused_run_keeps_its_schedule_and_resumes(workdir, text_file, data_dir):
  rows = plots.read_metrics_jsonl(os.path.join(workdir, "metrics.jsonl"))
  lrs = {r["step"]: r["lr"] for r in rows if "lr" in r}
  assert sorted(lrs) == list(range(1, 11))
  cfg = tiny_config(text_file, data_dir)
  _, schedule = optim.make_optimizer(cfg.optimizer, cfg.num_train_steps)
  # The lr logged at step s is the schedule's value at s-1 of the full 10-step run.
  np.testing.assert_allclose([lrs[s] for s in range(1, 11)],
                             [float(schedule(s - 1)) for s in range(1, 11)], rtol=1e-6)


def test_evaluate_at_twice_the_length(workdir, tmp_path):
  ev = restore.evaluate_at(workdir, 64, max_batches=2)
  assert ev["step"] == 10 and ev["seq_len"] == 64
  assert 0 < ev["eval_loss"] < 10 and ev["eval_tokens"] > 2 * 8 * 32  # Longer windows.
  # A learned position table cannot go beyond its trained length: refused with the reason.
  learned = tmp_path / "learned"
  learned.mkdir()
  cfg = json.load(open(os.path.join(workdir, "config.json")))
  cfg["model.position"] = "learned"
  (learned / "config.json").write_text(json.dumps(cfg))
  shutil.copy(os.path.join(workdir, "tokenizer.json"), learned / "tokenizer.json")
  with pytest.raises(ConfigError, match="position table"):
    restore.evaluate_at(str(learned), 64)


def test_inspect_writes_attention_loss_neighbours_and_pca(workdir, tmp_path):
  out = tmp_path / "inspect"
  rc = inspect.main([f"--workdir={workdir}", "--text=the model learns to predict", "--token=e",
                     f"--out={out}", "--top=30"])
  assert rc == 0
  summary = json.loads((out / "inspect.json").read_text())
  n = len("the model learns to predict")
  assert summary["num_layers"] == 2 and len(summary["tokens"]) == n
  assert summary["token_losses"][0] is None and all(x > 0 for x in summary["token_losses"][1:])
  assert summary["frequency_source"].startswith("training split")
  for i in range(2):  # 2 heads side by side, panels sized by the sequence length.
    w, h = plots.attention_figsize(2, n, n)
    assert png_size(out / f"attention_layer{i}.png") == (round(w * 100), round(h * 100))
  assert png_size(out / "embeddings_pca.png") == (700, 700)
  tw, th = png_size(out / "token_loss.png")
  assert tw >= 400 and th >= 100
  neighbours = (out / "neighbours.md").read_text()
  assert "Nearest neighbours of `e`" in neighbours and neighbours.count("\n| `") == 10
  assert inspect.main([f"--workdir={workdir}", "--text=x", f"--out={out}"]) == 1  # 1 token.
  assert inspect.main([f"--workdir={workdir}", "--text=ab", "--token=ab", f"--out={out}"]) == 1


def test_nearest_neighbours_by_cosine():
  table = np.zeros((10, 3), np.float32)
  table[7] = [1, 0, 0]
  table[8] = [2, 0.1, 0]  # Same direction as 7, larger norm: cosine ignores the norm.
  table[9] = [0, 1, 0]
  table[0] = [1, 0, 0]  # Special tokens are never neighbours.
  assert [i for i, _ in inspect.nearest_neighbours(table, 7, 2)] == [8, 9]
