"""configs/ptb.py: every variant trains from the CLI on a small PTB-like corpus (smoke)."""

import importlib.util
import json
import math
import os

import jax
import pytest
from conftest import REPO, run_cli
from test_lanes import _expected_count, _word_corpus

from jaxlm import config as config_lib
from jaxlm import train
from jaxlm.data import lanes


def _recipe():
  spec = importlib.util.spec_from_file_location("ptb", os.path.join(REPO, "configs", "ptb.py"))
  mod = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(mod)
  return mod


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
  d = tmp_path_factory.mktemp("ptb_smoke")
  return _word_corpus(d / "train.txt", 300, 0), _word_corpus(d / "valid.txt", 40, 1)


def test_zaremba_settings():
  ptb = _recipe()
  s, m, lg = (ptb.get_config(v) for v in ("lstm_small", "lstm_medium", "lstm_large"))
  assert [c.model.lstm_hidden_dim for c in (s, m, lg)] == [200, 650, 1500]
  assert [c.data.seq_len for c in (s, m, lg)] == [20, 35, 35]
  assert [c.model.init_scale for c in (s, m, lg)] == [0.1, 0.05, 0.04]
  assert [c.model.dropout for c in (s, m, lg)] == [0.0, 0.5, 0.65]
  # lr 1 / clip 5, 5, 10 on ptb_word_lm.py's time-summed cost = lr T / clip C/T here.
  assert [c.optimizer.learning_rate * 1 for c in (s, m, lg)] == [20, 35, 35]
  assert [round(c.optimizer.grad_clip * c.data.seq_len, 9) for c in (s, m, lg)] == [5, 5, 10]
  assert [c.optimizer.steps_per_epoch for c in (s, m, lg)] == [2323, 1327, 1327]
  assert [c.num_train_steps // c.optimizer.steps_per_epoch for c in (s, m, lg)] == [13, 39, 55]
  assert [c.optimizer.decay_start_epoch for c in (s, m, lg)] == [4, 6, 14]
  assert all(not c.model.tie_embeddings and c.optimizer.name == "sgd" for c in (s, m, lg))
  for c in (s, m, lg):
    config_lib.validate(c, 1)


def test_fast_variant_is_lstm_small_with_a_shorter_decay():
  ptb = _recipe()
  s, f = ptb.get_config("lstm_small"), ptb.get_config("lstm_small_fast")
  assert f.model == s.model and f.data == s.data
  for k in ("name", "schedule", "learning_rate", "grad_clip", "steps_per_epoch",
            "decay_start_epoch"):
    assert f.optimizer[k] == s.optimizer[k], k
  assert (f.optimizer.decay_factor, s.optimizer.decay_factor) == (0.4, 0.5)
  assert f.num_train_steps == ptb.FAST_EPOCHS * 2323 < s.num_train_steps
  config_lib.validate(f, 1)


def test_recipe_epoch_equals_the_lane_iterators_on_real_ptb(data_dir):
  ptb = _recipe()
  c = ptb.get_config("lstm_small")
  if not os.path.exists(c.data.path):
    pytest.skip(f"{c.data.path} not found (set JAXLM_SHARED_DATA)")
  assert _expected_count(c.data.path) == ptb.PTB_TRAIN_TOKENS
  c.data.data_dir = data_dir
  run = train.Run(c, None, devices=jax.devices()[:1])
  assert run.tokenizer.vocab_size == 10_000 + 5  # PTB's 10k (incl. <unk>) + 5 other specials.
  it = iter(lanes.lane_dataset(c.data, run.tokenizer, 0))
  assert it.windows_per_epoch == c.optimizer.steps_per_epoch == 2323


@pytest.mark.parametrize("variant", ["kn5", "lstm_small", "lstm_small_fast", "lstm_medium",
                                     "lstm_large", "gpt_small"])
def test_variant_smoke_from_cli(variant, corpus, data_dir, tmp_path):
  train_path, valid_path = corpus
  wd = str(tmp_path / "wd")
  r = run_cli([f"--config=configs/ptb.py:{variant},smoke", f"--workdir={wd}",
               f"--config.data.path={train_path}", f"--config.data.eval_path={valid_path}",
               f"--config.data.data_dir={data_dir}", "--config.eval_steps=-1",
               "--config.sample.num_tokens=0"])
  assert r.returncode == 0, r.stderr[-3000:]
  rows = [json.loads(x) for x in open(os.path.join(wd, "metrics.jsonl"))]
  ev = [x for x in rows if "eval_loss" in x][-1]
  want = _expected_count(valid_path)
  if variant == "kn5":  # Sentences (doc_unit=line): blank lines are no sentence (PTB has none).
    want -= sum(1 for line in open(valid_path) if not line.strip())
  if variant != "gpt_small":  # gpt's packed eval: every token but the first + a closing <eos>.
    assert ev["eval_tokens"] == want
  assert math.isfinite(ev["eval_loss"])
  if variant in ("kn5", "lstm_small"):  # These learn within a smoke run.
    assert ev["eval_loss"] < math.log(7 + 11)  # Better than uniform over the corpus' words.
