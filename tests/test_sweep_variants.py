"""Sweep variants (named bundles of overrides) and prerequisite runs (`RunDir`)."""

import csv
import json
import os
import subprocess
import sys

import pytest
from conftest import REPO, cpu_env, tiny_config

from jaxlm.lab import sweep as sw
from jaxlm.lab import sweep_plots, sweep_report


def families_sweep(**kw) -> sw.Sweep:
  return sw.Sweep(
      overrides={"num_train_steps": 50, "model.dropout": 0.1},
      variants={"kn-2gram": {"config": "configs/ngram.py:wikitext2", "ngram.order": 2},
                "lstm": {"config": "configs/lstm.py:wikitext2", "model.dropout": 0.2},
                "gpt": {"config": "configs/gpt.py:wikitext2"}}, **kw)


def test_variants_expand_in_order_with_configs_and_precedence():
  runs = sw.expand(families_sweep(grid={"model.emb_dim": [32, 64]}, seeds=2))
  assert len(runs) == 12
  assert [r.name for r in runs[:4]] == ["kn-2gram,emb_dim=32,seed=0", "kn-2gram,emb_dim=32,seed=1",
                                        "kn-2gram,emb_dim=64,seed=0", "kn-2gram,emb_dim=64,seed=1"]
  assert runs[0].group == "kn-2gram,emb_dim=32" and runs[0].variant == "kn-2gram"
  assert [r.variant for r in runs[::4]] == ["kn-2gram", "lstm", "gpt"]  # Definition order.
  assert runs[0].config == "configs/ngram.py:wikitext2"
  assert runs[0].fixed == {"num_train_steps": 50, "model.dropout": 0.1, "ngram.order": 2}
  assert runs[4].fixed["model.dropout"] == 0.2  # The variant beats Sweep.overrides ...
  cmd = sw.train_command(families_sweep(), runs[5], "/tmp/x/runs/r")
  assert cmd[3] == f"--config={REPO}/configs/lstm.py:wikitext2"
  assert cmd[-3:] == ["--config.model.dropout=0.2", "--config.model.emb_dim=32",
                      "--config.seed=1"]  # ... and the grid point and seed beat both.
  plain = sw.expand(families_sweep())
  assert [r.name for r in plain] == ["kn-2gram,seed=0", "lstm,seed=0", "gpt,seed=0"]
  assert [r.group for r in plain] == ["kn-2gram", "lstm", "gpt"]
  # Without variants nothing changes: the sweep's config and overrides.
  old = sw.expand(sw.Sweep(config="configs/default.py", overrides={"a": 1}, grid={"b": [2]}))
  assert old[0].name == "b=2,seed=0" and old[0].config == "configs/default.py"
  assert old[0].fixed == {"a": 1} and old[0].variant == ""


def test_prerequisites_resolve_to_their_workdirs():
  s = sw.Sweep(config="configs/sst2_finetune.py", overrides={"data.path": "t.tsv"},
               prerequisites={"pre": {"config": "configs/sst2_finetune.py:pretrain"},
                              "pre2": {"init_from": sw.RunDir("pre")}},
               variants={"ft": {"init_from": sw.RunDir("pre2")},
                         "scratch": {"data.tokenizer_path": sw.RunDir("pre")}}, seeds=2)
  pre = sw.expand_prerequisites(s)
  assert [(p.name, p.config, p.fixed, p.prerequisite) for p in pre] == [
      ("pre", "configs/sst2_finetune.py:pretrain", {}, True),  # Sweep.overrides do not apply.
      ("pre2", "configs/sst2_finetune.py", {"init_from": sw.RunDir("pre")}, True)]
  runs = sw.expand(s)
  assert [r.name for r in runs] == ["ft,seed=0", "ft,seed=1", "scratch,seed=0", "scratch,seed=1"]
  assert runs[0].needs == ["pre2"] and runs[2].needs == ["pre"] and pre[1].needs == ["pre"]
  cmd = sw.train_command(s, runs[0], "out/runs/ft,seed=0")
  assert f"--config.init_from={os.path.abspath('out/runs/pre2')}" in cmd
  shown = sw.display_command(s, runs[2], "/tmp/e/scratch")
  assert "--config.data.tokenizer_path=/tmp/e/pre" in shown and "--config=configs/sst2" in shown


@pytest.mark.parametrize("kw, match", [
    ({"config": "c.py", "variants": {"a=b": {}}}, "no '=' or ','"),
    ({"variants": {"a": {"x": 1}}}, "has no 'config'"),
    ({"config": "c.py", "variants": {"a": {"lr": 1}}, "grid": {"lr": [1, 2]}}, "swept keys"),
    ({"config": "c.py", "overrides": {"init_from": sw.RunDir("nope")}}, "names no prerequisite"),
    ({"config": "c.py", "prerequisites": {"a": {"init_from": sw.RunDir("b")}, "b": {}}},
     "only use earlier"),
    ({"config": "c.py", "variants": {"a": {}}, "prerequisites": {"a": {}}}, "both a variant"),
    ({}, "Sweep.config is empty"),
])
def test_bad_variants_and_prerequisites_fail_clearly(kw, match):
  with pytest.raises(ValueError, match=match):
    sw.Sweep(**kw)


def test_failed_prerequisite_blocks_its_dependents_only(tmp_path, monkeypatch):
  s = sw.Sweep(config="configs/default.py",
               prerequisites={"pre": {}, "after": {"init_from": sw.RunDir("pre")}},
               variants={"uses": {"data.tokenizer_path": sw.RunDir("after")}, "alone": {}})
  calls = []

  def fake_run_one(self, spec, stop_after=0):
    calls.append(spec.name)
    return "failed" if spec.name == "pre" else "done"

  monkeypatch.setattr(sw.Runner, "run_one", fake_run_one)
  statuses = sw.run_sweep(s, str(tmp_path), log=lambda m: None)
  assert calls == ["pre", "alone,seed=0"]
  assert statuses == {"pre": "failed", "after": "blocked", "uses,seed=0": "blocked",
                      "alone,seed=0": "done"}


def test_metric_plots_keep_variants_apart():
  s = sw.Sweep(variants={"a": {"config": "c.py"}, "b": {"config": "c.py"}},
               grid={"model.emb_dim": [32, 64]})
  groups = [{"group": r.group, "variant": r.variant, "overrides": r.overrides, "status": "done",
             "final:eval_loss": (r.overrides["model.emb_dim"] / 10 + (r.variant == "b"), 0.0)}
            for r in sw.expand(s)]
  assert sweep_plots.metric_series(s, groups, "model.emb_dim") == {
      "variant=a": [(32, 3.2, 0.0), (64, 6.4, 0.0)], "variant=b": [(32, 4.2, 0.0), (64, 7.4, 0.0)]}
  assert sweep_plots.metric_series(s, groups, "variant") == {
      "emb_dim=32": [("a", 3.2, 0.0), ("b", 4.2, 0.0)],
      "emb_dim=64": [("a", 6.4, 0.0), ("b", 7.4, 0.0)]}


def test_report_columns_are_configurable():
  s = sw.Sweep(config="c.py", metric="eval_accuracy", goal="max", columns=("eval_macro_f1",))
  assert sweep_report.value_columns(s) == ["final:eval_accuracy", "best:eval_accuracy",
                                           "final:eval_macro_f1", "wall_s", "tokens_per_sec"]


def test_params_read_from_every_family_log(tmp_path):
  log = tmp_path / "sweep.log"
  for line, n in [("Parameters: 2,076,160 total, 396,800 non-embedding;", 2076160),
                  ("Parameters: 1,234 total (stored n-gram entries, orders 1-2: [9, 1225])", 1234),
                  ("Task classify: 67349 train examples; 298,882 params; tokenizer word", 298882)]:
    log.write_text(f"noise\n{line}\n")
    assert sweep_report._params_from_log(str(log)) == n


SWEEP_PY = """
from jaxlm.lab.sweep import RunDir, Sweep

def get_sweep():
  return Sweep(overrides={overrides!r},
               prerequisites={{"pre": {{"config": "configs/default.py:smoke", **{overrides!r}}}}},
               variants={{"kn": {{"config": "configs/ngram.py:smoke", "ngram.order": 2}},
                          "lm": {{"config": "configs/default.py:smoke",
                                  "data.tokenizer_path": RunDir("pre")}}}},
               metric="eval_ppl")
"""


def test_variants_and_prerequisite_sweep_end_to_end(tmp_path, text_file, data_dir):
  """A prerequisite LM, an n-gram and an LM reusing the prerequisite's tokenizer, via the CLI."""
  from jaxlm.data import sources
  sources.get_builder(tiny_config(text_file, data_dir).data)  # Prepare once, not per run.
  exp = tmp_path / "exp"
  exp.mkdir()
  overrides = {"data.path": text_file, "data.data_dir": data_dir, "data.doc_unit": "paragraph",
               "num_train_steps": 4, "eval_every_steps": 2, "checkpoint_every_steps": 4,
               "log_every_steps": 2, "eval_steps": 2, "sample.num_tokens": 0}
  (exp / "sweep.py").write_text(SWEEP_PY.format(overrides=overrides))
  env = cpu_env(1)
  p = subprocess.run([sys.executable, "-m", "jaxlm.lab.sweep", str(exp)], cwd=REPO, env=env,
                     capture_output=True, text=True, timeout=600)
  assert p.returncode == 0, p.stdout + p.stderr
  assert "3 runs (1 prerequisite)" in p.stdout
  order = [line.split()[1] for line in p.stdout.splitlines() if line.startswith("[run]")]
  assert order == ["pre", "kn,seed=0", "lm,seed=0"]
  runs = exp / "results" / "runs"
  with open(runs / "lm,seed=0" / "config.json") as f:
    assert json.load(f)["data.tokenizer_path"] == str(runs / "pre")  # RunDir resolved.
  with open(exp / "results" / "results.csv") as f:
    rows = {r["variant"]: r for r in csv.DictReader(f)}
  assert set(rows) == {"kn", "lm"} and all(r["status"] == "done" for r in rows.values())
  assert rows["kn"]["steps"] == "0" and int(rows["kn"]["params"]) > 0  # n-gram entries.
  assert float(rows["kn"]["final:eval_ppl_mean"]) > 1 and float(rows["lm"]["wall_s_mean"]) > 0
  with open(exp / "results" / "prerequisites.csv") as f:
    pre = list(csv.DictReader(f))
  assert [r["run"] for r in pre] == ["pre"] and pre[0]["status"] == "done"
  assert float(pre[0]["wall_s"]) > 0 and pre[0]["steps"] == "4"
  md = (exp / "results" / "results.md").read_text()
  assert "| # | variant | seeds |" in md and "| prerequisite |" in md and "| pre |" in md
  assert "- Variant `kn`: `configs/ngram.py:smoke` + `ngram.order=2`" in md
  for png in ("curves.png", "curves_prerequisites.png", "eval_ppl_vs_variant.png",
              "eval_ppl_vs_params.png"):  # curves.png: the LM's curve + the n-gram's level.
    assert (exp / "results" / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", png
