"""Pretrain -> fine-tune vs. from scratch on SST-2 (the seed's claim), through the runner.

  python -m jaxlm.lab.sweep experiments/pretrain_finetune

The prerequisite `pretrain` trains the LM on the SST-2 training sentences (labels unused);
`pretrained` fine-tunes the classifier from it (`init_from`), `scratch` trains the same
classifier from random weights with the pretraining run's tokenizer (same vocabulary), and
`bow` is the bag-of-words baseline (`configs/sst2_finetune.py:bow`: mean of the word
embeddings -> linear) on that vocabulary.
"""

import os

from jaxlm.lab.sweep import RunDir, Sweep

# GLUE SST-2: $JAXLM_SHARED_DATA/sst2 (default ../shared/data, from the repository root).
SST2 = os.path.join(os.environ.get("JAXLM_SHARED_DATA", "../shared/data"), "sst2")
TRAIN, DEV = os.path.join(SST2, "train.tsv"), os.path.join(SST2, "dev.tsv")


def get_sweep():
  return Sweep(
      config="configs/sst2_finetune.py",
      overrides={"data.path": TRAIN, "data.eval_path": DEV},
      prerequisites={"pretrain": {"config": "configs/sst2_finetune.py:pretrain",
                                  "data.path": TRAIN}},
      variants={"pretrained": {"init_from": RunDir("pretrain")},
                "scratch": {"data.tokenizer_path": RunDir("pretrain")},
                "bow": {"config": "configs/sst2_finetune.py:bow",
                        "data.tokenizer_path": RunDir("pretrain")}},
      seeds=3,
      metric="eval_accuracy",
      goal="max",
      columns=("eval_macro_f1", "eval_loss"),
      description="SST-2 dev accuracy of one GPT classifier, fine-tuned from an LM pretrained "
                  "on the task's sentences vs. trained from scratch, and of a bag-of-words "
                  "baseline.",
  )
