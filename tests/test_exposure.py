"""Canary exposure: a toy model whose ranking of every secret is known; the skew-normal
extrapolation; the CLI on a trained workdir with canaries."""

import json
import math
import os
import subprocess
import sys

import numpy as np
import pytest
from conftest import REPO, run_cli

from jaxlm import exposure, scoring
from jaxlm.data import augment
from jaxlm.data import tokenizers as tok_lib

DIGITS = [str(i) for i in range(10)]
TOK = tok_lib.WordTokenizer(["the", "random", "number", "is", *DIGITS])
FMT = "the random number is {}"


def _toy_fn(ids_BL, tgt_BL):
  """log p(digit d) = -d (other tokens 0): a secret's log-perplexity is its digit sum."""
  lp = np.zeros(tgt_BL.shape)
  for d in range(10):
    lp[tgt_BL == TOK.encode(str(d))[0]] = -float(d)
  return lp


def test_exposure_on_a_toy_model_with_known_rank():
  scorer = scoring.Scorer("causal", TOK, 16, _toy_fn, batch_size=256)
  canaries = [{"text": FMT.format("0 0 1"), "secret": "0 0 1", "count": 1},
              {"text": FMT.format("9 9 9"), "secret": "9 9 9", "count": 1},
              {"text": FMT.format("0 0 0"), "secret": "0 0 0", "count": 1}]
  out = exposure.measure(scorer, canaries, FMT, 3, candidates=1000)
  assert out["exhaustive"] and out["candidates"] == 1000
  r001, r999, r000 = out["canaries"]
  # '0 0 1' has digit sum 1: only '0 0 0' (sum 0) is more likely, so rank 2 of 1000.
  assert r001["rank"] == 2 and r001["exposure"] == pytest.approx(math.log2(1000) - 1)
  assert r000["rank"] == 1 and r000["exposure"] == pytest.approx(math.log2(1000))
  # '9 9 9' is the least likely: all 999 other secrets beat it.
  assert r999["rank"] == 1000 and r999["exposure"] == pytest.approx(0.0)
  assert r001["log_perplexity"] == pytest.approx(1.0)


def test_skewnorm_extrapolation_tracks_the_true_rank():
  # Digit sums of 6 digits: the exact share of secrets more likely than sum 5 is known.
  scorer = scoring.Scorer("causal", TOK, 16, _toy_fn, batch_size=512)
  canary = [{"text": FMT.format("0 0 0 0 1 4"), "secret": "0 0 0 0 1 4", "count": 1}]
  out = exposure.measure(scorer, canary, FMT, 6, candidates=4000, seed=1)
  r = out["canaries"][0]
  assert not out["exhaustive"] and r["method"] == "skewnorm fit"
  sums = np.array([sum(map(int, f"{i:06d}")) for i in range(10 ** 6)])
  true = math.log2(10 ** 6) - math.log2(1 + int(np.sum(sums < 5)))  # 251 secrets sum < 5.
  assert abs(r["exposure"] - true) < 2.5, (r["exposure"], true)
  assert r["exposure_sampled"] <= math.log2(4001) + 1e-9


def test_cli_on_a_trained_workdir_with_canaries(tmp_path, text_file, data_dir):
  wd = tmp_path / "w"
  args = ["--config=configs/gpt.py:smoke", f"--workdir={wd}", f"--config.data.path={text_file}",
          f"--config.data.data_dir={data_dir}", "--config.data.doc_unit=paragraph",
          "--config.data.tokenizer=word", "--config.sample.num_tokens=0",
          "--config.data.canaries.counts=(1,8)", "--config.data.canaries.digits=4",
          "--config.num_train_steps=4", "--config.eval_every_steps=4"]
  p = run_cli(args)
  assert p.returncode == 0, p.stderr[-3000:]
  assert json.load(open(wd / augment.CANARIES_FILE))["canaries"][1]["count"] == 8
  p = subprocess.run([sys.executable, "-m", "jaxlm.exposure", f"--workdir={wd}",
                      "--candidates=300"], cwd=REPO, capture_output=True, text=True, timeout=300)
  assert p.returncode == 0, p.stderr[-3000:]
  out = json.load(open(wd / "exposure_4.json"))
  assert [r["count"] for r in out["canaries"]] == [1, 8] and out["candidates"] == 300
  assert all(0 <= r["exposure"] <= math.log2(10 ** 4) + 1e-9 for r in out["canaries"])
  assert "exposure" in p.stdout


def test_workdir_without_canaries_is_named(tmp_path, text_file, data_dir):
  from inference_helpers import random_workdir
  wd = random_workdir(str(tmp_path / "w"), text_file, data_dir)
  with pytest.raises(scoring.ScoringError, match="without canaries.*Fix"):
    exposure.run(wd)
  assert not os.path.exists(os.path.join(wd, "exposure_0.json"))
