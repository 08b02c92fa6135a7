"""Eval mode and the training loop's whole-split eval agree, for every family and switch.

Each case trains a tiny model 3 steps with `eval_steps=-1` (the whole validation
split at the last step), then evaluates that checkpoint with eval mode
(`evaluate.evaluate_checkpoint`, what `--mode=eval` and `python -m jaxlm.evaluate`
run) on the same split; the two losses must match to 1e-5 relative. On the code
before issue #21 the `lstm_carry` case failed: eval mode scored every window from
a zero LSTM state while training carried it along contiguous lanes.
"""

import json
import os

import jax
import pytest
from conftest import metric_by_step, tiny_config

from jaxlm import evaluate, ngram_run, train

CASES = {
    "gpt": {},
    "gpt_document_attention": {"data.document_attention": True},
    "gpt_packing_pad": {"data.packing": "pad"},
    "bert": {"model.family": "bert", "model.type_vocab_size": 2},
    "lstm": {"model.family": "lstm"},
    "lstm_carry": {"model.family": "lstm", "model.carry_state": True},
}


def _config(text_file, data_dir, **over):
  return tiny_config(text_file, data_dir, **{
      "data.seq_len": 16, "data.batch_size": 4, "model.num_layers": 1, "model.emb_dim": 16,
      "model.mlp_dim": 32, "num_train_steps": 3, "eval_every_steps": 3, "eval_steps": -1,
      "checkpoint_every_steps": 3, "log_every_steps": 3, "optimizer.warmup_steps": 0,
      "optimizer.learning_rate": 1e-2, **over})


@pytest.mark.parametrize("case", list(CASES))
def test_eval_mode_matches_training_eval(text_file, data_dir, tmp_path, case):
  c = _config(text_file, data_dir, **CASES[case])
  wd = str(tmp_path)
  devices = jax.devices()[:1]
  train.train_and_evaluate(c, wd, devices=devices)
  trained = {k: metric_by_step(wd, f"eval_{k}")[3] for k in ("loss", "tokens", "bpb")}
  out = evaluate.evaluate_checkpoint(c, wd, devices=devices)
  assert out["step"] == 3 and out["tokens"] == trained["tokens"]
  assert out["loss"] == pytest.approx(trained["loss"], rel=1e-5), case
  assert out["bpb"] == pytest.approx(trained["bpb"], rel=1e-5), case
  # The result file says how it evaluated (the state handling is the one training used).
  with open(os.path.join(wd, f"eval_{c.data.eval_split}_3.json")) as f:
    saved = json.load(f)
  assert saved["eval_path"] == "jaxlm.evaluation.evaluate"
  assert saved["state_handling"] == ("carried_lanes" if case == "lstm_carry" else "stateless")


def test_eval_mode_matches_training_eval_ngram(text_file, data_dir, tmp_path):
  c = _config(text_file, data_dir, **{"model.family": "ngram", "ngram.order": 3})
  wd = str(tmp_path)
  ngram_run.train_and_evaluate(c, wd)
  trained = metric_by_step(wd, "eval_loss")[0]
  out = evaluate.evaluate_checkpoint(c, wd)
  assert out["loss"] == pytest.approx(trained, rel=1e-5)
  assert out["eval_path"] == "jaxlm.ngram_run.evaluate"


def test_carried_state_matters_negative_control(text_file, data_dir, tmp_path):
  """The comparison above can fail: the same checkpoint scored without the carried state
  (every window from a zero state) differs from the training eval."""
  from jaxlm import evaluation

  c = _config(text_file, data_dir, **CASES["lstm_carry"])
  wd = str(tmp_path)
  devices = jax.devices()[:1]
  train.train_and_evaluate(c, wd, devices=devices)
  trained = metric_by_step(wd, "eval_loss")[3]
  carried = evaluate.evaluate_checkpoint(c, wd, devices=devices)["loss"]
  ck = evaluate._checkpointer(wd, None)[0]
  params = ck.restore(3, train.Run(c, wd, devices).abstract_state)[0].params
  ck.close()
  stateless = train.Run(_config(text_file, data_dir, **CASES["lstm"]), wd, devices)
  zero_state = evaluation.evaluate(stateless, params)["loss"]
  assert carried == pytest.approx(trained, rel=1e-5)
  assert abs(zero_state - trained) > 1e-4 * trained  # 10x the tolerance above.
