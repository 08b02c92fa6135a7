"""SST-2: an LSTM classifier fine-tuned from an LSTM LM vs. from scratch, and bag of words.

  python -m jaxlm.lab.sweep experiments/pretrain_finetune

The prerequisite `pretrain_lstm` trains the LSTM LM on the SST-2 training sentences (labels
unused, `configs/sst2_finetune.py:pretrain,lstm`); `lstm_pretrained` fine-tunes the LSTM
classifier from it (`init_from`), `lstm_scratch` trains the same classifier from random
weights with the pretraining run's tokenizer (same vocabulary), and `bow` is the
bag-of-words baseline (`configs/sst2_finetune.py:bow`: mean of the word embeddings ->
linear) on that vocabulary.
"""

import os

from jaxlm.lab.sweep import RunDir, Sweep

# GLUE SST-2: $JAXLM_SHARED_DATA/sst2 (default ../shared/data, from the repository root).
SST2 = os.path.join(os.environ.get("JAXLM_SHARED_DATA", "../shared/data"), "sst2")
TRAIN, DEV = os.path.join(SST2, "train.tsv"), os.path.join(SST2, "dev.tsv")
LSTM = "configs/sst2_finetune.py:lstm"


def get_sweep():
  return Sweep(
      config=LSTM,
      overrides={"data.path": TRAIN, "data.eval_path": DEV},
      prerequisites={"pretrain_lstm": {"config": "configs/sst2_finetune.py:pretrain,lstm",
                                       "data.path": TRAIN}},
      variants={"lstm_pretrained": {"init_from": RunDir("pretrain_lstm")},
                "lstm_scratch": {"data.tokenizer_path": RunDir("pretrain_lstm")},
                "bow": {"config": "configs/sst2_finetune.py:bow",
                        "data.tokenizer_path": RunDir("pretrain_lstm")}},
      seeds=3,
      metric="eval_accuracy",
      goal="max",
      columns=("eval_macro_f1", "eval_loss"),
      description="SST-2 dev accuracy of an LSTM classifier fine-tuned from an LSTM LM "
                  "pretrained on the task's sentences vs. trained from scratch, and of a "
                  "bag-of-words baseline.",
  )
