"""Eval mode and classification fine-tuning for the bert, lstm and ngram families."""

import jax
import pytest
from conftest import tiny_config
from test_finetune import _labeled, classify_config

from jaxlm import evaluate, finetune, ngram_run, train
from jaxlm.config import ConfigError

FAMILY = {"bert": {"model.family": "bert", "model.causal": False, "model.type_vocab_size": 2},
          "lstm": {"model.family": "lstm", "model.carry_state": True}}


@pytest.mark.parametrize("family", ["bert", "lstm"])
def test_pretrain_eval_mode_then_classify(family, tmp_path, text_file, data_dir):
  c = tiny_config(text_file, data_dir, num_train_steps=2, checkpoint_every_steps=2,
                  eval_every_steps=2, **FAMILY[family])
  pre = str(tmp_path / "pre")
  one = jax.devices()[:1]  # Sharded fine-tuning: tests/test_finetune.py.
  trained = train.train_and_evaluate(c, pre, one)
  res = evaluate.evaluate_checkpoint(c, pre, devices=one)
  assert res["family"] == family and res["step"] == 2 and res["tokens"] > 0
  if family == "bert":
    assert "mlm_accuracy" in res
  else:  # The whole split, not only the eval_steps=2 batches of the training eval.
    assert res["tokens"] > trained["eval_tokens"]
  labeled = (_labeled(tmp_path / "train.tsv", 40, 0), _labeled(tmp_path / "dev.tsv", 13, 1))
  fc = classify_config(labeled, data_dir, pre, num_train_steps=2, eval_every_steps=2,
                       checkpoint_every_steps=2, **FAMILY[family])
  out = finetune.train_task(fc, str(tmp_path / "ft"), one)
  assert out["eval_num_examples"] == 13
  run = finetune.TaskRun(fc, str(tmp_path / "ft"), restore_backbone=False)
  assert run.pooling == ("first" if family == "bert" else "last")
  best = evaluate.evaluate_checkpoint(fc, str(tmp_path / "ft"), step="best")
  assert sum(map(sum, best["confusion_matrix"])) == 13


def test_ngram_eval_mode_and_no_finetuning(tmp_path, text_file, data_dir):
  c = tiny_config(text_file, data_dir, **{"model.family": "ngram", "ngram.order": 3})
  fitted = ngram_run.train_and_evaluate(c, str(tmp_path))
  res = evaluate.evaluate_checkpoint(c, str(tmp_path))
  assert res["family"] == "ngram" and res["loss"] == pytest.approx(fitted["eval_loss"])
  assert (tmp_path / "eval_validation_0.json").is_file()
  c.finetune.task = "classify"
  with pytest.raises(ConfigError, match="ngram"):
    finetune.validate_task(c)
