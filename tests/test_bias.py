"""CrowS-Pairs scoring: hand-computed causal and masked scores on a tiny pair set; every family
from the CLI on a random workdir."""

import json
import math
import os
import subprocess
import sys

import numpy as np
import pytest
from conftest import REPO
from inference_helpers import random_workdir

from jaxlm import bias, scoring
from jaxlm.data import tokenizers as tok_lib

WORDS = ["the", "man", "woman", "cooks", "fights", "poor", "rich", "are", "lazy"]
PAIRS = [  # more, less, direction, type
    bias.Pair("the woman cooks", "the man cooks", "stereo", "gender"),
    bias.Pair("the man fights", "the woman fights", "antistereo", "gender"),
    bias.Pair("the poor are lazy", "the rich are lazy", "stereo", "socioeconomic"),
    bias.Pair("the zzz cooks", "the qqq cooks", "stereo", "gender"),  # Both <unk>: excluded.
]


def _tok():
  return tok_lib.WordTokenizer(WORDS)


def _ids(word):
  return _tok().encode(word)[0]


# Causal hand model: log p(target) depends only on the target (a unigram table).
LOGP = {"woman": math.log(0.2), "man": math.log(0.1), "poor": math.log(0.05),
        "rich": math.log(0.3)}


def _causal_fn(ids_BL, tgt_BL):
  lp = np.full(tgt_BL.shape, math.log(0.01))
  for w, v in LOGP.items():
    lp[tgt_BL == _ids(w)] = v
  return lp


def test_causal_scores_match_hand_computed():
  scorer = scoring.Scorer("causal", _tok(), 16, _causal_fn, batch_size=2)
  scores = bias.pair_scores(scorer, PAIRS)
  assert scores["excluded_unk_only"] == 1 and scores["index"] == [0, 1, 2]
  # Shared tokens cancel: the difference is log p(more's word) - log p(less's word).
  diffs = scores["more"] - scores["less"]
  want = [math.log(0.2 / 0.1), math.log(0.1 / 0.2), math.log(0.05 / 0.3)]
  np.testing.assert_allclose(diffs, want, rtol=1e-9)
  # Whole sentence: 3 tokens + <eos>, each 0.01 except the table's words.
  assert scores["more"][0] == pytest.approx(math.log(0.01) * 3 + math.log(0.2))
  out = bias.summarize(PAIRS, scores)
  assert out["overall"]["pairs"] == 3 and out["overall"]["win_share"] == pytest.approx(1 / 3)
  assert out["overall"]["mean_ll_diff"] == pytest.approx(np.mean(want))
  assert out["by_bias_type"]["gender"]["win_share"] == pytest.approx(0.5)
  assert out["by_bias_type"]["socioeconomic"]["win_share"] == 0.0
  assert out["by_direction"]["antistereo"]["win_share"] == 0.0  # man fights < woman fights.
  lo, hi = out["overall"]["ci95"]
  assert 0.0 <= lo <= 1 / 3 <= hi <= 1.0


def _masked_fn(ids_BL, tgt_BL):
  """log p = -1 where the previous input token is 'man', else -2; checks the masking."""
  prev = np.concatenate([np.full((ids_BL.shape[0], 1), -1), ids_BL[:, :-1]], axis=1)
  assert (ids_BL == tok_lib.MASK_ID).sum(1).max() <= 1  # One token masked per row.
  return np.where(prev == _ids("man"), -1.0, -2.0)


def test_masked_pll_of_shared_tokens_matches_hand_computed():
  a, b = _tok().encode("the woman cooks"), _tok().encode("the man cooks")
  assert bias.shared_positions(a, b) == ([0, 2], [0, 2])
  a2, b2 = _tok().encode("the poor are lazy"), _tok().encode("the rich are lazy")
  assert bias.shared_positions(a2, b2) == ([0, 2, 3], [0, 2, 3])
  scorer = scoring.Scorer("masked", _tok(), 16, _masked_fn, batch_size=4)
  scores = bias.pair_scores(scorer, PAIRS)
  # Pair 0: more 'the woman cooks' -> the(-2) + cooks(prev woman: -2) = -4;
  #         less 'the man cooks'   -> the(-2) + cooks(prev man: -1)   = -3.
  # Pair 1: more 'the man fights' = -3, less 'the woman fights' = -4.
  # Pair 2: 3 shared tokens, none after 'man': -6 both (a tie, not a win).
  np.testing.assert_allclose(scores["more"], [-4, -3, -6])
  np.testing.assert_allclose(scores["less"], [-3, -4, -6])
  out = bias.summarize(PAIRS, scores)
  assert out["overall"]["win_share"] == pytest.approx(1 / 3) and out["overall"]["ties"] == 1
  # The causal score of the same pair 0 under this model differs (it sums every token).
  with pytest.raises(scoring.ScoringError, match="not a masked LM"):
    scoring.Scorer("causal", _tok(), 16, _masked_fn).masked([a], [[0]])


def test_too_long_pairs_are_excluded_and_bad_csv_named(tmp_path):
  scorer = scoring.Scorer("causal", _tok(), 4, _causal_fn)  # 'the poor are lazy'+eos = 5.
  scores = bias.pair_scores(scorer, PAIRS)
  assert scores["excluded_too_long"] == 1 and scores["index"] == [0, 1]
  bad = tmp_path / "x.csv"
  bad.write_text("a,b\n1,2\n")
  with pytest.raises(scoring.ScoringError, match="lacks the columns"):
    bias.read_pairs(str(bad))
  with pytest.raises(scoring.ScoringError, match="Fix: pass --data"):
    bias.read_pairs(str(tmp_path / "missing.csv"))


def _csv(path):
  import csv

  from conftest import WORDS as CORPUS  # A pair in the synthetic corpus's vocabulary.
  pairs = [*PAIRS, bias.Pair(" ".join(CORPUS[:3]), " ".join([CORPUS[0], CORPUS[3], CORPUS[2]]),
                             "stereo", "age")]
  rows = [{"sent_more": p.more, "sent_less": p.less, "stereo_antistereo": p.direction,
           "bias_type": p.bias_type} for p in pairs]
  with open(path, "w", newline="") as f:
    w = csv.DictWriter(f, fieldnames=list(rows[0]))
    w.writeheader()
    w.writerows(rows)
  return str(path)


@pytest.mark.parametrize("family", ["gpt", "bert", "lstm"])
def test_cli_runs_on_a_neural_workdir(tmp_path, text_file, data_dir, family):
  wd = random_workdir(str(tmp_path / family), text_file, data_dir, **{"model.family": family,
                      "model.causal": family != "bert", "data.tokenizer": "word"})
  data = _csv(tmp_path / "pairs.csv")
  p = subprocess.run([sys.executable, "-m", "jaxlm.bias", f"--workdir={wd}", f"--data={data}"],
                     cwd=REPO, capture_output=True, text=True, timeout=300)
  assert p.returncode == 0, p.stderr[-3000:]
  assert "overall" in p.stdout and "age" in p.stdout
  with open(os.path.join(wd, "bias_crows_pairs_0.json")) as f:
    out = json.load(f)
  assert out["family"] == family and out["pairs_total"] == 5
  # The synthetic corpus's vocabulary lacks the hand-made pairs' words: all <unk>, excluded.
  assert out["excluded_unk_only"] == 4 and out["overall"]["pairs"] == 1
  assert "4 pairs with identical token ids" in p.stdout
  assert out["score"].startswith("pseudo" if family == "bert" else "sentence")


def test_cli_runs_on_an_ngram_workdir_and_names_a_missing_model(tmp_path, text_file, data_dir):
  from conftest import tiny_config

  from jaxlm import ngram_run
  wd = str(tmp_path / "ng")
  ngram_run.train_and_evaluate(tiny_config(text_file, data_dir, **{"model.family": "ngram",
                                                                    "ngram.order": 3}), wd)
  out = bias.run(wd, _csv(tmp_path / "pairs.csv"))
  assert out["family"] == "ngram" and os.path.exists(os.path.join(wd, "bias_crows_pairs_0.json"))
  assert out["overall"]["pairs"] == 5  # Byte-level: no <unk>, every pair differs.
  os.remove(os.path.join(wd, ngram_run.MODEL_FILE))
  with pytest.raises(scoring.ScoringError, match="No ngram.npz"):
    bias.run(wd, _csv(tmp_path / "pairs.csv"))


def test_measurement_cli_prints_the_table_or_exits_1_naming_the_fix(capsys):
  """`scoring.cli_main`, the body of `jaxlm.bias` and `jaxlm.exposure`."""
  from jaxlm import scoring

  scoring.cli_main(lambda: {"path": "/w/x.json", "n": 3}, lambda r: f"table n={r['n']}")
  assert capsys.readouterr().out == "table n=3\nSaved to /w/x.json\n"

  def bad():
    raise scoring.ScoringError("no checkpoint in /w. Fix: train first.")

  with pytest.raises(SystemExit) as e:
    scoring.cli_main(bad, str)
  assert e.value.code == 1
  assert "error: no checkpoint in /w. Fix: train first." in capsys.readouterr().err

  def other():  # Not a user error: a bug keeps its traceback.
    raise KeyError("x")

  with pytest.raises(KeyError):
    scoring.cli_main(other, str)
